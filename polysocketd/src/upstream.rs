//! Opening the upstream WebSocket for a create request.

use crate::address_policy::{self, AddressRefusal, Private, Resolver};
use crate::connection::WebSocketConnection;
use actix_service::Service;
use actix_tls::connect::{ConnectError, ConnectInfo, Connection};
use actix_web::http::Uri;
use actix_web::http::header::{SEC_WEBSOCKET_EXTENSIONS, SEC_WEBSOCKET_PROTOCOL};
use awc::error::{ConnectError as HttpConnectError, SendRequestError, WsClientError};
use awc::{BoxedSocket, Client};
use polysocket_common::target::Target;
use polysocket_common::wire::{EstablishRequest, OpenFailure};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub type Upstream = WebSocketConnection<BoxedSocket>;

/// An open upstream and the subprotocol it selected ("" for none).
pub struct Opened {
    pub upstream: Upstream,
    pub protocol: String,
}

/// Why an upstream did not open; the text reaches the client after
/// "upstream handshake failed: ", so it says who failed and how.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid target")]
    InvalidTarget,
    #[error(transparent)]
    Address(#[from] AddressRefusal),
    #[error("upstream handshake failed: connection refused")]
    Refused,
    #[error("upstream handshake failed: timeout")]
    Timeout,
    #[error("upstream handshake failed: HTTP {0}")]
    Status(u16),
    #[error("upstream handshake failed: server selected a subprotocol that was not offered")]
    UnofferedProtocol,
    #[error("upstream handshake failed: server selected an extension that was not requested")]
    UnrequestedExtension,
    #[error("upstream handshake failed: {0}")]
    Unreachable(String),
    #[error("upstream handshake failed: {0}")]
    InvalidAnswer(String),
}

impl OpenError {
    /// Who failed, for the router.
    pub fn kind(&self) -> OpenFailure {
        match self {
            OpenError::Address(AddressRefusal::NotPublic) => OpenFailure::Policy,
            OpenError::Address(AddressRefusal::Unresolvable) | OpenError::Refused | OpenError::Unreachable(_) => {
                OpenFailure::Unreachable
            }
            OpenError::Timeout => OpenFailure::Timeout,
            OpenError::Status(_) => OpenFailure::Rejected,
            OpenError::UnofferedProtocol | OpenError::UnrequestedExtension | OpenError::InvalidAnswer(_) => {
                OpenFailure::Protocol
            }
            // The router checked the target; a daemon that cannot parse it
            // is out of step with it.
            OpenError::InvalidTarget => OpenFailure::Other,
        }
    }

    /// The upstream's answer to the handshake, when it gave one.
    pub fn status(&self) -> Option<u16> {
        match self {
            OpenError::Status(status) => Some(*status),
            _ => None,
        }
    }
}

/// Limits applied to the opening handshake.
#[derive(Debug, Clone)]
pub struct OpenSettings {
    pub allow_private: bool,
    pub handshake_timeout: Duration,
    pub max_frame_bytes: usize,
    /// Most handshakes in progress to one upstream host at a time.
    pub max_handshakes_per_host: usize,
    /// Certificate authorities trusted for wss:// besides the public roots.
    pub extra_roots: Vec<CertificateDer<'static>>,
}

/// Reads the PEM certificates of `--ca-file`.
pub fn load_roots(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let shown = path.display();
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("cannot read CA file {shown}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("invalid CA file {shown}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no certificate in CA file {shown}"));
    }
    Ok(certs)
}

