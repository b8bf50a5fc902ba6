//! An in-process fleet for standalone mode and tests.

use super::{DaemonInfo, Fleet, FleetError, Heartbeat, Inbox, Registration, Renewal, Reservation};
use crate::token::TokenRecord;
use crate::wire::{EstablishReply, EstablishRequest};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long [`Inbox::next_request`] waits before returning `None`.
const INBOX_WAIT: Duration = Duration::from_secs(1);
/// Requests a daemon may have queued before routers are told it is busy.
const INBOX_CAPACITY: usize = 1024;

#[derive(Default)]
pub struct MemoryFleet {
    /// Shared with the daemons' inboxes.
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    tokens: HashMap<String, TokenRecord>,
    daemons: HashMap<String, Daemon>,
    /// Open sockets per token, per daemon, so a dead daemon's slots vanish with it.
    slots: HashMap<String, HashMap<String, u32>>,
    waiting: HashMap<String, mpsc::Sender<EstablishReply>>,
}

struct Daemon {
    info: DaemonInfo,
    load: u32,
    expires_at: Instant,
    /// Left out of selection until then (it left a create unanswered).
    suspect_until: Option<Instant>,
    inbox_tx: mpsc::Sender<EstablishRequest>,
    inbox_rx: Arc<tokio::sync::Mutex<mpsc::Receiver<EstablishRequest>>>,
}

impl MemoryFleet {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    // A panic while holding the lock cannot leave the maps half-updated in
    // a way later callers would misread, so recover from poisoning.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl State {
    fn drop_expired(&mut self, now: Instant) {
        self.daemons.retain(|_, d| d.expires_at > now);
        let daemons = &self.daemons;
        for per_daemon in self.slots.values_mut() {
            per_daemon.retain(|id, _| daemons.contains_key(id));
        }
    }
}

#[async_trait]
impl Fleet for MemoryFleet {
    async fn store_tokens(&self, tokens: &[TokenRecord]) -> Result<(), FleetError> {
        let mut state = self.state();
        for record in tokens {
            state.tokens.insert(record.token.clone(), record.clone());
        }
        Ok(())
    }

    async fn restore_tokens(&self, _tokens: &[TokenRecord]) -> Result<bool, FleetError> {
        // Memory lives as long as the process: nothing is ever lost.
        Ok(false)
    }

    async fn tokens(&self) -> Result<Vec<TokenRecord>, FleetError> {
        let mut tokens: Vec<TokenRecord> = self.state().tokens.values().cloned().collect();
        tokens.sort_by(|a, b| a.token.cmp(&b.token));
        Ok(tokens)
    }

    /// Standalone mode has no admin path to ask for closing sockets; the
    /// token is removed all the same.
    async fn revoke_token(&self, token: &str, _close_sockets: bool) -> Result<bool, FleetError> {
        Ok(self.state().tokens.remove(token).is_some())
    }

    async fn token(&self, token: &str) -> Result<Option<TokenRecord>, FleetError> {
        Ok(self.state().tokens.get(token).cloned())
    }

    async fn heartbeat(&self, beat: &Heartbeat<'_>) -> Result<Renewal, FleetError> {
        // One process holds the whole fleet: its size costs nothing per beat.
        let (daemon, ttl) = (beat.daemon, beat.min_interval * 2);
        let renewal = |registration| Ok(Renewal { registration, next_in: beat.min_interval });
        let mut state = self.state();
        let now = Instant::now();
        let expires_at = now + ttl;
        match state.daemons.get_mut(&daemon.id) {
            Some(entry) => {
                let expired = entry.expires_at < now;
                entry.info = daemon.clone();
                entry.expires_at = expires_at;
                return renewal(if expired { Registration::Revived } else { Registration::Renewed });
            }
            None => {
                let (inbox_tx, inbox_rx) = mpsc::channel(INBOX_CAPACITY);
                state.daemons.insert(
                    daemon.id.clone(),
                    Daemon {
                        info: daemon.clone(),
                        // Nothing is lost in memory: only a daemon's first start creates its entry.
                        load: (beat.holdings)().iter().map(|(_, n)| n).sum(),
                        expires_at,
                        suspect_until: None,
                        inbox_tx,
                        inbox_rx: Arc::new(tokio::sync::Mutex::new(inbox_rx)),
                    },
                );
            }
        }
        renewal(Registration::Created)
    }

    async fn deregister(&self, daemon_id: &str) -> Result<(), FleetError> {
        self.state().daemons.remove(daemon_id);
        Ok(())
    }

    async fn reserve(&self, token: &str, max_connections: u32) -> Result<Reservation, FleetError> {
        let mut state = self.state();
        state.drop_expired(Instant::now());
        let held: u32 = state.slots.get(token).map(|m| m.values().sum()).unwrap_or(0);
        if held >= max_connections {
            return Err(FleetError::LimitReached);
        }
        if state.daemons.is_empty() {
            return Err(FleetError::NoDaemon);
        }
        let now = Instant::now();
        let best = state
            .daemons
            .values_mut()
            .filter(|d| d.load < d.info.capacity && d.suspect_until.is_none_or(|until| until <= now))
            .min_by(|a, b| {
                // Compare load/capacity without floating point: a.load/a.cap < b.load/b.cap.
                (u64::from(a.load) * u64::from(b.info.capacity))
                    .cmp(&(u64::from(b.load) * u64::from(a.info.capacity)))
                    .then(a.load.cmp(&b.load))
            })
            .ok_or(FleetError::NoCapacity)?;
        best.load += 1;
        let daemon_id = best.info.id.clone();
        *state.slots.entry(token.to_owned()).or_default().entry(daemon_id.clone()).or_default() += 1;
        Ok(Reservation { daemon_id, used: held + 1 })
    }

