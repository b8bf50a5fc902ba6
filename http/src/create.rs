//! `GET /create`: validate, authorize, reserve, hand off, answer.

use crate::metrics::CreateMetrics;
use actix_web::http::StatusCode;
use actix_web::http::header::{ACCESS_CONTROL_ALLOW_ORIGIN, ALLOW, AUTHORIZATION, HeaderValue, ORIGIN, REFERER, VARY};
use actix_web::{HttpRequest, HttpResponse, web};
use polysocket_common::cli::CreateArgs;
use polysocket_common::fleet::{Fleet, FleetError};
use polysocket_common::jsonp::{self, MAX_QUERY_BYTES};
use polysocket_common::limits::{ClientArgs, KeyedLimit, address_key, insert_retry_after, retry_after_secs};
use polysocket_common::logging::socket_tag;
use polysocket_common::target::{Target, TargetError, origin_of};
use polysocket_common::token::Refusal;
use polysocket_common::wire::{Created, EstablishReply, EstablishRequest, Failure, OpenFailure, Secret};
use prometheus::Registry;
use serde::Deserialize;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

/// Longest `from` (client name and version) accepted.
const MAX_FROM_LEN: usize = 64;
/// Most subprotocols a client may offer; real protocols offer a handful.
const MAX_PROTOCOLS: usize = 16;
/// Longest bearer credential forwarded upstream; JWTs with many claims fit.
const MAX_BEARER_LEN: usize = 4096;

/// How long a daemon that left a create unanswered, or said it was full,
/// stays out of selection.
const SUSPECT_PERIOD: Duration = Duration::from_secs(10);

/// What `/create` needs to do its work, shared by all workers.
pub struct CreateService {
    fleet: Arc<dyn Fleet>,
    settings: CreateArgs,
    clients: ClientArgs,
    metrics: CreateMetrics,
    per_ip: KeyedLimit<IpAddr>,
    per_token: KeyedLimit<String>,
}

impl CreateService {
    pub fn new(fleet: Arc<dyn Fleet>, settings: CreateArgs, clients: ClientArgs, registry: &Registry) -> Self {
        CreateService {
            per_ip: KeyedLimit::per_second(settings.create_rate_per_ip),
            per_token: KeyedLimit::per_second(settings.create_rate_per_token),
            fleet,
            settings,
            clients,
            metrics: CreateMetrics::new(registry),
        }
    }

    /// Forgets the rate-limit state of quiet clients and tokens; call it
    /// now and then so that state stays proportional to active callers.
    pub fn forget_idle(&self) {
        self.per_ip.forget_idle();
        self.per_token.forget_idle();
    }
}

/// Mounts `/create` on an app, for the router and for standalone polysocketd.
pub fn configure(service: Arc<CreateService>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(web::Data::from(service))
            .route("/create", web::get().to(create))
            .route("/create", web::post().to(create_posted))
            .route("/create", web::route().to(other_method));
    }
}

/// Any other method: `405` naming the two that work, as `/s` and `/j`
/// answer, rather than a bare `404` that suggests a wrong path.
async fn other_method() -> HttpResponse {
    const ALLOWED: &str = "GET, POST";
    HttpResponse::MethodNotAllowed()
        .insert_header((ALLOW, ALLOWED))
        .json(Failure::new(format!("method not allowed: use {ALLOWED}")))
}

#[derive(Debug, Default, Deserialize)]
struct CreateQuery {
    cb: Option<String>,
    from: Option<String>,
    target: Option<String>,
    token: Option<String>,
    protocols: Option<String>,
    /// A credential for the upstream handshake; never logged nor echoed.
    bearer: Option<String>,
}

