//! The router's HTTP server.

use crate::config::RouterConfig;
use crate::create::{self, CreateService};
use actix_web::dev::Server;
use actix_web::{App, HttpResponse, web};
use polysocket_common::fleet::{Fleet, RedisFleet};
use polysocket_common::token::TokensFile;
use std::net::TcpListener;
use std::sync::Arc;

/// A bound, not yet running router. Binding first lets tests use port 0 and
/// ask which port they got.
pub struct Application {
    port: u16,
    server: Server,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tokens(#[from] polysocket_common::token::TokensFileError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("invalid redis url: {0}")]
    Redis(#[source] polysocket_common::fleet::FleetError),
}

impl Application {
    /// Builds the production router: Redis fleet, tokens loaded from the file.
    pub async fn build(config: &RouterConfig) -> Result<Self, StartError> {
        let fleet = RedisFleet::new(&config.redis.url).map_err(StartError::Redis)?;
        fleet.listen_for_replies().await;
        if let Some(path) = &config.tokens.path {
            let file = TokensFile::load(path)?;
            // Redis may be briefly unreachable at start-up; the tokens are
            // retried in the background so the router still comes up.
            let store_fleet = fleet.clone();
            tokio::spawn(async move {
                while let Err(e) = store_fleet.store_tokens(&file.tokens).await {
                    log::warn!("cannot store tokens yet, retrying: {e}");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                }
                log::info!("stored {} token record(s)", file.tokens.len());
            });
        }
        let listener = TcpListener::bind(config.listen)
            .map_err(|source| StartError::Bind { addr: config.listen.to_string(), source })?;
        let service = Arc::new(CreateService { fleet, timeout: config.create.create_timeout });
        Self::serve(listener, service)
    }

    /// Serves `/create` with any fleet on an already bound listener.
    pub fn serve(listener: TcpListener, service: Arc<CreateService>) -> Result<Self, StartError> {
        let addr = listener.local_addr().map_err(|source| StartError::Bind { addr: "?".into(), source })?;
        let fleet = service.fleet.clone();
        let server = actix_web::HttpServer::new(move || {
            App::new()
                .app_data(web::Data::from(fleet.clone()))
                .configure(create::configure(service.clone()))
                .route("/healthz", web::get().to(HttpResponse::Ok))
                .route("/readyz", web::get().to(ready))
        })
        .listen(listener)
        .map_err(|source| StartError::Bind { addr: addr.to_string(), source })?
        .run();
        log::info!("router listening on {addr}");
        Ok(Application { port: addr.port(), server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs until SIGTERM/SIGINT (actix finishes in-flight requests first).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

async fn ready(fleet: web::Data<dyn Fleet>) -> HttpResponse {
    match fleet.ping().await {
        Ok(()) => HttpResponse::Ok().body("ready"),
        Err(e) => HttpResponse::ServiceUnavailable().body(format!("not ready: {e}")),
    }
}
