//! Command-line arguments shared by the router and polysocketd. Every flag
//! also reads an environment variable, so containers configure by env alone.

use crate::fleet::{CLUSTER_SCHEME, FleetError, RedisFleet, SENTINEL_SCHEME};
use crate::token::TokensFileError;
use actix_http::Request;
use actix_service::IntoServiceFactory;
use actix_web::HttpServer;
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Response, Server, Service, ServiceFactory};
use clap::{Args, Parser};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Exit code for invalid configuration (EX_USAGE), so orchestrators can tell
/// a bad deployment from a crash.
pub const EXIT_BAD_CONFIG: i32 = 64;
/// Exit code when the configuration is fine but something it names cannot be
/// had (EX_UNAVAILABLE): the listen address is taken, Redis does not answer
/// an admin command. Retrying later, unchanged, may work.
pub const EXIT_UNAVAILABLE: i32 = 69;
/// Exit code when an admin command's input does not fit the data
/// (EX_DATAERR): adding a token that exists, updating one that does not.
pub const EXIT_DATA: i32 = 65;

/// Parses the command line and environment, exiting with
/// [`EXIT_BAD_CONFIG`] and clap's explanation when they are invalid.
pub fn parse_or_exit<T: Parser>() -> T {
    T::try_parse().unwrap_or_else(|e| {
        let _ = e.print();
        std::process::exit(if e.use_stderr() { EXIT_BAD_CONFIG } else { 0 })
    })
}

/// Unwraps a start-up result, or logs why the service cannot start and exits
/// with the code that says whose fault it is ([`StartError::exit_code`]).
pub fn started_or_exit<T>(result: Result<T, StartError>) -> T {
    result.unwrap_or_else(|e| {
        log::error!("{e}");
        std::process::exit(e.exit_code())
    })
}

/// Why a service could not start; `main` logs it and exits.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Tokens(#[from] TokensFileError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("invalid redis url: {0}")]
    Redis(#[source] FleetError),
    #[error("{0}")]
    Invalid(String),
}

impl StartError {
    /// [`EXIT_BAD_CONFIG`] when the configuration must change,
    /// [`EXIT_UNAVAILABLE`] when the host could not give what it asks for.
    pub fn exit_code(&self) -> i32 {
        match self {
            StartError::Bind { .. } => EXIT_UNAVAILABLE,
            StartError::Tokens(_) | StartError::Redis(_) | StartError::Invalid(_) => EXIT_BAD_CONFIG,
        }
    }
}

/// Runs a service's server (and its admin server, if any) until the server
/// ends or `shutdown` resolves; then `before_stop` runs (a daemon drains
/// there) and the server stops, finishing the requests in flight. The admin
/// server outlives `before_stop`: that is when `/readyz` matters.
pub async fn serve_until_stopped<D: Future<Output = ()>>(
    server: Server,
    admin: Option<Server>,
    shutdown: impl Future<Output = ()>,
    before_stop: impl FnOnce() -> D,
) -> std::io::Result<()> {
    let admin = admin.map(|admin| {
        let handle = admin.handle();
        actix_web::rt::spawn(admin);
        handle
    });
    let handle = server.handle();
    let mut server = server;
    let result = tokio::select! {
        result = &mut server => result,
        () = shutdown => {
            before_stop().await;
            // The server future must keep running to carry out the stop.
            let ((), result) = tokio::join!(handle.stop(true), server);
            result
        }
    };
    if let Some(admin) = admin {
        admin.stop(false).await;
    }
    result
}

/// Raises the soft open-file limit to the hard one and returns it: container
/// runtimes start services at a soft limit of 1024, about 500 bridged
/// sockets, and a distroless image has no shell to raise it.
pub fn raise_open_files_limit() -> u64 {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(0, |(soft, _)| soft);
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(now) => {
            log::info!("open files limit: {now} (was {before})");
            now
        }
        Err(e) => {
            log::warn!("cannot raise the open files limit from {before}: {e}");
            before
        }
    }
}