/// Why a create failed. The messages are stable: clients match on them.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("missing {0}")]
    Missing(&'static str),
    #[error("invalid from: must be 1-64 characters")]
    InvalidFrom,
    #[error("invalid protocols: comma-separated tokens, at most 16")]
    InvalidProtocols,
    #[error("invalid bearer: {0}")]
    InvalidBearer(&'static str),
    #[error("bearer not allowed: this token does not forward credentials")]
    BearerNotAllowed,
    #[error(transparent)]
    InvalidTarget(#[from] TargetError),
    #[error("rate limited: retry in {}s", retry_after_secs(*.0))]
    RateLimited(Duration),
    #[error("unknown token")]
    UnknownToken,
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("{0}")]
    Fleet(#[from] FleetError),
    /// The daemon's account of why the upstream did not open, who failed
    /// and, when the upstream answered the handshake, with which status.
    #[error("{error}")]
    Open { kind: OpenFailure, status: Option<u16>, error: String },
}

impl CreateError {
    /// The status a client without a callback sees; JSONP callers always get
    /// 200 because a script tag cannot read anything else.
    pub fn status(&self) -> StatusCode {
        match self {
            CreateError::Missing(_)
            | CreateError::InvalidFrom
            | CreateError::InvalidProtocols
            | CreateError::InvalidBearer(_)
            | CreateError::InvalidTarget(_) => StatusCode::BAD_REQUEST,
            CreateError::UnknownToken | CreateError::Refused(_) | CreateError::BearerNotAllowed => {
                StatusCode::FORBIDDEN
            }
            CreateError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            CreateError::Fleet(FleetError::LimitReached) => StatusCode::TOO_MANY_REQUESTS,
            CreateError::Fleet(FleetError::NoAnswer | FleetError::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            CreateError::Fleet(_) => StatusCode::SERVICE_UNAVAILABLE,
            CreateError::Open { kind, .. } => match kind {
                OpenFailure::Policy => StatusCode::FORBIDDEN,
                OpenFailure::Timeout => StatusCode::GATEWAY_TIMEOUT,
                OpenFailure::DaemonFull => StatusCode::SERVICE_UNAVAILABLE,
                OpenFailure::Unreachable | OpenFailure::Rejected | OpenFailure::Protocol | OpenFailure::Other => {
                    StatusCode::BAD_GATEWAY
                }
            },
        }
    }

    /// Whether the same create may succeed if tried again shortly: the
    /// fleet, not the request or the upstream, was at fault.
    pub fn retryable(&self) -> bool {
        match self {
            CreateError::Fleet(FleetError::LimitReached) => false,
            CreateError::Fleet(_) | CreateError::RateLimited(_) => true,
            CreateError::Open { kind, .. } => *kind == OpenFailure::DaemonFull,
            _ => false,
        }
    }

    /// The `outcome` label of `polysocket_creates_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            CreateError::Missing(_)
            | CreateError::InvalidFrom
            | CreateError::InvalidProtocols
            | CreateError::InvalidBearer(_)
            | CreateError::InvalidTarget(_) => "invalid",
            CreateError::UnknownToken | CreateError::Refused(_) | CreateError::BearerNotAllowed => "refused",
            CreateError::RateLimited(_) => "rate_limited",
            CreateError::Fleet(FleetError::LimitReached) => "limit_reached",
            CreateError::Fleet(FleetError::NoDaemon | FleetError::NoCapacity) => "no_capacity",
            CreateError::Fleet(FleetError::NoAnswer | FleetError::Timeout) => "daemon_timeout",
            CreateError::Fleet(FleetError::Unavailable(_)) => "fleet_unavailable",
            CreateError::Open { kind, .. } => match kind {
                OpenFailure::Policy => "refused",
                OpenFailure::Unreachable => "upstream_unreachable",
                OpenFailure::Rejected => "upstream_rejected",
                OpenFailure::Timeout => "upstream_timeout",
                OpenFailure::DaemonFull => "no_capacity",
                OpenFailure::Protocol | OpenFailure::Other => "upstream_failed",
            },
        }
    }
}

async fn create(req: HttpRequest, service: web::Data<CreateService>) -> HttpResponse {
    answer(&req, &service, req.query_string()).await
}

/// `POST /create`, for curl and servers: the parameters may also come as a
/// form body, which keeps a bearer out of URLs (and so out of proxies' logs).
async fn create_posted(req: HttpRequest, payload: web::Payload, service: web::Data<CreateService>) -> HttpResponse {
    // A body that trickles in must not hold the connection for ever.
    let read = payload.to_bytes_limited(MAX_QUERY_BYTES);
    let body = match tokio::time::timeout(service.settings.create_body_timeout, read).await {
        Err(_) => return jsonp::QueryError::SlowBody.response(),
        Ok(Err(_)) => return jsonp::QueryError::BodyTooBig.response(),
        Ok(Ok(Err(_))) => return jsonp::QueryError::UnreadableBody.response(),
        Ok(Ok(Ok(body))) => body,
    };
    let Ok(form) = std::str::from_utf8(&body) else {
        return jsonp::QueryError::NotUtf8.response();
    };
    let params = match (req.query_string(), form) {
        (query, "") => query.to_owned(),
        ("", form) => form.to_owned(),
        (query, form) => format!("{query}&{form}"),
    };
    let mut response = answer(&req, &service, &params).await;
    // polysocket.js posts creates that carry a bearer from the page, across
    // origins. The page may read the answer: any page can read the same
    // answer as JSONP, and the token's origins decided whether it is a
    // socket or a refusal. No credentials are allowed, so no cookie rides along.
    if let Some(origin) = req.headers().get(ORIGIN) {
        response.headers_mut().insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        response.headers_mut().insert(VARY, HeaderValue::from_static("Origin"));
    }
    response
}

async fn answer(req: &HttpRequest, service: &CreateService, params: &str) -> HttpResponse {
    let (query, callback) = match jsonp::parse_query::<CreateQuery>(params, |q| q.cb.as_deref()) {
        Ok(parsed) => parsed,
        Err(e) => return e.response(),
    };
    let timer = service.metrics.duration.start_timer();
    let outcome = service.create(req, query).await;
    timer.observe_duration();
    let answer = jsonp::Answer::from(callback);
    match outcome {
        Ok(created) => {
            service.metrics.outcome("ok");
            jsonp::reply(StatusCode::OK, &answer, &created)
        }
        Err(e) => {
            log::info!("create refused: {e}");
            service.metrics.outcome(e.outcome());
            let status = if answer == jsonp::Answer::Json { e.status() } else { StatusCode::OK };
            let upstream_status = match e {
                CreateError::Open { status, .. } => status,
                _ => None,
            };
            let failure = Failure { retryable: e.retryable(), upstream_status, ..Failure::new(&e) };
            let mut response = jsonp::reply(status, &answer, &failure);
            if let CreateError::RateLimited(wait) = e {
                insert_retry_after(&mut response, wait);
            }
            response
        }
    }
}

impl CreateService {
    async fn create(&self, req: &HttpRequest, query: CreateQuery) -> Result<Created, CreateError> {
        let from = query.from.ok_or(CreateError::Missing("from"))?;
        if from.is_empty() || from.chars().count() > MAX_FROM_LEN {
            return Err(CreateError::InvalidFrom);
        }
        let target = Target::parse(&query.target.ok_or(CreateError::Missing("target"))?)?;
        let token_name = query.token.ok_or(CreateError::Missing("token"))?;
        let protocols = parse_protocols(query.protocols.as_deref())?;
        let bearer = bearer_of(req, query.bearer)?;
        let origin = page_origin(req);
        let client_ip = self.clients.client_ip_of(req);
        self.per_ip.check(&address_key(client_ip)).map_err(CreateError::RateLimited)?;

        let token = self.fleet.token(&token_name).await?.ok_or(CreateError::UnknownToken)?;
        let rule = token.authorize(origin.as_deref(), &target)?;
        if bearer.is_some() && !token.forward_bearer {
            return Err(CreateError::BearerNotAllowed);
        }
        // Only creates the token admits spend its budget: a stranger who
        // knows the token but not its pages or targets cannot exhaust it.
        self.per_token.check(&token.token).map_err(CreateError::RateLimited)?;
        // The rule's headers go to the targets its pattern admits, no others.
        let mut upstream_headers: Vec<(String, Secret)> =
            rule.upstream_headers().map(|(name, value)| (name.clone(), value.clone())).collect();
        if let Some(bearer) = bearer {
            upstream_headers.push((AUTHORIZATION.to_string(), Secret(format!("Bearer {bearer}"))));
        }
        let allow_private = rule.allow_private().to_vec();
        let client_ip = Some(client_ip.to_string());
        let mut attempt = 1;
        let reply = loop {
            let reservation = match self.fleet.reserve(&token.token, token.max_connections).await {
                Err(FleetError::LimitReached) => {
                    self.metrics.token_usage(&token.metric_label(), token.max_connections, token.max_connections);
                    return Err(FleetError::LimitReached.into());
                }
                reserved => reserved?,
            };
            self.metrics.token_usage(&token.metric_label(), reservation.used, token.max_connections);
            // On the fleet's clock, which the daemon reads them against.
            let now = self.fleet.now_ms();
            let request = EstablishRequest {
                id: uuid::Uuid::new_v4().simple().to_string(),
                reply_to: String::new(),
                accept_by_ms: now + self.settings.accept_timeout.as_millis() as u64,
                expires_at_ms: now + self.settings.create_timeout.as_millis() as u64,
                target: target.as_str().to_owned(),
                origin: origin.clone(),
                protocols: protocols.clone(),
                client_ip: client_ip.clone(),
                token: token.token.clone(),
                allow_private: allow_private.clone(),
                upstream_headers: upstream_headers.clone(),
            };
            match self.fleet.establish(&reservation.daemon_id, request).await {
                Ok(EstablishReply::Failed { kind: OpenFailure::DaemonFull, error, .. })
                    if attempt < self.settings.attempts =>
                {
                    // The daemon gave the reservation back itself.
                    log::warn!("daemon {} refused a create ({error}); trying another", reservation.daemon_id);
                    self.fleet.mark_suspect(&reservation.daemon_id, SUSPECT_PERIOD).await?;
                    self.metrics.moved("daemon_full");
                    attempt += 1;
                }
                Ok(reply) => break reply,
                Err(FleetError::NoAnswer) if attempt < self.settings.attempts => {
                    // The daemon did not take the request: if it takes it
                    // later it drops it (and its reservation) itself; if it
                    // is dead, its registry entry expires with its slots.
                    log::warn!("daemon {} did not answer a create; trying another", reservation.daemon_id);
                    self.fleet.mark_suspect(&reservation.daemon_id, SUSPECT_PERIOD).await?;
                    self.metrics.moved("no_answer");
                    attempt += 1;
                }
                Err(e @ FleetError::Unavailable(_)) => {
                    // The request never reached the daemon, so nobody else
                    // will give the reservation back.
                    if let Err(release) = self.fleet.release(&token.token, &reservation.daemon_id).await {
                        log::warn!("could not release a reservation after a failed hand-off: {release}");
                    }
                    return Err(e.into());
                }
                Err(e) => return Err(e.into()),
            }
        };
        match reply {
            EstablishReply::Open { fqdn, socket, protocol, .. } => {
                log::info!("created socket {} on {fqdn} for {from:?}", socket_tag(&socket));
                Ok(Created { ok: true, fqdn, socket, protocol })
            }
            EstablishReply::Failed { kind, status, error, .. } => Err(CreateError::Open { kind, status, error }),
            EstablishReply::Accepted { .. } => unreachable!("Fleet::establish returns outcomes only"),
        }
    }
}

/// How often quiet callers' rate-limit state is dropped.
const FORGET_IDLE_EVERY: Duration = Duration::from_secs(60);

/// Drops quiet callers' rate-limit state now and then, for as long as the
/// service lives.
pub fn forget_idle_callers(service: &Arc<CreateService>) {
    let service = Arc::downgrade(service);
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(FORGET_IDLE_EVERY);
        loop {
            ticks.tick().await;
            match service.upgrade() {
                Some(service) => service.forget_idle(),
                None => return,
            }
        }
    });
}

