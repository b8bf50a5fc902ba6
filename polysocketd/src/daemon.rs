//! The daemon's shared state and its background duties: registering in the
//! fleet, opening the sockets routers hand over, and draining on shutdown.

use crate::answers::AnswerCache;
use crate::client_limits::ClientLimits;
use crate::config::{DaemonConfig, SocketHosts};
use crate::error::RequestError;
use crate::metrics::DaemonMetrics;
use crate::socket::{self, End, SocketHandle, SocketLimits};
use crate::upstream::{self, HandshakeGates, OpenSettings, Opener, Upstream};
use awc::ws::{CloseCode, CloseReason};
use dashmap::DashMap;
use polysocket_common::cli::StartError;
use polysocket_common::fleet::{DaemonInfo, Fleet, Heartbeat, Registration};
use polysocket_common::logging::{Outage, socket_tag};
use polysocket_common::wire::{EstablishReply, EstablishRequest, OpenFailure};
use prometheus::Registry;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Pause after a fleet error before trying again, so an unreachable Redis is
/// not hammered.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// How often quiet clients' rate-limit state is dropped.
const FORGET_IDLE_EVERY: Duration = Duration::from_secs(60);
/// How often a drain checks whether every socket has ended.
const DRAIN_CHECK: Duration = Duration::from_millis(50);
/// How often a drain logs how many sockets are left.
const DRAIN_PROGRESS: Duration = Duration::from_secs(5);

/// A socket as the daemon keeps it.
pub struct OpenSocket {
    pub handle: SocketHandle,
    /// The token whose slot it holds, to close it if the token is revoked.
    pub token: String,
    /// The page origin that created it, the only one CORS lets use it.
    pub origin: Option<Box<str>>,
}

/// How long one streaming response may live and how much it may write.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    pub lifetime: Duration,
    /// Bytes on the wire, compressed where the stream is.
    pub max_bytes: usize,
    /// Streams that may be gzipped at once: each holds a compression context.
    pub max_compressed: usize,
}

/// What the daemon was configured with, fixed for its life.
#[derive(Debug, Clone)]
pub struct DaemonSettings {
    pub hosts: SocketHosts,
    /// Shared by every socket's owner: one copy, not one per socket.
    pub socket: Arc<SocketLimits>,
    pub open: OpenSettings,
    /// Longest a `/j` poll waits (a client's `ttl` is clamped to it).
    pub max_poll_ttl: Duration,
    pub stream: StreamLimits,
    /// Whether `/j` answers and streams may be gzipped (`--no-gzip`).
    pub gzip: bool,
    /// Largest `/s` body read (a message, plus room for form and base64 encoding).
    pub body_limit: usize,
    /// How long a `/s` body may take to arrive.
    pub body_timeout: Duration,
    pub heartbeat_interval: Duration,
}

impl DaemonSettings {
    pub fn from_config(config: &DaemonConfig, bound_port: u16) -> Result<Self, StartError> {
        let bridge = &config.bridge;
        Ok(DaemonSettings {
            hosts: config.socket_hosts(bound_port),
            socket: Arc::new(SocketLimits {
                idle_timeout: bridge.idle_timeout,
                max_message_bytes: bridge.max_message_bytes,
                max_queue_bytes: bridge.max_queue_bytes,
                max_daemon_queue_bytes: bridge.max_daemon_queue_bytes,
                send_timeout: bridge.send_timeout,
                ping_interval: bridge.ping_interval,
                max_sends_per_second: bridge.max_sends_per_second,
            }),
            open: OpenSettings {
                allow_private: config.allow_private_targets,
                handshake_timeout: bridge.handshake_timeout,
                max_frame_bytes: bridge.max_message_bytes,
                max_handshakes_per_host: bridge.max_handshakes_per_host,
                extra_roots: match &bridge.ca_file {
                    Some(path) => upstream::load_roots(path).map_err(StartError::Invalid)?,
                    None => Vec::new(),
                },
            },
            max_poll_ttl: bridge.max_poll_ttl,
            stream: StreamLimits {
                lifetime: bridge.max_stream_time,
                max_bytes: bridge.max_stream_bytes,
                max_compressed: bridge.max_compressed_streams,
            },
            gzip: !bridge.no_gzip,
            // Forms and base64 inflate a message by a third; leave room for that.
            body_limit: bridge.max_message_bytes / 3 * 4 + 4096,
            body_timeout: bridge.body_timeout,
            heartbeat_interval: config.heartbeat_interval,
        })
    }
}

