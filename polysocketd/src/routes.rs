//! `/s/<socket>` (send) and `/j/<socket>` (long-poll or streaming receive),
//! with CORS preflights on both.

use crate::answers::AnswerKey;
use crate::cors;
use crate::daemon::Daemon;
use crate::error::RequestError;
use crate::metrics::{Counted, Endpoint};
use crate::socket::{ClientSend, Outgoing, PollOutcome, Rejected, SendFailure};
use crate::stream;
use actix_web::error::ErrorNotFound;
use actix_web::http::Method;
use actix_web::http::StatusCode;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{FromRequest, HttpRequest, HttpResponse, web};
use awc::ws::{CloseCode, CloseReason};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use polysocket_common::wire::{Accepted, Messages};
use polysocket_common::{compression, jsonp};
use serde::Deserialize;
use std::time::{Duration, Instant};

/// A poll's wait when the client gives no `ttl`.
const DEFAULT_TTL: Duration = Duration::from_millis(25_000);

pub fn configure(cfg: &mut web::ServiceConfig) {
    // Scopes match by plain prefix; a `/s/{socket}` pattern would run a regex
    // engine on every request, which was a tenth of the daemon's CPU time.
    // The handlers check the method themselves: actix-web's method guards
    // allocate on every request they look at, to remember the methods.
    cfg.service(web::scope("/s").default_service(web::to(send)))
        .service(web::scope("/j").default_service(web::to(poll)));
}

/// The methods `/s` answers: JSONP sends come as GET, curl and forms POST.
const SEND_METHODS: &str = "GET, POST";
const POLL_METHODS: &str = "GET";

/// The `<socket>` of `/s/<socket>` and `/j/<socket>`: one path segment.
struct SocketId(String);

impl FromRequest for SocketId {
    type Error = actix_web::Error;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let id = req.match_info().unprocessed().strip_prefix('/').filter(|id| !id.is_empty() && !id.contains('/'));
        std::future::ready(id.map(|id| SocketId(id.to_owned())).ok_or_else(|| ErrorNotFound("no such path")))
    }
}

/// Most messages one `/s` request may carry: a batch is bounded by its body
/// or URL too, but empty messages cost a request almost nothing.
pub const MAX_BATCH: usize = 1000;

/// Query (or form) parameters of `/s`. `d` may repeat, and `t` with it: a
/// batch of messages in one request.
#[derive(Debug, Default)]
pub struct SendParams {
    cb: Option<String>,
    /// `1`: answer with a page for the iframe a form was posted into.
    frame: Option<String>,
    d: Vec<String>,
    t: Vec<String>,
    seq: Option<String>,
    more: Option<String>,
    code: Option<String>,
    reason: Option<String>,
}

impl SendParams {
    /// Fills what the form body left out from the query string.
    fn or(self, query: SendParams) -> SendParams {
        let pick = |form: Vec<String>, query: Vec<String>| if form.is_empty() { query } else { form };
        SendParams {
            cb: None,
            frame: None,
            d: pick(self.d, query.d),
            t: pick(self.t, query.t),
            seq: self.seq.or(query.seq),
            more: self.more.or(query.more),
            code: self.code.or(query.code),
            reason: self.reason.or(query.reason),
        }
    }
}

/// By hand: a derived struct refuses a repeated field, and `d` and `t`
/// repeat in a batch. Every other parameter given twice is still malformed.
impl<'de> Deserialize<'de> for SendParams {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Field {
            Cb,
            Frame,
            D,
            T,
            Seq,
            More,
            Code,
            Reason,
            #[serde(other)]
            Other,
        }

        struct Fields;

        impl<'de> serde::de::Visitor<'de> for Fields {
            type Value = SendParams;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("/s parameters")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<SendParams, A::Error> {
                let mut params = SendParams::default();
                while let Some(field) = map.next_key::<Field>()? {
                    let once = match field {
                        Field::D => {
                            params.d.push(map.next_value()?);
                            continue;
                        }
                        Field::T => {
                            params.t.push(map.next_value()?);
                            continue;
                        }
                        Field::Other => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            continue;
                        }
                        Field::Cb => &mut params.cb,
                        Field::Frame => &mut params.frame,
                        Field::Seq => &mut params.seq,
                        Field::More => &mut params.more,
                        Field::Code => &mut params.code,
                        Field::Reason => &mut params.reason,
                    };
                    if once.replace(map.next_value()?).is_some() {
                        return Err(serde::de::Error::custom("a parameter given twice"));
                    }
                }
                Ok(params)
            }
        }

        deserializer.deserialize_map(Fields)
    }
}

