//! The daemon's shared state and its background duties: registering in the
//! fleet and opening the sockets routers hand over.

use crate::bridge::{self, End, Limits, SocketHandle};
use crate::upstream::{OpenSettings, Opener};
use dashmap::DashMap;
use polysocket_common::fleet::{DaemonInfo, Fleet};
use polysocket_common::wire::{EstablishReply, EstablishRequest, unix_millis};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Pause after a fleet error before trying again, so an unreachable Redis is
/// not hammered.
const RETRY_DELAY: Duration = Duration::from_secs(1);

/// Everything request handlers and background tasks share.
pub struct Daemon {
    pub info: DaemonInfo,
    pub fleet: Arc<dyn Fleet>,
    /// Open sockets by id. Removing an entry drops the last handle, which
    /// tells the owner task to close the upstream and end.
    pub sockets: DashMap<String, SocketHandle>,
    pub limits: Limits,
    pub max_poll_ttl: Duration,
    pub open: OpenSettings,
    pub heartbeat_interval: Duration,
    /// Whether the last heartbeat reached the fleet: routers can pick this
    /// daemon only while it is registered, so readiness follows it.
    pub registered: AtomicBool,
}

impl Daemon {
    /// Keeps the registry entry alive until the process ends. The entry
    /// expires after two missed beats, so a dead daemon leaves selection fast.
    pub async fn heartbeat(self: Arc<Self>) {
        let ttl = self.heartbeat_interval * 2;
        let mut ticks = tokio::time::interval(self.heartbeat_interval);
        loop {
            ticks.tick().await;
            let beat = self.fleet.heartbeat(&self.info, self.sockets.len() as u32, ttl).await;
            let was_registered = self.registered.swap(beat.is_ok(), Ordering::AcqRel);
            match beat {
                Ok(()) if !was_registered => log::info!("registered as {} ({})", self.info.id, self.info.fqdn),
                Err(e) if was_registered => log::warn!("heartbeat failed, retrying: {e}"),
                _ => {}
            }
        }
    }

    /// Takes create requests from the fleet and opens their sockets. Runs on
    /// an actix thread because the WebSocket client is `!Send`.
    pub async fn serve_creates(self: Arc<Self>) {
        let opener = Rc::new(Opener::new(self.open.clone()));
        loop {
            match self.fleet.next_request(&self.info.id).await {
                Ok(Some(request)) => {
                    actix_web::rt::spawn(self.clone().open_socket(opener.clone(), request));
                }
                Ok(None) => {}
                Err(e) => {
                    log::warn!("cannot take create requests: {e}");
                    tokio::time::sleep(RETRY_DELAY).await;
                }
            }
        }
    }

    async fn open_socket(self: Arc<Self>, opener: Rc<Opener>, request: EstablishRequest) {
        if unix_millis() > request.expires_at_ms {
            log::warn!("dropping create request {} that expired before it was taken", request.id);
            self.release(&request.token).await;
            return;
        }
        let reply = match opener.open(&request).await {
            Ok(opened) => {
                let socket = new_socket_id();
                let fqdn = format!("{}.{}", new_dns_label(), self.info.fqdn);
                let bridge = bridge::bridge(opened.upstream, self.limits.clone());
                self.sockets.insert(socket.clone(), bridge.handle);
                let daemon = self.clone();
                let token = request.token.clone();
                actix_web::rt::spawn(async move {
                    let _ = bridge.upstream_ended.await;
                    daemon.release(&token).await;
                });
                actix_web::rt::spawn(self.clone().own_socket(socket.clone(), bridge.owner));
                EstablishReply::Open { request_id: request.id.clone(), fqdn, socket, protocol: opened.protocol }
            }
            Err(e) => {
                log::info!("create {} failed: {e}", request.id);
                self.release(&request.token).await;
                EstablishReply::Failed { request_id: request.id.clone(), error: e.to_string() }
            }
        };
        let heard = self.fleet.reply(&request, reply.clone()).await;
        if let (EstablishReply::Open { socket, .. }, false) = (&reply, matches!(heard, Ok(true))) {
            // Nobody will ever learn this socket's id: close it at once.
            log::warn!("socket {socket}: router gave up waiting, closing");
            self.sockets.remove(socket);
        }
    }

    async fn own_socket(self: Arc<Self>, socket: String, owner: impl Future<Output = End>) {
        log::info!("socket {socket}: open");
        let end = owner.await;
        self.sockets.remove(&socket);
        log::info!("socket {socket}: ended ({end:?})");
    }

    async fn release(&self, token: &str) {
        if let Err(e) = self.fleet.release(token, &self.info.id).await {
            log::warn!("could not release a connection slot: {e}");
        }
    }
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