/// TLS for wss:// upstreams: the public (webpki) roots plus `extra`, and
/// HTTP/1.1 only, which the WebSocket handshake needs.
fn tls_config(extra: &[CertificateDer<'static>]) -> Arc<rustls::ClientConfig> {
    let mut roots = actix_tls::connect::rustls_0_23::webpki_roots_cert_store();
    let (added, ignored) = roots.add_parsable_certificates(extra.iter().cloned());
    if ignored > 0 {
        log::warn!("{ignored} of the CA file's certificates could not be used ({added} were)");
    }
    let mut config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// TCP connections with Nagle's algorithm off, which awc leaves on: a
/// message written while the previous one is unacknowledged would wait for
/// that ACK (up to 40 ms of delayed ACK on Linux), so a client's second quick
/// send would reach the upstream late. Every frame goes out when written.
fn no_delay_tcp() -> impl Service<ConnectInfo<Uri>, Response = Connection<Uri, TcpStream>, Error = ConnectError> + Clone
{
    let tcp = actix_tls::connect::Connector::default().service();
    actix_service::apply_fn::<_, _, _, _, _, ConnectInfo<Uri>, _, _>(tcp, |request, tcp| {
        let connecting = tcp.call(request);
        async move {
            let connection = connecting.await?;
            connection.io_ref().set_nodelay(true).map_err(ConnectError::Io)?;
            Ok(connection)
        }
    })
}

/// Opens upstream WebSockets for one thread: awc clients are `!Send`, so each
/// thread that opens sockets has its own client (reused, never one per request).
pub struct Opener {
    client: Client,
    gates: Arc<HandshakeGates>,
    settings: OpenSettings,
    resolver: Resolver,
}

impl Opener {
    /// `gates` are the daemon's, shared by the openers of all its threads.
    pub fn new(settings: OpenSettings, gates: Arc<HandshakeGates>) -> Self {
        Self::with_resolver(settings, gates, address_policy::system_resolver())
    }

    pub fn with_resolver(settings: OpenSettings, gates: Arc<HandshakeGates>, resolver: Resolver) -> Self {
        // The daemon's own capacity bounds upstream connections; awc's default
        // pool limit (100) would otherwise cap them far below it.
        let connector =
            awc::Connector::new().connector(no_delay_tcp()).rustls_0_23(tls_config(&settings.extra_roots)).limit(0);
        let client = Client::builder().connector(connector).disable_timeout().finish();
        Opener { client, gates, settings, resolver }
    }

    pub async fn open(&self, request: &EstablishRequest) -> Result<Opened, OpenError> {
        let target = Target::parse(&request.target).map_err(|_| OpenError::InvalidTarget)?;
        tokio::time::timeout(self.settings.handshake_timeout, self.handshake(&target, request))
            .await
            .map_err(|_| OpenError::Timeout)?
    }

    async fn handshake(&self, target: &Target, request: &EstablishRequest) -> Result<Opened, OpenError> {
        let settings = &self.settings;
        let private = if settings.allow_private { Private::All } else { Private::Only(&request.allow_private) };
        let addr =
            address_policy::resolve_checked(&self.resolver, target.host_for_lookup(), target.port(), private).await?;
        let _permits = self
            .gates
            .enter(request.client_ip.as_deref().unwrap_or(""), addr, target.host(), settings.max_handshakes_per_host)
            .await;
        let mut handshake = self
            .client
            .ws(target.as_str())
            // Connect to the address that was checked, never a fresh lookup.
            .address(addr)
            .max_frame_size(settings.max_frame_bytes);
        if let Some(origin) = &request.origin {
            handshake = handshake.origin(origin.as_str());
        }
        if !request.protocols.is_empty() {
            handshake = handshake.protocols(&request.protocols);
        }
        if let Some(ip) = &request.client_ip {
            handshake = handshake.header("X-Forwarded-For", ip.as_str());
        }
        for (name, value) in &request.upstream_headers {
            handshake = handshake.header(name.as_str(), value.0.as_str());
        }
        let (response, framed) = handshake.connect().await.map_err(describe)?;
        // awc checks neither of these; RFC 6455 §4.1 requires the client to
        // fail the connection when the server picks what was not offered.
        let protocol = response
            .headers()
            .get(SEC_WEBSOCKET_PROTOCOL)
            .map(|v| v.to_str().unwrap_or("\u{0}").to_owned())
            .unwrap_or_default();
        if !protocol.is_empty() && !request.protocols.contains(&protocol) {
            return Err(OpenError::UnofferedProtocol);
        }
        if response.headers().contains_key(SEC_WEBSOCKET_EXTENSIONS) {
            return Err(OpenError::UnrequestedExtension);
        }
        // Frames the upstream sent right after its answer are in the handshake's buffer.
        let parts = framed.into_parts();
        Ok(Opened { upstream: WebSocketConnection::new(parts.io, parts.codec, parts.read_buf), protocol })
    }
}

/// Queues handshakes so that at most one per (client address, upstream
/// address) is in CONNECTING state at a time (RFC 6455 §4.1), and at most a
/// configured number per upstream host. One per daemon, whatever thread
/// opens the socket.
#[derive(Default)]
pub struct HandshakeGates {
    gates: Mutex<HashMap<String, Weak<Semaphore>>>,
}

impl HandshakeGates {
    async fn enter(&self, client: &str, addr: SocketAddr, host: &str, per_host: usize) -> [OwnedSemaphorePermit; 2] {
        let pair = self.gate(format!("pair {client} {addr}"), 1);
        let host = self.gate(format!("host {host}"), per_host.max(1));
        let pair = pair.acquire_owned().await.expect("gates are never closed");
        let host = host.acquire_owned().await.expect("gates are never closed");
        [pair, host]
    }

    /// The gate for `key`, shared by everyone currently waiting on or
    /// holding it; gates nobody uses any more are forgotten.
    fn gate(&self, key: String, permits: usize) -> Arc<Semaphore> {
        let mut gates = self.gates.lock().expect("gate map never poisoned");
        gates.retain(|_, gate| gate.strong_count() > 0);
        if let Some(gate) = gates.get(&key).and_then(Weak::upgrade) {
            return gate;
        }
        let gate = Arc::new(Semaphore::new(permits));
        gates.insert(key, Arc::downgrade(&gate));
        gate
    }
}

fn describe(error: WsClientError) -> OpenError {
    match error {
        WsClientError::InvalidResponseStatus(status) => OpenError::Status(status.as_u16()),
        WsClientError::SendRequest(SendRequestError::Connect(HttpConnectError::Io(io)))
            if io.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            OpenError::Refused
        }
        WsClientError::SendRequest(SendRequestError::Timeout)
        | WsClientError::SendRequest(SendRequestError::Connect(HttpConnectError::Timeout)) => OpenError::Timeout,
        WsClientError::SendRequest(other) => OpenError::Unreachable(other.to_string()),
        other => OpenError::InvalidAnswer(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use polysocket_tests::upstream::UpstreamServer;
    use std::cell::Cell;
    use std::rc::Rc;

    fn request(target: String) -> EstablishRequest {
        EstablishRequest {
            id: "r".into(),
            reply_to: String::new(),
            accept_by_ms: u64::MAX,
            expires_at_ms: u64::MAX,
            target,
            origin: None,
            protocols: Vec::new(),
            client_ip: None,
            token: "t".into(),
            allow_private: vec!["127.0.0.0/8".parse().unwrap()],
            upstream_headers: Vec::new(),
        }
    }

    #[actix_web::test]
    async fn upstream_connections_send_without_delay() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let request = ConnectInfo::new(format!("ws://{addr}/").parse::<Uri>().unwrap()).set_addr(Some(addr));
        let connection = no_delay_tcp().call(request).await.expect("connects");
        assert!(connection.io_ref().nodelay().unwrap(), "Nagle's algorithm is off");
    }

    /// A rebinding DNS server: loopback (allowed) at the first lookup, then a
    /// private address the token may not reach. The daemon must look up once
    /// and connect to the address it checked.
    #[actix_web::test]
    async fn connects_to_the_address_it_checked_without_a_second_lookup() {
        let upstream = UpstreamServer::start();
        let lookups = Rc::new(Cell::new(0));
        let counted = lookups.clone();
        let rebinding: Resolver = Rc::new(move |_, port| {
            counted.set(counted.get() + 1);
            let ip = if counted.get() == 1 { [127, 0, 0, 1] } else { [10, 9, 9, 9] };
            Box::pin(async move { Ok(vec![SocketAddr::from((ip, port))]) })
        });
        let settings = OpenSettings {
            allow_private: false,
            handshake_timeout: Duration::from_secs(5),
            max_frame_bytes: 1 << 20,
            max_handshakes_per_host: 4,
            extra_roots: Vec::new(),
        };
        let opener = Opener::with_resolver(settings, Arc::default(), rebinding);
        let target = format!("ws://rebind.test:{}/echo", upstream.port());
        assert!(opener.open(&request(target.clone())).await.is_ok(), "the checked loopback address was used");
        assert_eq!(lookups.get(), 1, "one lookup per open");
        // The next open sees the rebound answer and refuses it.
        assert!(matches!(opener.open(&request(target)).await, Err(OpenError::Address(AddressRefusal::NotPublic))));
    }
}