#[derive(Debug, Default, Deserialize)]
struct PollParams {
    cb: Option<String>,
    ttl: Option<String>,
    ack: Option<String>,
    stream: Option<String>,
}

/// What a `/j` request gets.
enum Received {
    Messages(Vec<polysocket_common::wire::ClientMessage>),
    Stream(HttpResponse),
}

/// What a `/s` request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum SendRequest {
    Message(ClientSend),
    /// `None`: a Close without a status code, as `WebSocket.close()` sends.
    Close(Option<CloseReason>),
}

async fn send(
    req: HttpRequest,
    SocketId(socket): SocketId,
    payload: web::Payload,
    daemon: web::Data<Daemon>,
) -> HttpResponse {
    let started = Instant::now();
    let (params, cb) = match jsonp::parse_query::<SendParams>(req.query_string(), |p| p.cb.as_deref()) {
        Ok(parsed) => parsed,
        Err(e) => return e.response(),
    };
    let answer = match params.frame.as_deref() {
        None | Some("") | Some("0") => jsonp::Answer::from(cb),
        Some("1") => jsonp::Answer::Frame,
        Some(_) => return RequestError::InvalidFrame.reply(&jsonp::Answer::from(cb)),
    };
    if req.method() == Method::OPTIONS {
        return cors::preflight(&daemon, &socket, &req, SEND_METHODS);
    }
    let outcome = async {
        if !matches!(*req.method(), Method::GET | Method::POST) {
            return Err(RequestError::MethodNotAllowed(SEND_METHODS));
        }
        let post = req.method() == Method::POST;
        let content_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
        // Before the body: a stranger guessing ids gets nothing read for it.
        let handle = daemon.socket(daemon.client_limits.client_ip(&req), &socket)?;
        // A body that trickles in must not hold the connection for ever.
        let body = match tokio::time::timeout(
            daemon.settings.body_timeout,
            payload.to_bytes_limited(daemon.settings.body_limit),
        )
        .await
        {
            Err(_) => return Err(RequestError::SlowBody),
            // A raw body is one message; a form may be a batch, whose
            // messages may each be within the limit.
            Ok(Err(_)) if is_form(content_type) => return Err(RequestError::BodyTooBig(daemon.settings.body_limit)),
            Ok(Err(_)) => return Err(RequestError::Send(SendFailure::TooBig)),
            Ok(Ok(Err(_))) => return Err(RequestError::UnreadableBody),
            Ok(Ok(Ok(body))) => body,
        };
        let request = send_request(post, content_type, params, body)?;
        match request {
            SendRequest::Message(send) => {
                let batch = send.messages.len() > 1;
                handle.send(send).await.map_err(|Rejected { failure, accepted }| match batch {
                    true => RequestError::PartlySent { failure, accepted },
                    false => RequestError::Send(failure),
                })
            }
            SendRequest::Close(reason) => handle.close(reason).await.map_err(RequestError::from),
        }
    }
    .await;
    let mut response = match outcome {
        Ok(()) => jsonp::reply(StatusCode::CREATED, &answer, &Accepted::OK),
        Err(e) => e.reply(&answer),
    };
    cors::allow(&daemon, &socket, &req, &mut response);
    daemon.metrics.answered(Endpoint::Send, response.status(), started.elapsed());
    response
}

/// Builds the request from parameters; `body` is the message when a raw
/// POST body carries it.
fn request_from_params(params: SendParams, body: Option<Outgoing>) -> Result<SendRequest, RequestError> {
    if params.t.iter().any(|t| t == "c") {
        if params.t.len() > 1 || !params.d.is_empty() {
            return Err(RequestError::CloseInBatch);
        }
        return close_reason(params.code.as_deref(), params.reason).map(SendRequest::Close);
    }
    let messages = match body {
        Some(message) => vec![message],
        None => batch(params.t, params.d)?,
    };
    let seq = match params.seq.as_deref() {
        None | Some("") => None,
        Some(seq) => Some(seq.parse::<u64>().ok().filter(|&s| s >= 1).ok_or(RequestError::InvalidSeq)?),
    };
    let more = match params.more.as_deref() {
        None | Some("") | Some("0") => false,
        Some("1") => true,
        Some(_) => return Err(RequestError::InvalidMore),
    };
    Ok(SendRequest::Message(ClientSend { messages, seq, more }))
}

