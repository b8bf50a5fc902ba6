//! polysocketd's HTTP server and background tasks, put together.

use crate::client_limits::ClientLimits;
use crate::config::DaemonConfig;
use crate::daemon::{Daemon, DaemonSettings};
use crate::routes;
use actix_web::dev::Server;
use actix_web::{App, HttpResponse, web};
use polysocket_common::cli::{self, StartError};
use polysocket_common::fleet::{DaemonInfo, Fleet, MemoryFleet};
use polysocket_common::token::TokensFile;
use polysocket_http::create::{self, CreateService};
use polysocket_http::{client, ops};
use prometheus::Registry;
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// One worker, so a socket's owner task and the requests for it share a
/// thread. With several, a request on one worker for a socket owned by
/// another is woken through tokio's remote queue, which a busy worker serves
/// every 31st turn: under load those clients got 1/25 of the round trips of
/// the others (bench/: fairness 0.04 at 1000 sockets, 0.97 with one worker
/// per daemon). A host with more cores runs more daemons, which the router
/// balances and the fqdn reaches without forwarding.
const DEFAULT_WORKERS: u16 = 1;

/// Descriptors a socket may hold: its upstream connection and its client's
/// poll connection (sends mostly reuse a keep-alive connection).
const FILES_PER_SOCKET: u64 = 2;
/// Descriptors for everything else: listeners, Redis, epoll, logs.
const FILES_RESERVED: u64 = 256;

/// A bound, not yet running daemon.
pub struct Application {
    port: u16,
    server: Server,
    /// `/healthz`, `/readyz` and `/metrics` on `--admin-listen`, when set.
    admin: Option<Server>,
    daemon: Arc<Daemon>,
    shutdown_grace: Duration,
}

impl Application {
    /// Builds the daemon the configuration describes: a fleet member on
    /// Redis, or (with `--standalone`) a single process with its own fleet.
    pub async fn build(config: &DaemonConfig) -> Result<Self, StartError> {
        let open_files = cli::raise_open_files_limit();
        let needed = u64::from(config.capacity) * FILES_PER_SOCKET + FILES_RESERVED;
        if open_files < needed {
            log::warn!(
                "--capacity {} needs about {needed} open files, but the limit is {open_files}: the daemon will \
                 refuse connections near {} sockets; raise the hard limit (ulimit -Hn, LimitNOFILE, the container \
                 runtime's nofile) or lower --capacity",
                config.capacity,
                open_files.saturating_sub(FILES_RESERVED) / FILES_PER_SOCKET
            );
        }
        let listener = cli::bind(config.listen)?;
        let service = &config.service;
        let fleet: Arc<dyn Fleet> = if config.standalone {
            let fleet = MemoryFleet::new();
            if let Some(path) = &service.tokens.path {
                let file = TokensFile::load(path)?;
                fleet.store_tokens(&file.tokens).await.expect("the memory fleet cannot fail");
            }
            fleet
        } else {
            if service.tokens.path.is_some() {
                return Err(StartError::Invalid(
                    "--tokens is only read in standalone mode; give it to the router".into(),
                ));
            }
            service.redis.connect().await?
        };
        Self::serve(listener, fleet, config)
    }

    /// Serves on a bound listener with any fleet (tests pass port 0 and
    /// their own fleet).
    pub fn serve(listener: TcpListener, fleet: Arc<dyn Fleet>, config: &DaemonConfig) -> Result<Self, StartError> {
        let addr = listener.local_addr().expect("a bound listener has an address");
        let registry = Registry::new();
        polysocket_common::metrics::register_process_metrics(&registry);
        let settings = DaemonSettings::from_config(config, addr.port())?;
        let info = DaemonInfo {
            id: uuid::Uuid::new_v4().simple().to_string(),
            fqdn: settings.hosts.daemon_name(),
            capacity: config.capacity,
        };
        let bridge = &config.bridge;
        let client_limits =
            ClientLimits::new(config.service.client.clone(), bridge.unknown_socket_rate, bridge.max_polls_per_ip);
        let daemon = Arc::new(Daemon::new(info, fleet.clone(), settings, client_limits, &registry));
        let create = config.standalone.then(|| {
            let service = &config.service;
            let create = Arc::new(CreateService::new(fleet, service.create.clone(), service.client.clone(), &registry));
            create::forget_idle_callers(&create);
            create
        });
        let mut http = config.service.http.clone();
        http.workers.get_or_insert(DEFAULT_WORKERS);
        let shared = web::Data::from(daemon.clone());
        let endpoints = ops::endpoints(registry, shared.clone(), ready);
        let admin = ops::admin_server(&http, endpoints.clone())?;
        let public_endpoints = admin.is_none();
        let working = daemon.clone();
        let server = actix_web::HttpServer::new(move || {
            // Runs once on each worker thread as it starts.
            working.start_worker();
            let mut app = App::new().app_data(shared.clone()).configure(routes::configure);
            if public_endpoints {
                app = app.configure(endpoints.clone());
            }
            if let Some(create) = &create {
                app = app.configure(create::configure(create.clone())).configure(client::configure);
            }
            app
        })
        // Shutdown is ours: drain first (see `run_until_stopped`), then stop.
        .disable_signals()
        .shutdown_timeout(1);
        let server = cli::run_server(server, &http, listener)?;
        log::info!("polysocketd {} listening on {addr} as {}", daemon.info().id, daemon.info().fqdn);
        Ok(Application { port: addr.port(), server, admin, daemon, shutdown_grace: config.shutdown_grace })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs until `shutdown` resolves (in production: SIGTERM or SIGINT), then
    /// drains: leaves the fleet, closes every socket with 1001 and gives
    /// clients up to `--shutdown-grace` to read it. Must run inside an actix
    /// system.
    pub async fn run_until_stopped(self, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
        let daemon = Arc::downgrade(&self.daemon);
        self.daemon.fleet().watch_revocations(Box::new(move |token| {
            if let Some(daemon) = daemon.upgrade() {
                daemon.close_sockets_of(&token);
            }
        }));
        let heartbeat = tokio::spawn(self.daemon.clone().heartbeat());
        let forget = tokio::spawn(self.daemon.clone().forget_idle_clients());
        let (daemon, grace) = (self.daemon.clone(), self.shutdown_grace);
        let result = cli::serve_until_stopped(self.server, self.admin, shutdown, || async move {
            daemon.drain(grace).await;
        })
        .await;
        heartbeat.abort();
        forget.abort();
        result
    }
}

/// Ready once registered in the fleet, and from then on until it drains,
/// whatever Redis does: its sockets keep working without Redis (only
/// creates need it, and they fail fast at the router meanwhile).
async fn ready(daemon: web::Data<Daemon>) -> HttpResponse {
    if daemon.is_draining() {
        return HttpResponse::ServiceUnavailable().body("not ready: draining");
    }
    match (daemon.has_registered(), daemon.is_registered()) {
        (true, true) => HttpResponse::Ok().body("ready"),
        (true, false) => HttpResponse::Ok().body("ready; fleet unreachable, serving existing sockets"),
        (false, _) => HttpResponse::ServiceUnavailable().body("not ready: not yet registered in the fleet"),
    }
}