/// Starts a one-thread server for the operator's endpoints on their own
/// listener (see `--admin-listen`).
pub fn run_admin_server<F>(listener: TcpListener, configure: F) -> Result<Server, StartError>
where
    F: Fn(&mut actix_web::web::ServiceConfig) + Send + Clone + 'static,
{
    let addr = listener.local_addr().expect("a bound listener has an address");
    let server = HttpServer::new(move || actix_web::App::new().configure(configure.clone()))
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .listen(listener)
        .map_err(|source| StartError::Bind { addr, source })?;
    log::info!("health and metrics on {addr}");
    Ok(server.run())
}

/// Binds the service's listener, saying where it could not listen.
pub fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).map_err(|source| StartError::Bind { addr, source })
}

/// Starts `server` on `listener` with the connection bounds of `http`.
pub fn run_server<F, I, S, B>(
    server: HttpServer<F, I, S, B>,
    http: &HttpArgs,
    listener: TcpListener,
) -> Result<Server, StartError>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let addr = listener.local_addr().expect("a bound listener has an address");
    let server = match http.workers {
        Some(workers) => server.workers(workers.into()),
        None => server,
    };
    Ok(server
        .client_request_timeout(http.header_timeout)
        .keep_alive(http.keep_alive)
        .max_connections(http.max_connections_per_worker)
        .listen(listener)
        .map_err(|source| StartError::Bind { addr, source })?
        .run())
}

/// Flags of every service that can answer `/create`: the router, and
/// polysocketd in standalone mode.
#[derive(Debug, Clone, Args)]
pub struct ServiceArgs {
    #[command(flatten)]
    pub log: crate::logging::LogArgs,

    #[command(flatten)]
    pub redis: RedisArgs,

    #[command(flatten)]
    pub tokens: TokensArgs,

    #[command(flatten)]
    pub create: CreateArgs,

    #[command(flatten)]
    pub client: crate::limits::ClientArgs,

    #[command(flatten)]
    pub http: HttpArgs,
}

/// Bounds on HTTP connections, so slow or idle clients cannot hold them.
#[derive(Debug, Clone, Args)]
pub struct HttpArgs {
    /// How long a client has to send a request's headers once connected
    /// (slowloris); late ones get 408 and the connection is closed.
    #[arg(long, env = "POLYSOCKET_HEADER_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub header_timeout: Duration,

    /// How long an idle keep-alive connection stays open.
    #[arg(long, env = "POLYSOCKET_KEEP_ALIVE", default_value = "5s", value_parser = parse_duration)]
    pub keep_alive: Duration,

    /// Most connections each worker thread serves at once.
    #[arg(long, env = "POLYSOCKET_MAX_CONNECTIONS_PER_WORKER", default_value_t = 25_000)]
    pub max_connections_per_worker: usize,

    /// Serve /healthz, /readyz and /metrics on this address only, instead
    /// of on the public one (so an ingress in front never exposes them).
    #[arg(long, env = "POLYSOCKET_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,

    /// Worker threads serving HTTP (and, in polysocketd, owning sockets).
    /// By default one per core in the router; one in polysocketd, which
    /// scales by running a daemon per core.
    #[arg(long, env = "POLYSOCKET_WORKERS", value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: Option<u16>,
}

#[derive(Debug, Clone, Args)]
pub struct RedisArgs {
    /// Redis holding the registry, tokens and create hand-off:
    /// `redis://[user:password@]host:port[/db]`, `rediss://...` for TLS, or
    /// `redis+sentinel://[user:password@]host:port[,host:port...]/service[/db]`
    /// for the primary that Sentinels name (followed through failovers), or
    /// `redis+cluster://[user:password@]host:port[,host:port...]` for a Redis Cluster.
    #[arg(long = "redis", env = "POLYSOCKET_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub url: String,
    /// PEM certificate authority that signed a `rediss://` server's
    /// certificate, when it is a private one (default: the public roots).
    #[arg(long = "redis-ca-file", env = "POLYSOCKET_REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,
    /// PEM client certificate, for a Redis that asks for one (with `--redis-client-key`).
    #[arg(long = "redis-client-cert", env = "POLYSOCKET_REDIS_CLIENT_CERT", requires = "redis_client_key")]
    pub redis_client_cert: Option<PathBuf>,
    /// PEM private key of `--redis-client-cert`.
    #[arg(long = "redis-client-key", env = "POLYSOCKET_REDIS_CLIENT_KEY", requires = "redis_client_cert")]
    pub redis_client_key: Option<PathBuf>,
}