/// The messages of `d` parameters, each typed by the `t` of the same rank,
/// or all by a single `t` (text when there is none). Every one is decoded
/// before any is sent: a malformed batch delivers nothing.
fn batch(types: Vec<String>, data: Vec<String>) -> Result<Vec<Outgoing>, RequestError> {
    if data.is_empty() {
        return Err(RequestError::MissingData);
    }
    if data.len() > MAX_BATCH {
        return Err(RequestError::TooManyMessages(MAX_BATCH));
    }
    if types.len() > 1 && types.len() != data.len() {
        return Err(RequestError::TypeCount);
    }
    let type_of = |i: usize| types.get(if types.len() == 1 { 0 } else { i }).map(String::as_str);
    data.into_iter()
        .enumerate()
        .map(|(i, data)| match type_of(i) {
            None | Some("t") => Ok(Outgoing::Text(data)),
            // What a form cannot carry as it is: browsers turn every line
            // break in a form's values into CRLF.
            Some("j") => serde_json::from_str(&data).map(Outgoing::Text).map_err(|_| RequestError::InvalidJsonText),
            Some("b") => Ok(Outgoing::Binary(BASE64.decode(data).map_err(|_| RequestError::InvalidBase64)?.into())),
            Some(_) => Err(RequestError::InvalidType),
        })
        .collect()
}

/// A client close: 1000 or an application code (3000-4999), and a reason
/// that fits a close frame (RFC 6455 §5.5: 125 bytes with the code). No code
/// and no reason is a Close without a status; a reason alone comes with 1000.
fn close_reason(code: Option<&str>, reason: Option<String>) -> Result<Option<CloseReason>, RequestError> {
    let reason = reason.filter(|r| !r.is_empty());
    if reason.as_ref().is_some_and(|r| r.len() > 123) {
        return Err(RequestError::InvalidCloseReason);
    }
    let code = match code {
        None | Some("") if reason.is_none() => return Ok(None),
        None | Some("") => 1000,
        Some(code) => code
            .parse::<u16>()
            .ok()
            .filter(|c| matches!(c, 1000 | 3000..=4999))
            .ok_or(RequestError::InvalidCloseCode)?,
    };
    Ok(Some(CloseReason { code: CloseCode::from(code), description: reason }))
}

const FORM: &str = "application/x-www-form-urlencoded";

fn mime_of(content_type: &str) -> String {
    content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase()
}

fn is_form(content_type: &str) -> bool {
    mime_of(content_type) == FORM
}

/// What a `/s` request asks for, from its query parameters and, for a POST,
/// its content type and body. A POST body is a form (`d`, `t`, ...), or the
/// message itself: text/plain is one text message, application/octet-stream
/// one binary message, with any other parameter in the query string.
pub fn send_request(
    post: bool,
    content_type: &str,
    query: SendParams,
    body: Bytes,
) -> Result<SendRequest, RequestError> {
    if !post {
        return request_from_params(query, None);
    }
    match mime_of(content_type).as_str() {
        FORM => {
            if !jsonp::form_is_utf8(&body) {
                return Err(RequestError::InvalidUtf8);
            }
            let form: SendParams = serde_urlencoded::from_bytes(&body).map_err(|_| RequestError::MalformedForm)?;
            request_from_params(form.or(query), None)
        }
        "text/plain" => {
            let text = String::from_utf8(body.into()).map_err(|_| RequestError::InvalidUtf8)?;
            request_from_params(query, Some(Outgoing::Text(text)))
        }
        "application/octet-stream" => request_from_params(query, Some(Outgoing::Binary(body))),
        // An empty body with everything in the query works like a GET.
        "" if body.is_empty() => request_from_params(query, None),
        _ => Err(RequestError::UnsupportedContentType),
    }
}