/// The page that asked: the `Origin` header, else the origin of `Referer`.
/// An opaque `null` origin (sandboxed frames, file://) counts as none.
fn page_origin(req: &HttpRequest) -> Option<String> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    match header(ORIGIN) {
        Some("null") => None,
        Some(origin) => Some(origin.to_owned()),
        None => header(REFERER).and_then(origin_of),
    }
}

/// The client's bearer credential, from `bearer=` or an `Authorization:
/// Bearer` header (not both), checked against RFC 6750's token syntax so it
/// cannot smuggle anything into the upstream's headers.
fn bearer_of(req: &HttpRequest, param: Option<String>) -> Result<Option<String>, CreateError> {
    let header = match req.headers().get(AUTHORIZATION) {
        None => None,
        Some(value) => {
            let value = value.to_str().map_err(|_| CreateError::InvalidBearer("not ASCII"))?;
            match value.split_once(' ') {
                Some((scheme, credential)) if scheme.eq_ignore_ascii_case("bearer") => {
                    Some(credential.trim().to_owned())
                }
                _ => return Err(CreateError::InvalidBearer("Authorization must use the Bearer scheme")),
            }
        }
    };
    let bearer = match (param, header) {
        (Some(_), Some(_)) => return Err(CreateError::InvalidBearer("given both as bearer= and Authorization")),
        (one, other) => one.or(other),
    };
    let Some(bearer) = bearer else { return Ok(None) };
    let body = bearer.trim_end_matches('=');
    let is_token68 = |c: char| c.is_ascii_alphanumeric() || "-._~+/".contains(c);
    if body.is_empty() || bearer.len() > MAX_BEARER_LEN || !body.chars().all(is_token68) {
        return Err(CreateError::InvalidBearer("must be an RFC 6750 token of at most 4096 characters"));
    }
    Ok(Some(bearer))
}