impl RedisArgs {
    /// The fleet these flags name. Connects lazily, as [`RedisFleet::new`],
    /// except that a Redis that refuses the configuration (a wrong password,
    /// a certificate that does not verify) is a start-up error.
    pub async fn connect(&self) -> Result<Arc<RedisFleet>, StartError> {
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| StartError::Invalid(format!("cannot read {}: {e}", path.display())))
        };
        let tls_files = self.redis_ca_file.is_some() || self.redis_client_cert.is_some();
        let high_availability = self.url.starts_with(SENTINEL_SCHEME) || self.url.starts_with(CLUSTER_SCHEME);
        let fleet = if high_availability && tls_files {
            return Err(StartError::Invalid("TLS is not supported with redis+sentinel:// or redis+cluster://".into()));
        } else if !tls_files {
            RedisFleet::new(&self.url)
        } else {
            if !self.url.starts_with("rediss://") {
                return Err(StartError::Invalid("--redis-ca-file and client certificates need a rediss:// URL".into()));
            }
            let client_tls = match (&self.redis_client_cert, &self.redis_client_key) {
                (Some(cert), Some(key)) => {
                    Some(redis::ClientTlsConfig { client_cert: read(cert)?, client_key: read(key)? })
                }
                _ => None,
            };
            let root_cert = self.redis_ca_file.as_ref().map(read).transpose()?;
            RedisFleet::with_certificates(&self.url, redis::TlsCertificates { client_tls, root_cert })
        }
        .map_err(StartError::Redis)?;
        if let Some(reason) = fleet.configuration_refused().await {
            return Err(StartError::Invalid(format!("redis refuses this configuration: {reason}")));
        }
        Ok(fleet)
    }
}

#[derive(Debug, Clone, Args)]
pub struct TokensArgs {
    /// JSON tokens file, loaded at start-up: into Redis by the router;
    /// polysocketd takes it only with --standalone.
    #[arg(long = "tokens", env = "POLYSOCKET_TOKENS")]
    pub path: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct CreateArgs {
    /// How long a create waits for the chosen daemon to open the upstream
    /// socket, handshake included.
    #[arg(long, env = "POLYSOCKET_CREATE_TIMEOUT", default_value = "15s", value_parser = parse_duration)]
    pub create_timeout: Duration,

    /// How long a daemon has to take a create before another is tried (and
    /// the silent one is kept out of selection for a while).
    #[arg(long, env = "POLYSOCKET_ACCEPT_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub accept_timeout: Duration,

    /// Creates per second one client address may make (0: no limit); a
    /// burst of ten seconds' worth is allowed. High, because hundreds of users may
    /// share an address behind a NAT; the per-token rate and
    /// `max_connections` bound what one customer can do.
    #[arg(long, env = "POLYSOCKET_CREATE_RATE_PER_IP", default_value_t = 100)]
    pub create_rate_per_ip: u32,

    /// Creates per second one token may make, from all its clients, with a
    /// burst of ten seconds' worth (0: no limit).
    #[arg(long, env = "POLYSOCKET_CREATE_RATE_PER_TOKEN", default_value_t = 200)]
    pub create_rate_per_token: u32,

    /// How long a `POST /create` body may take to arrive (slow bodies get 408).
    #[arg(long, env = "POLYSOCKET_CREATE_BODY_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub create_body_timeout: Duration,

    /// Daemons tried per create when they do not answer.
    #[arg(long = "create-attempts", env = "POLYSOCKET_CREATE_ATTEMPTS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=10))]
    pub attempts: u32,
}

/// Parses durations such as `500ms`, `15s` or `2m` (humantime syntax).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("invalid duration {text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
    }
}