/// Everything request handlers and background tasks share.
pub struct Daemon {
    info: DaemonInfo,
    fleet: Arc<dyn Fleet>,
    pub settings: DaemonSettings,
    /// Open sockets by id. Removing an entry drops the last handle, which
    /// tells the owner task to close the upstream and end.
    sockets: DashMap<String, OpenSocket>,
    /// Token slots this daemon's sockets hold, per token: the truth the fleet
    /// rebuilds its counts from when it has lost them.
    held: DashMap<String, u32>,
    /// Shared by the openers of all worker threads.
    handshake_gates: Arc<HandshakeGates>,
    /// Whether the last heartbeat reached the fleet: routers can pick this
    /// daemon only while it is registered.
    registered: AtomicBool,
    /// A heartbeat has reached the fleet since start: readiness waits for it.
    registered_once: AtomicBool,
    /// Set on shutdown: no new sockets, no more heartbeats, not ready.
    draining: AtomicBool,
    /// Permits for gzipped streams (`--max-compressed-streams`): bounds the
    /// memory their compression contexts hold.
    pub compressed_streams: Arc<Semaphore>,
    /// Large poll answers, kept encoded for polls that repeat them.
    pub answers: AnswerCache,
    pub metrics: Arc<DaemonMetrics>,
    pub client_limits: Arc<ClientLimits>,
}

impl Daemon {
    pub fn new(
        info: DaemonInfo,
        fleet: Arc<dyn Fleet>,
        settings: DaemonSettings,
        client_limits: ClientLimits,
        registry: &Registry,
    ) -> Self {
        let capacity = info.capacity;
        let compressed_streams = Arc::new(Semaphore::new(settings.stream.max_compressed));
        Daemon {
            info,
            fleet,
            settings,
            sockets: DashMap::new(),
            held: DashMap::new(),
            handshake_gates: Arc::default(),
            registered: AtomicBool::new(false),
            registered_once: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            compressed_streams,
            answers: AnswerCache::default(),
            metrics: Arc::new(DaemonMetrics::new(registry, capacity)),
            client_limits: Arc::new(client_limits),
        }
    }

    pub fn info(&self) -> &DaemonInfo {
        &self.info
    }

    pub fn fleet(&self) -> &Arc<dyn Fleet> {
        &self.fleet
    }

    /// Registered in the fleet and not draining: routers may pick it.
    pub fn is_registered(&self) -> bool {
        self.registered.load(Ordering::Acquire)
    }