/// Splits `protocols` into subprotocol names, each an RFC 7230 token.
fn parse_protocols(raw: Option<&str>) -> Result<Vec<String>, CreateError> {
    let Some(raw) = raw.filter(|r| !r.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let is_tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
    let protocols: Vec<String> = raw.split(',').map(|p| p.trim().to_owned()).collect();
    if protocols.len() > MAX_PROTOCOLS || protocols.iter().any(|p| p.is_empty() || !p.chars().all(is_tchar)) {
        return Err(CreateError::InvalidProtocols);
    }
    Ok(protocols)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn protocols_are_tokens() {
        assert_eq!(parse_protocols(None).unwrap(), Vec::<String>::new());
        assert_eq!(parse_protocols(Some("v0.tachyon, v1.tachyon")).unwrap(), ["v0.tachyon", "v1.tachyon"]);
        assert!(parse_protocols(Some("a b")).is_err());
        assert!(parse_protocols(Some("a,,b")).is_err());
        assert!(parse_protocols(Some(&vec!["p"; 17].join(","))).is_err());
    }

    #[test]
    fn origin_prefers_header_then_referer() {
        let req = TestRequest::default()
            .insert_header((ORIGIN, "https://a.test"))
            .insert_header((REFERER, "https://b.test/page"))
            .to_http_request();
        assert_eq!(page_origin(&req).as_deref(), Some("https://a.test"));
        let req = TestRequest::default().insert_header((REFERER, "https://b.test:8443/page?q")).to_http_request();
        assert_eq!(page_origin(&req).as_deref(), Some("https://b.test:8443"));
        let req = TestRequest::default().insert_header((ORIGIN, "null")).to_http_request();
        assert_eq!(page_origin(&req), None);
    }

    #[test]
    fn bearer_comes_from_the_query_or_the_header() {
        let plain = TestRequest::default().to_http_request();
        assert_eq!(bearer_of(&plain, None).unwrap(), None);
        assert_eq!(bearer_of(&plain, Some("eyJ0.eyJ1-_.sig==".into())).unwrap().as_deref(), Some("eyJ0.eyJ1-_.sig=="));
        let header = TestRequest::default().insert_header((AUTHORIZATION, "Bearer abc")).to_http_request();
        assert_eq!(bearer_of(&header, None).unwrap().as_deref(), Some("abc"));
        assert!(matches!(bearer_of(&header, Some("abc".into())), Err(CreateError::InvalidBearer(_))));
        let basic = TestRequest::default().insert_header((AUTHORIZATION, "Basic eA==")).to_http_request();
        assert!(matches!(bearer_of(&basic, None), Err(CreateError::InvalidBearer(_))));
        for smuggled in ["a\r\nX-Evil: 1", "a b", "", "=", &"x".repeat(4097)] {
            assert!(
                matches!(bearer_of(&plain, Some(smuggled.into())), Err(CreateError::InvalidBearer(_))),
                "{smuggled}"
            );
        }
    }

    #[test]
    fn statuses_for_curl_users() {
        assert_eq!(CreateError::Missing("from").status(), StatusCode::BAD_REQUEST);
        assert_eq!(CreateError::UnknownToken.status(), StatusCode::FORBIDDEN);
        assert_eq!(CreateError::Fleet(FleetError::LimitReached).status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(CreateError::Fleet(FleetError::NoDaemon).status(), StatusCode::SERVICE_UNAVAILABLE);
        let open = |kind| CreateError::Open { kind, status: None, error: "x".into() };
        assert_eq!(open(OpenFailure::Rejected).status(), StatusCode::BAD_GATEWAY);
        assert_eq!(open(OpenFailure::Policy).status(), StatusCode::FORBIDDEN);
        assert_eq!(open(OpenFailure::Timeout).status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(open(OpenFailure::DaemonFull).retryable() && !open(OpenFailure::Unreachable).retryable());
        assert!(CreateError::Fleet(FleetError::NoAnswer).retryable());
        assert!(!CreateError::UnknownToken.retryable() && !CreateError::Fleet(FleetError::LimitReached).retryable());
    }
}
