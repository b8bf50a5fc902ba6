//! The router's HTTP server.

use crate::config::RouterConfig;
use actix_web::dev::Server;
use actix_web::{App, HttpResponse, web};
use polysocket_common::cli::{self, ServiceArgs, StartError};
use polysocket_common::fleet::{Fleet, RedisFleet};
use polysocket_common::logging::Outage;
use polysocket_common::token::{TokenRecord, TokensFile};
use polysocket_http::create::{self, CreateService};
use polysocket_http::{client, ops};
use prometheus::Registry;
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How often the router checks that Redis still has the tokens file's records
/// when no create has noticed they are gone.
const TOKENS_CHECK_INTERVAL: Duration = Duration::from_secs(5);
/// Pause between attempts to reach Redis at start-up (storing the tokens,
/// the first contact that makes the router ready).
const START_RETRY: Duration = Duration::from_secs(1);

/// A bound, not yet running router. Binding first lets tests use port 0 and
/// ask which port they got.
pub struct Application {
    port: u16,
    server: Server,
    /// `/healthz`, `/readyz` and `/metrics` on `--admin-listen`, when set.
    admin: Option<Server>,
}

impl Application {
    /// Builds the production router: Redis fleet, tokens from the file.
    pub async fn build(config: &RouterConfig) -> Result<Self, StartError> {
        cli::raise_open_files_limit();
        let service = &config.service;
        let fleet = service.redis.connect().await?;
        fleet.listen_for_replies().await;
        if let Some(path) = &service.tokens.path {
            let tokens = TokensFile::load(path)?.tokens;
            tokio::spawn(keep_tokens_stored(fleet.clone(), tokens));
        }
        Self::serve(cli::bind(config.listen)?, fleet, service)
    }

    /// Serves `/create` with any fleet on an already bound listener.
    pub fn serve(listener: TcpListener, fleet: Arc<dyn Fleet>, settings: &ServiceArgs) -> Result<Self, StartError> {
        let addr = listener.local_addr().expect("a bound listener has an address");
        let registry = Registry::new();
        polysocket_common::metrics::register_process_metrics(&registry);
        // In-flight creates finish on SIGTERM; none lasts longer than this.
        let drain = settings.create.create_timeout + Duration::from_secs(1);
        let http = &settings.http;
        let service =
            Arc::new(CreateService::new(fleet.clone(), settings.create.clone(), settings.client.clone(), &registry));
        create::forget_idle_callers(&service);
        let readiness = web::Data::new(Readiness { fleet, reached: AtomicBool::new(false) });
        tokio::spawn(watch_first_contact(readiness.clone()));
        let endpoints = ops::endpoints(registry, readiness.clone(), ready);
        let admin = ops::admin_server(http, endpoints.clone())?;
        let public_endpoints = admin.is_none();
        let server = actix_web::HttpServer::new(move || {
            let app = App::new()
                .app_data(readiness.clone())
                .configure(create::configure(service.clone()))
                .configure(client::configure);
            if public_endpoints { app.configure(endpoints.clone()) } else { app }
        })
        // Shutdown is ours, as in polysocketd: `run_until_stopped` decides.
        .disable_signals()
        .shutdown_timeout(drain.as_secs());
        let server = cli::run_server(server, http, listener)?;
        log::info!("router listening on {addr}");
        Ok(Application { port: addr.port(), server, admin })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs until `shutdown` resolves (in production: SIGTERM or SIGINT),
    /// then stops taking connections and lets in-flight creates finish.
    /// Must run inside an actix system.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        cli::serve_until_stopped(self.server, self.admin, shutdown, || async {
            log::info!("stopping: finishing creates in flight");
        })
        .await
    }
}

/// What `/readyz` looks at.
struct Readiness {
    fleet: Arc<dyn Fleet>,
    /// The fleet has answered at least once since start.
    reached: AtomicBool,
}

/// Ready once the fleet has answered once, and from then on whatever Redis
/// does: a router that cannot reach Redis still answers creates, with a
/// retryable "fleet unavailable" a JSONP client can read, which beats the
/// ingress's bare 503 when every router is taken out of rotation.
async fn ready(readiness: web::Data<Readiness>) -> HttpResponse {
    let ping = readiness.fleet.ping().await;
    if ping.is_ok() {
        readiness.reached.store(true, Ordering::Release);
    }
    match ping {
        Ok(()) => HttpResponse::Ok().body("ready"),
        Err(e) if readiness.reached.load(Ordering::Acquire) => {
            HttpResponse::Ok().body(format!("ready; fleet unreachable: {e}"))
        }
        Err(e) => HttpResponse::ServiceUnavailable().body(format!("not ready: {e}")),
    }
}

/// Marks the router reached at the fleet's first answer, whether or not
/// anything asked `/readyz` before an outage began.
async fn watch_first_contact(readiness: web::Data<Readiness>) {
    while readiness.fleet.ping().await.is_err() {
        tokio::time::sleep(START_RETRY).await;
    }
    readiness.reached.store(true, Ordering::Release);
    log::info!("reached the fleet: ready");
}

/// Stores the tokens file's records, and stores them again whenever Redis
/// has lost them (a restart without persistence), so creates recover
/// without restarting any router.
async fn keep_tokens_stored(fleet: Arc<RedisFleet>, tokens: Vec<TokenRecord>) {
    let mut unreachable = Outage::new("cannot store tokens yet, retrying");
    while let Err(e) = fleet.store_tokens(&tokens).await {
        unreachable.failed(&e);
        tokio::time::sleep(START_RETRY).await;
    }
    unreachable.ended();
    log::info!("stored {} token record(s)", tokens.len());
    let mut checks = tokio::time::interval(TOKENS_CHECK_INTERVAL);
    loop {
        // A create that finds the records gone wakes this at once; the
        // periodic check covers a Redis restart while nobody creates.
        tokio::select! {
            _ = checks.tick() => {}
            () = fleet.tokens_lost() => {}
        }
        match fleet.restore_tokens(&tokens).await {
            Ok(true) => log::warn!("Redis had lost the token records; stored them again"),
            Ok(false) => {}
            Err(e) => log::debug!("cannot check the token records: {e}"),
        }
    }
}