    pub fn has_registered(&self) -> bool {
        self.registered_once.load(Ordering::Acquire)
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The socket a request names; unknown ids are counted against the
    /// client's address (see [`ClientLimits::unknown_socket`]).
    pub fn socket(&self, ip: std::net::IpAddr, id: &str) -> Result<SocketHandle, RequestError> {
        self.sockets.get(id).map(|s| s.handle.clone()).ok_or_else(|| {
            self.metrics.unknown_sockets.inc();
            self.client_limits.unknown_socket(ip)
        })
    }

    /// Whether the socket was created from the page origin `origin`.
    pub fn socket_created_from(&self, id: &str, origin: &[u8]) -> bool {
        self.sockets.get(id).is_some_and(|s| s.origin.as_deref().is_some_and(|o| o.as_bytes() == origin))
    }

    /// Keeps the registry entry alive until the daemon drains, beating as
    /// often as the fleet asks (more seldom in a large fleet, never more often
    /// than `--heartbeat-interval`). The entry expires after two missed
    /// beats, so a dead daemon leaves selection fast.
    pub async fn heartbeat(self: Arc<Self>) {
        let min_interval = self.settings.heartbeat_interval;
        let mut interval = min_interval;
        let mut reconcile = false;
        while !self.draining.load(Ordering::Acquire) {
            let holdings = || self.held.iter().map(|entry| (entry.key().clone(), *entry.value())).collect();
            let beat = Heartbeat {
                daemon: &self.info,
                min_interval,
                interval,
                registered_before: self.has_registered(),
                holdings: &holdings,
                reconcile,
            };
            let beat = self.fleet.heartbeat(&beat).await;
            reconcile = beat.is_err();
            interval = beat.as_ref().map_or(min_interval, |renewal| renewal.next_in);
            let beat = beat.map(|renewal| renewal.registration);
            let was_registered = self.registered.swap(beat.is_ok(), Ordering::AcqRel);
            self.metrics.fleet_registered.set(i64::from(beat.is_ok()));
            let registered_before = self.registered_once.swap(beat.is_ok() || self.has_registered(), Ordering::AcqRel);
            match beat {
                Ok(Registration::Revived) => log::warn!(
                    "registered again as {}: its entry had expired (the daemon was paused or cut off), so routers \
                     had stopped choosing it",
                    self.info.id
                ),
                // The fleet had lost this daemon: Redis restarted empty.
                Ok(Registration::Created) if registered_before => log::warn!(
                    "registered again as {} ({}) with {} socket(s): the fleet had lost this daemon's entry",
                    self.info.id,
                    self.info.fqdn,
                    self.sockets.len()
                ),
                Ok(_) if !was_registered => log::info!("registered as {} ({})", self.info.id, self.info.fqdn),
                Err(e) if was_registered => log::warn!("heartbeat failed, retrying: {e}"),
                _ => {}
            }
            tokio::time::sleep(interval).await;
        }
    }

    /// Drops per-client state of quiet addresses now and then.
    pub async fn forget_idle_clients(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(FORGET_IDLE_EVERY);
        loop {
            ticks.tick().await;
            self.client_limits.forget_idle();
        }
    }

    /// Starts this worker thread's share of the daemon's work: it takes
    /// create requests from an inbox of its own, opens their upstreams and
    /// owns the sockets (awc is `!Send`), so owners spread over the cores and
    /// a request often finds its socket's owner on its own thread. A create
    /// thus runs on one thread from pop to reply, and so do the pooled Redis
    /// connections it uses: with 200 daemons sharing two cores, each wake-up
    /// of a second thread per create cost about 70 µs
    /// (scripts/fleet-real.sh). A worker stalled for longer than the
    /// router's accept timeout is passed over, as a silent daemon is; the
    /// heartbeat runs on the main thread, so a stall shorter than the entry's
    /// life does not drop the daemon's registration. Called on each HTTP
    /// worker as it starts.
    pub fn start_worker(self: &Arc<Self>) {
        let opener = Rc::new(Opener::new(self.settings.open.clone(), self.handshake_gates.clone()));
        actix_web::rt::spawn(self.clone().serve_creates(opener));
    }

    /// Takes create requests from the fleet until the daemon drains.
    /// (Requests in flight are bounded by the capacity the fleet reserved
    /// for them, hence a task for each.)
    async fn serve_creates(self: Arc<Self>, opener: Rc<Opener>) {
        let mut inbox = self.fleet.inbox(&self.info.id);
        let mut outage = Outage::new("taking create requests");
        while !self.is_draining() {
            match inbox.next_request().await {
                // Not awaited: the next request need not wait for this one's reply.
                Ok(Some(request)) => {
                    outage.ended();
                    actix_web::rt::spawn(self.clone().create(opener.clone(), request));
                }
                Ok(None) => outage.ended(),
                Err(e) => {
                    outage.failed(&e);
                    tokio::time::sleep(RETRY_DELAY).await;
                }
            }
        }
    }

    async fn create(self: Arc<Self>, opener: Rc<Opener>, request: EstablishRequest) {
        if self.fleet.now_ms() > request.accept_by_ms || self.is_draining() {
            log::warn!("dropping create request {}: taken too late", request.id);
            self.release(&request.token).await;
            return;
        }
        // The fleet's count of this daemon's sockets can be behind (a Redis
        // that restarted empty): the daemon itself has the last word.
        let queued = usize::try_from(self.metrics.queued_bytes.get()).unwrap_or(0);
        if self.sockets.len() >= self.info.capacity as usize || queued >= self.settings.socket.max_daemon_queue_bytes {
            log::warn!(
                "create {} refused: daemon is full ({} sockets, {queued} bytes queued)",
                request.id,
                self.sockets.len()
            );
            self.release(&request.token).await;
            let failed = EstablishReply::Failed {
                request_id: request.id.clone(),
                kind: OpenFailure::DaemonFull,
                status: None,
                error: "daemon is full".into(),
            };
            let _ = self.fleet.reply(&request, failed).await;
            return;
        }
        // An upstream that opens quickly is answered with the outcome alone.
        // A slow one is accepted first, well within the router's deadline
        // for that, so the router knows this daemon took it and waits on.
        let mut opening = std::pin::pin!(self.open(&opener, &request));
        let reply = match tokio::time::timeout(accept_within(&request, self.fleet.now_ms()), &mut opening).await {
            Ok(reply) => reply,
            Err(_) => {
                let accepted = EstablishReply::Accepted { request_id: request.id.clone() };
                if let Err(e) = self.fleet.reply(&request, accepted).await {
                    log::warn!("could not accept create request {}: {e}", request.id);
                }
                opening.await
            }
        };
        // A reply past the request's deadline is refused by the fleet
        // itself, on its clock: `heard` is the whole answer.
        let heard = self.fleet.reply(&request, reply.clone()).await;
        if let (EstablishReply::Open { socket, .. }, false) = (&reply, matches!(heard, Ok(true))) {
            // Nobody will ever learn this socket's id: close it at once.
            log::warn!("socket {}: the router gave up waiting; closing", socket_tag(socket));
            self.sockets.remove(socket);
        }
    }

    /// Opens the upstream a request names and adopts it: the outcome to
    /// tell the router.
    async fn open(self: &Arc<Self>, opener: &Opener, request: &EstablishRequest) -> EstablishReply {
        let timer = self.metrics.handshake_seconds.start_timer();
        let opened = opener.open(request).await;
        timer.observe_duration();
        match opened {
            Ok(opened) => {
                let socket = new_socket_id();
                let fqdn = self.settings.hosts.socket_host(&new_dns_label());
                self.adopt(socket.clone(), request, opened.upstream);
                EstablishReply::Open { request_id: request.id.clone(), fqdn, socket, protocol: opened.protocol }
            }
            Err(e) => {
                log::info!("create {} failed: {e}", request.id);
                self.release(&request.token).await;
                EstablishReply::Failed {
                    request_id: request.id.clone(),
                    kind: e.kind(),
                    status: e.status(),
                    error: e.to_string(),
                }
            }
        }
    }

    /// Starts the owner task of a freshly opened upstream.
    fn adopt(self: &Arc<Self>, socket: String, request: &EstablishRequest, upstream: Upstream) {
        let token = request.token.as_str();
        let new = socket::new_socket(upstream, self.settings.socket.clone(), self.metrics.clone());
        let origin = request.origin.as_deref().map(Box::from);
        self.sockets.insert(socket.clone(), OpenSocket { handle: new.handle, token: token.to_owned(), origin });
        *self.held.entry(token.to_owned()).or_default() += 1;
        self.metrics.sockets_open.inc();
        let (daemon, token) = (self.clone(), token.to_owned());
        actix_web::rt::spawn(async move {
            // The slot is free once the upstream is gone, even while the
            // client has yet to read the close.
            let _ = new.upstream_ended.await;
            daemon.held.remove_if_mut(&token, |_, held| {
                *held -= 1;
                *held == 0
            });
            daemon.release(&token).await;
        });
        let daemon = self.clone();
        actix_web::rt::spawn(async move {
            log::info!("socket {}: open", socket_tag(&socket));
            let end = new.owner.await;
            daemon.sockets.remove(&socket);
            daemon.metrics.sockets_open.dec();
            daemon.metrics.closed(match end {
                _ if daemon.is_draining() => "drained",
                End::Delivered { .. } => "delivered",
                End::Idle => "idle",
                End::Abandoned => "abandoned",
            });
            log::info!("socket {}: ended ({end:?})", socket_tag(&socket));
        });
    }

    async fn release(&self, token: &str) {
        if let Err(e) = self.fleet.release(token, &self.info.id).await {
            log::warn!("could not release a connection slot: {e}");
        }
    }

    /// Closes the sockets of a token that was revoked with `--close-sockets`
    /// (1008, policy violation: the upstream and the client are told why).
    pub fn close_sockets_of(&self, token: &str) {
        let revoked = CloseReason { code: CloseCode::Policy, description: Some("token revoked".into()) };
        for entry in self.sockets.iter().filter(|entry| entry.token == token) {
            log::info!("socket {}: closing, its token was revoked", socket_tag(entry.key()));
            let (handle, reason) = (entry.handle.clone(), revoked.clone());
            tokio::spawn(async move { handle.close(Some(reason)).await });
        }
    }

    /// Leaves the fleet and closes every socket with 1001 "going away",
    /// waiting up to `grace` for clients to read their close.
    pub async fn drain(&self, grace: Duration) {
        log::info!("draining {} socket(s)", self.sockets.len());
        self.draining.store(true, Ordering::Release);
        self.registered.store(false, Ordering::Release);
        self.metrics.draining.set(1);
        self.metrics.fleet_registered.set(0);
        if let Err(e) = self.fleet.deregister(&self.info.id).await {
            log::warn!("could not deregister: {e}");
        }
        let deadline = tokio::time::Instant::now() + grace;
        let handles: Vec<SocketHandle> = self.sockets.iter().map(|entry| entry.handle.clone()).collect();
        let going_away = CloseReason { code: CloseCode::Away, description: Some("going away".into()) };
        let closes = futures_util::future::join_all(handles.iter().map(|h| h.close(Some(going_away.clone()))));
        // Owners take commands whatever their upstream does, but the grace
        // is the operator's promise: nothing here may outlast it.
        let _ = tokio::time::timeout_at(deadline, closes).await;
        let mut progress = tokio::time::interval_at(tokio::time::Instant::now() + DRAIN_PROGRESS, DRAIN_PROGRESS);
        while !self.sockets.is_empty() && tokio::time::Instant::now() < deadline {
            tokio::select! {
                _ = progress.tick() => log::info!("draining: {} socket(s) left", self.sockets.len()),
                () = tokio::time::sleep(DRAIN_CHECK) => {}
            }
        }
        log::info!("drained; {} socket(s) left unread", self.sockets.len());
        // Dropping the last handles makes the remaining owners end.
        self.sockets.clear();
    }
}

/// Longest an open goes unanswered before the daemon tells the router it
/// took the request: most upstreams open faster, and each reply is a
/// message Redis and the router handle.
const ANSWER_QUICK_OPENS_WITHIN: Duration = Duration::from_millis(250);

/// How long to wait for the open before accepting `request`: at most half
/// the time the router leaves for the acceptance.
fn accept_within(request: &EstablishRequest, fleet_now: u64) -> Duration {
    let left = Duration::from_millis(request.accept_by_ms.saturating_sub(fleet_now));
    ANSWER_QUICK_OPENS_WITHIN.min(left / 2)
}

/// A socket id: 128 bits of which 122 are random (UUID v4), so ids cannot be
/// guessed or enumerated.
fn new_socket_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// A fresh DNS label, so each socket gets its own host name (and browsers
/// their own connection pool per socket).
fn new_dns_label() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("s{}", &random[..12])
}