async fn poll(req: HttpRequest, SocketId(socket): SocketId, daemon: web::Data<Daemon>) -> HttpResponse {
    let started = Instant::now();
    let (params, answer) = match jsonp::parse_query::<PollParams>(req.query_string(), |p| p.cb.as_deref()) {
        Ok((params, cb)) => (params, jsonp::Answer::from(cb)),
        Err(e) => return e.response(),
    };
    if req.method() == Method::OPTIONS {
        return cors::preflight(&daemon, &socket, &req, POLL_METHODS);
    }
    let gzip = daemon.settings.gzip.then(|| compression::accepts_gzip(req.headers()));
    let outcome = async {
        if req.method() != Method::GET {
            return Err(RequestError::MethodNotAllowed(POLL_METHODS));
        }
        let streaming = stream::Format::requested(params.stream.as_deref(), &req)?;
        // For a stream, `ttl` is the time between heartbeats.
        let ttl = match params.ttl.as_deref() {
            None | Some("") if streaming.is_some() => stream::DEFAULT_HEARTBEAT,
            None | Some("") => DEFAULT_TTL,
            Some(ms) => Duration::from_millis(ms.parse().map_err(|_| RequestError::InvalidTtl)?),
        }
        .min(daemon.settings.max_poll_ttl);
        let ack = match params.ack.as_deref() {
            None | Some("") => None,
            Some(seq) => Some(seq.parse::<u64>().map_err(|_| RequestError::InvalidAck)?),
        };
        let ip = daemon.client_limits.client_ip(&req);
        let handle = daemon.socket(ip, &socket)?;
        let slot = daemon.client_limits.poll_slot(ip)?;
        if let Some(format) = streaming {
            let ack = stream::start_ack(&req, ack)?;
            return Ok(Received::Stream(
                stream::respond(format, &daemon, handle, slot, ttl, ack, gzip == Some(true)).await?,
            ));
        }
        let _waiting = Counted::start(&daemon.metrics.polls_waiting);
        match handle.poll(ttl, ack).await {
            PollOutcome::Messages(messages) => Ok(Received::Messages(messages)),
            PollOutcome::Superseded => Err(RequestError::Superseded),
            PollOutcome::Gone => Err(RequestError::UnknownSocket),
        }
    }
    .await;
    let (mut response, endpoint) = match outcome {
        Ok(Received::Messages(messages)) => {
            let key = AnswerKey::of(&socket, &messages, answer.callback(), gzip);
            let response = match key.as_ref().and_then(|key| daemon.answers.get(key)) {
                Some(kept) => kept,
                None => {
                    let response = jsonp::reply(StatusCode::OK, &answer, &Messages { ok: true, messages });
                    // `None`: the daemon never gzips, so the answer varies with nothing.
                    let response = match gzip {
                        Some(accepted) => compression::compress(accepted, response),
                        None => response,
                    };
                    match key {
                        Some(key) => daemon.answers.keep(key, response),
                        None => response,
                    }
                }
            };
            (response, Endpoint::Poll)
        }
        Ok(Received::Stream(response)) => (response, Endpoint::Stream),
        Err(e) => (e.reply(&answer), Endpoint::Poll),
    };
    cors::allow(&daemon, &socket, &req, &mut response);
    daemon.metrics.answered(endpoint, response.status(), started.elapsed());
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> SendParams {
        serde_urlencoded::from_str(&serde_urlencoded::to_string(pairs).unwrap()).unwrap()
    }

    fn message(pairs: &[(&str, &str)]) -> Result<SendRequest, RequestError> {
        request_from_params(params(pairs), None)
    }

    fn send(message: Outgoing, seq: Option<u64>, more: bool) -> SendRequest {
        SendRequest::Message(ClientSend { messages: vec![message], seq, more })
    }

    fn text(data: &str) -> Outgoing {
        Outgoing::Text(data.into())
    }

    #[test]
    fn batches() {
        let batch = |messages: Vec<Outgoing>, seq, more| SendRequest::Message(ClientSend { messages, seq, more });
        assert_eq!(
            message(&[("d", "a"), ("d", "b"), ("seq", "4")]).unwrap(),
            batch(vec![text("a"), text("b")], Some(4), false)
        );
        // One t types every d; one per d types each, in order, wherever it stands.
        assert_eq!(
            message(&[("t", "b"), ("d", "AAE="), ("d", "/w==")]).unwrap(),
            batch(
                vec![Outgoing::Binary(Bytes::from_static(&[0, 1])), Outgoing::Binary(Bytes::from_static(&[255]))],
                None,
                false
            )
        );
        assert_eq!(
            message(&[("t", "b"), ("d", "AAE="), ("t", "t"), ("d", "x"), ("more", "1")]).unwrap(),
            batch(vec![Outgoing::Binary(Bytes::from_static(&[0, 1])), text("x")], None, true)
        );
        assert!(matches!(message(&[("t", "t"), ("t", "b"), ("d", "a")]), Err(RequestError::TypeCount)));
        for close_with_more in [
            &[("t", "t"), ("t", "c"), ("d", "a"), ("d", "b")][..],
            &[("t", "c"), ("d", "a")],
            &[("t", "c"), ("t", "c")],
        ] {
            assert!(matches!(message(close_with_more), Err(RequestError::CloseInBatch)), "{close_with_more:?}");
        }
        // One bad message refuses the whole batch before anything is sent.
        assert!(matches!(
            message(&[("t", "t"), ("t", "b"), ("d", "a"), ("d", "!!")]),
            Err(RequestError::InvalidBase64)
        ));
        let many: Vec<(&str, &str)> = std::iter::repeat_n(("d", ""), MAX_BATCH + 1).collect();
        assert!(matches!(message(&many), Err(RequestError::TooManyMessages(MAX_BATCH))));
        assert!(message(&many[1..]).is_ok());
        // Only d and t repeat.
        assert!(jsonp::parse_query::<SendParams>("d=a&seq=1&seq=2", |_| None).is_err());
        let form = Bytes::from_static(b"d=a&d=b");
        let SendRequest::Message(send) =
            send_request(true, "application/x-www-form-urlencoded", params(&[("seq", "9")]), form).unwrap()
        else {
            panic!("a batch")
        };
        assert_eq!(
            (send.messages, send.seq),
            (vec![text("a"), text("b")], Some(9)),
            "the query fills in what the form leaves out"
        );
    }

    #[test]
    fn messages() {
        assert_eq!(message(&[("t", "t"), ("d", "hi")]).unwrap(), send(Outgoing::Text("hi".into()), None, false));
        assert_eq!(message(&[("d", "hi")]).unwrap(), send(Outgoing::Text("hi".into()), None, false));
        assert_eq!(
            message(&[("t", "b"), ("d", "AAH/"), ("seq", "7"), ("more", "1")]).unwrap(),
            send(Outgoing::Binary(Bytes::from_static(&[0, 1, 255])), Some(7), true)
        );
        assert!(matches!(message(&[("t", "t")]), Err(RequestError::MissingData)));
        assert!(matches!(message(&[("t", "z"), ("d", "x")]), Err(RequestError::InvalidType)));
        assert!(matches!(message(&[("t", "b"), ("d", "!!")]), Err(RequestError::InvalidBase64)));
        assert!(matches!(message(&[("d", "x"), ("seq", "0")]), Err(RequestError::InvalidSeq)));
        assert!(matches!(message(&[("d", "x"), ("more", "yes")]), Err(RequestError::InvalidMore)));
    }

    #[test]
    fn text_may_come_as_a_json_string_and_keeps_its_line_breaks() {
        let breaks = "a\nb\r\nc\rd \u{1F600}";
        let literal = serde_json::to_string(breaks).unwrap();
        assert_eq!(message(&[("t", "j"), ("d", &literal)]).unwrap(), send(text(breaks), None, false));
        assert_eq!(
            message(&[("t", "t"), ("t", "j"), ("d", "x\ny"), ("d", &literal)]).unwrap(),
            SendRequest::Message(ClientSend { messages: vec![text("x\ny"), text(breaks)], seq: None, more: false })
        );
        for bad in ["a", "\"a", "1", "[\"a\"]", "\"\\ud800\""] {
            assert!(matches!(message(&[("t", "j"), ("d", bad)]), Err(RequestError::InvalidJsonText)), "{bad}");
        }
    }

    #[test]
    fn closes() {
        let close = |code: u16, reason: Option<&str>| {
            SendRequest::Close(Some(CloseReason {
                code: CloseCode::from(code),
                description: reason.map(str::to_owned),
            }))
        };
        assert_eq!(message(&[("t", "c")]).unwrap(), SendRequest::Close(None));
        assert_eq!(message(&[("t", "c"), ("reason", "why")]).unwrap(), close(1000, Some("why")));
        assert_eq!(message(&[("t", "c"), ("code", "1000")]).unwrap(), close(1000, None));
        assert_eq!(message(&[("t", "c"), ("code", "4001"), ("reason", "done")]).unwrap(), close(4001, Some("done")));
        for bad in ["999", "1001", "1005", "2999", "5000", "x"] {
            assert!(matches!(message(&[("t", "c"), ("code", bad)]), Err(RequestError::InvalidCloseCode)), "{bad}");
        }
        let long = "é".repeat(62);
        assert!(matches!(message(&[("t", "c"), ("reason", &long)]), Err(RequestError::InvalidCloseReason)));
        assert!(message(&[("t", "c"), ("reason", &"a".repeat(123))]).is_ok());
    }
}
