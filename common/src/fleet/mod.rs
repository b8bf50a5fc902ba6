//! The fleet: everything routers and daemons coordinate on.
//!
//! Routers and daemons never talk to each other directly; they share a
//! [`Fleet`]. [`RedisFleet`] is the production backend; [`MemoryFleet`] runs
//! the single-process standalone mode and fast tests with the same behaviour.
//!
//! The per-message data path never touches the fleet: it is used for tokens,
//! the daemon registry, connection accounting and the create hand-off only.

mod memory;
mod redis;

pub use self::memory::MemoryFleet;
pub use self::redis::{CLUSTER_SCHEME, RedisFleet, SENTINEL_SCHEME};

use crate::token::TokenRecord;
use crate::wire::{EstablishReply, EstablishRequest};
use async_trait::async_trait;
use prometheus::IntCounter;
use std::sync::LazyLock;
use std::time::Duration;

/// A daemon as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaemonInfo {
    pub id: String,
    /// The public name clients reach the daemon by, `{uniq}.` prepended.
    pub fqdn: String,
    /// Most sockets the daemon will hold.
    pub capacity: u32,
}

/// What a daemon tells the fleet with each heartbeat.
pub struct Heartbeat<'a> {
    pub daemon: &'a DaemonInfo,
    /// The daemon's own heartbeat interval: the shortest the fleet asks for.
    pub min_interval: Duration,
    /// The interval the daemon beats at now (what the last beat asked for):
    /// after Redis lost its data, creates wait for this long twice, so every
    /// daemon has registered again first.
    pub interval: Duration,
    /// The daemon has been registered before: finding its entry gone means
    /// the fleet lost it (it expired, or Redis lost its data).
    pub registered_before: bool,
    /// The sockets it holds, per token: called only when the fleet must
    /// rebuild the daemon's entry, so counts come back from the truth.
    pub holdings: &'a (dyn Fn() -> Vec<(String, u32)> + Sync),
    /// The last beat failed: while the fleet was out of reach it may have
    /// lost writes (a Redis failover promotes a replica that missed the
    /// last ones) or kept reservations whose creates then failed, so the
    /// daemon's holdings replace the counts the fleet has for it.
    pub reconcile: bool,
}

/// What a heartbeat found, and when the next one is due: the entry lives
/// for two of those intervals unless renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Renewal {
    pub registration: Registration,
    pub next_in: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// The entry was live: renewed.
    Renewed,
    /// The entry had expired (the daemon was out of selection) but still
    /// held its counts: the daemon was paused or cut off, not dead.
    Revived,
    /// There was no entry: built afresh from the daemon's holdings.
    Created,
}

/// A create's claim on a token slot and a daemon's capacity, taken together so
/// neither can be taken without the other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    pub daemon_id: String,
    /// Sockets the token holds fleet-wide, this one included.
    pub used: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("connection limit reached")]
    LimitReached,
    #[error("no daemon available")]
    NoDaemon,
    #[error("no capacity")]
    NoCapacity,
    /// The daemon did not take the request in time: it may be dead or stuck,
    /// so another daemon can be tried.
    #[error("daemon did not answer")]
    NoAnswer,
    /// The daemon took the request but gave no outcome in time.
    #[error("create timed out")]
    Timeout,
    #[error("fleet unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Failed Redis operations, process-wide: every Redis error becomes a
/// [`FleetError`] through the conversions below, which count it.
pub(crate) static REDIS_ERRORS: LazyLock<IntCounter> = LazyLock::new(|| {
    IntCounter::new("polysocket_redis_errors_total", "Redis operations that failed").expect("valid metric")
});

impl From<::redis::RedisError> for FleetError {
    fn from(e: ::redis::RedisError) -> Self {
        REDIS_ERRORS.inc();
        FleetError::Unavailable(Box::new(e))
    }
}