    async fn release(&self, token: &str, daemon_id: &str) -> Result<(), FleetError> {
        let mut state = self.state();
        if let Some(daemon) = state.daemons.get_mut(daemon_id) {
            daemon.load = daemon.load.saturating_sub(1);
        }
        if let Some(per_daemon) = state.slots.get_mut(token) {
            if let Some(count) = per_daemon.get_mut(daemon_id) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    per_daemon.remove(daemon_id);
                }
            }
            if per_daemon.is_empty() {
                state.slots.remove(token);
            }
        }
        Ok(())
    }

    async fn establish(&self, daemon_id: &str, request: EstablishRequest) -> Result<EstablishReply, FleetError> {
        let (reply_tx, mut replies) = mpsc::channel(super::REPLIES_PER_CREATE);
        let request_id = request.id.clone();
        {
            let mut state = self.state();
            let inbox = state.daemons.get(daemon_id).ok_or(FleetError::NoDaemon)?.inbox_tx.clone();
            inbox.try_send(request.clone()).map_err(|_| FleetError::NoAnswer)?;
            state.waiting.insert(request_id.clone(), reply_tx);
        }
        let outcome = super::await_outcome(&mut replies, &request, self.now_ms()).await;
        self.state().waiting.remove(&request_id);
        outcome
    }

    async fn mark_suspect(&self, daemon_id: &str, period: Duration) -> Result<(), FleetError> {
        if let Some(daemon) = self.state().daemons.get_mut(daemon_id) {
            daemon.suspect_until = Some(Instant::now() + period);
        }
        Ok(())
    }

    fn inbox(&self, daemon_id: &str) -> Box<dyn Inbox> {
        Box::new(MemoryInbox { state: self.state.clone(), daemon_id: daemon_id.to_owned() })
    }

    async fn reply(&self, request: &EstablishRequest, reply: EstablishReply) -> Result<bool, FleetError> {
        if self.now_ms() > request.expires_at_ms {
            return Ok(false);
        }
        let waiter = self.state().waiting.get(&request.id).cloned();
        Ok(waiter.is_some_and(|tx| tx.try_send(reply).is_ok()))
    }

    /// One process, one clock.
    fn now_ms(&self) -> u64 {
        crate::wire::unix_millis()
    }

    /// Nothing announces revocations in a single process.
    fn watch_revocations(&self, _revoked: Box<dyn Fn(String) + Send + Sync>) {}

    async fn ping(&self) -> Result<(), FleetError> {
        Ok(())
    }
}

/// The daemon's queue in [`State`], once it has registered.
struct MemoryInbox {
    state: Arc<Mutex<State>>,
    daemon_id: String,
}

#[async_trait]
impl Inbox for MemoryInbox {
    async fn next_request(&mut self) -> Result<Option<EstablishRequest>, FleetError> {
        let inbox = lock(&self.state).daemons.get(&self.daemon_id).map(|d| d.inbox_rx.clone());
        let Some(inbox) = inbox else {
            // Not registered (yet, or any more): nothing can arrive.
            tokio::time::sleep(INBOX_WAIT).await;
            return Ok(None);
        };
        let mut inbox = inbox.lock().await;
        Ok(tokio::time::timeout(INBOX_WAIT, inbox.recv()).await.ok().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(id: &str, capacity: u32) -> DaemonInfo {
        DaemonInfo { id: id.into(), fqdn: format!("{id}.localhost"), capacity }
    }

    async fn beat(fleet: &MemoryFleet, daemon: &DaemonInfo, interval: Duration) {
        let beat = Heartbeat {
            daemon,
            min_interval: interval,
            interval,
            registered_before: false,
            holdings: &Vec::new,
            reconcile: false,
        };
        fleet.heartbeat(&beat).await.unwrap();
    }

    #[tokio::test]
    async fn reserve_spreads_and_respects_limits() {
        let fleet = MemoryFleet::new();
        assert!(matches!(fleet.reserve("t", 10).await, Err(FleetError::NoDaemon)));
        let interval = Duration::from_secs(10);
        beat(&fleet, &daemon("a", 2), interval).await;
        beat(&fleet, &daemon("b", 2), interval).await;
        let mut picked = Vec::new();
        for _ in 0..4 {
            picked.push(fleet.reserve("t", 10).await.unwrap().daemon_id);
        }
        picked.sort();
        assert_eq!(picked, ["a", "a", "b", "b"]);
        assert!(matches!(fleet.reserve("t", 10).await, Err(FleetError::NoCapacity)));
        fleet.release("t", "a").await.unwrap();
        assert_eq!(fleet.reserve("t", 10).await.unwrap().daemon_id, "a");
        assert!(matches!(fleet.reserve("t", 4).await, Err(FleetError::LimitReached)));
    }

    #[tokio::test]
    async fn expired_daemons_are_not_picked_and_free_their_slots() {
        let fleet = MemoryFleet::new();
        beat(&fleet, &daemon("a", 5), Duration::from_millis(20)).await;
        fleet.reserve("t", 1).await.unwrap();
        assert!(matches!(fleet.reserve("t", 1).await, Err(FleetError::LimitReached)));
        tokio::time::sleep(Duration::from_millis(40)).await;
        beat(&fleet, &daemon("b", 5), Duration::from_secs(10)).await;
        assert_eq!(fleet.reserve("t", 1).await.unwrap().daemon_id, "b");
    }
}