#[async_trait]
pub trait Fleet: Send + Sync + 'static {
    /// Adds or replaces token records (router start-up, admin).
    async fn store_tokens(&self, tokens: &[TokenRecord]) -> Result<(), FleetError>;

    /// Stores `tokens` only if the fleet has lost every token record it was
    /// given (a Redis that restarted empty); `Ok(true)` when it did.
    async fn restore_tokens(&self, tokens: &[TokenRecord]) -> Result<bool, FleetError>;

    async fn token(&self, token: &str) -> Result<Option<TokenRecord>, FleetError>;

    /// Every token record, sorted by token.
    async fn tokens(&self) -> Result<Vec<TokenRecord>, FleetError>;

    /// Removes a token: no new creates from this moment. With
    /// `close_sockets`, daemons also close the sockets it holds (1008).
    /// `Ok(false)` when there was no such token.
    async fn revoke_token(&self, token: &str, close_sockets: bool) -> Result<bool, FleetError>;

    /// Registers the daemon or renews its entry. When the entry has to be
    /// created afresh (first start, an entry reaped as dead, or a Redis that
    /// lost its data), the daemon's holdings rebuild its load and its tokens'
    /// counts; otherwise reservations and releases keep them exact.
    async fn heartbeat(&self, beat: &Heartbeat<'_>) -> Result<Renewal, FleetError>;

    async fn deregister(&self, daemon_id: &str) -> Result<(), FleetError>;

    /// Atomically checks the token's fleet-wide connection limit and picks the
    /// least-loaded live daemon with room, claiming one slot on each.
    async fn reserve(&self, token: &str, max_connections: u32) -> Result<Reservation, FleetError>;

    /// Gives back what [`Fleet::reserve`] took, when a socket ends or fails to open.
    async fn release(&self, token: &str, daemon_id: &str) -> Result<(), FleetError>;

    /// Router side of the hand-off: delivers `request` to the daemon, waits
    /// for the daemon to take it (by `request.accept_by_ms`) and then for the
    /// outcome (by `request.expires_at_ms`). Never returns `Accepted`.
    async fn establish(&self, daemon_id: &str, request: EstablishRequest) -> Result<EstablishReply, FleetError>;

    /// Keeps `daemon_id` out of selection for `period` (it left a create
    /// unanswered); its registry entry expiring takes it out for good.
    async fn mark_suspect(&self, daemon_id: &str, period: Duration) -> Result<(), FleetError>;

    /// Daemon side of the hand-off: where one worker of `daemon_id` takes
    /// requests from. Each worker has an inbox of its own, so waiting for the
    /// next request ties up nothing another worker needs.
    fn inbox(&self, daemon_id: &str) -> Box<dyn Inbox>;

    /// Answers a request (first `Accepted`, then the outcome). `Ok(false)`
    /// means nobody was waiting any more, or the request's `expires_at_ms`
    /// has passed on the fleet's clock (a router waits a little past it, so
    /// a reply accepted is a reply heard), so the daemon must undo whatever
    /// it opened.
    async fn reply(&self, request: &EstablishRequest, reply: EstablishReply) -> Result<bool, FleetError>;

    /// Calls `revoked` with every token revoked with `close_sockets` from now
    /// on (daemons, to close that token's sockets).
    fn watch_revocations(&self, revoked: Box<dyn Fn(String) + Send + Sync>);

    /// The fleet's clock, in Unix ms: what a hand-off's `accept_by_ms` and
    /// `expires_at_ms` are set and read against, on routers and daemons
    /// alike (Redis's `TIME`, as last seen; one process's clock in memory).
    fn now_ms(&self) -> u64;

    /// Whether the backend is reachable, for readiness probes.
    async fn ping(&self) -> Result<(), FleetError>;
}

/// A daemon worker's end of the hand-off (see [`Fleet::inbox`]).
#[async_trait]
pub trait Inbox: Send {
    /// The next request, or `None` when none arrived within a short wait (so
    /// callers can check for shutdown between waits).
    async fn next_request(&mut self) -> Result<Option<EstablishRequest>, FleetError>;
}

/// Replies a router keeps for one create: the acceptance and the outcome.
const REPLIES_PER_CREATE: usize = 2;

/// How long past `expires_at_ms` a router still waits: a reply the fleet
/// took just before it is on its way.
const REPLY_GRACE: Duration = Duration::from_millis(500);

/// Waits for a daemon's replies to `request`: the acceptance by
/// `accept_by_ms`, then the outcome by `expires_at_ms` and a grace, both on
/// the fleet's clock, which reads `fleet_now` now.
async fn await_outcome(
    replies: &mut tokio::sync::mpsc::Receiver<EstablishReply>,
    request: &EstablishRequest,
    fleet_now: u64,
) -> Result<EstablishReply, FleetError> {
    let started = tokio::time::Instant::now();
    let until = |fleet_ms: u64| started + Duration::from_millis(fleet_ms.saturating_sub(fleet_now));
    let first = tokio::time::timeout_at(until(request.accept_by_ms), replies.recv()).await;
    match first.ok().flatten().ok_or(FleetError::NoAnswer)? {
        EstablishReply::Accepted { .. } => {
            let outcome = tokio::time::timeout_at(until(request.expires_at_ms) + REPLY_GRACE, replies.recv()).await;
            outcome.ok().flatten().ok_or(FleetError::Timeout)
        }
        outcome => Ok(outcome),
    }
}
