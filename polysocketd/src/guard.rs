//! Per-client bounds on the daemon: how fast an address may ask for sockets
//! that do not exist (socket-id guessing), and how many polls it may hold open.

use crate::routes::BridgeError;
use actix_web::HttpRequest;
use dashmap::DashMap;
use polysocket_common::limits::{ClientArgs, KeyedLimit};
use std::net::IpAddr;
use tokio::time::Instant;

pub struct ClientGuard {
    clients: ClientArgs,
    /// Failed socket lookups per address.
    unknown: KeyedLimit<IpAddr>,
    /// Addresses that ran out of failed lookups, until when.
    blocked: DashMap<IpAddr, Instant>,
    /// Polls waiting per address.
    polls: DashMap<IpAddr, usize>,
    max_polls: usize,
}

impl ClientGuard {
    pub fn new(clients: ClientArgs, unknown_per_second: u32, max_polls: usize) -> Self {
        ClientGuard {
            clients,
            unknown: KeyedLimit::per_second(unknown_per_second),
            blocked: DashMap::new(),
            polls: DashMap::new(),
            max_polls,
        }
    }

    /// The client's address (behind trusted proxies, the one they name).
    pub fn client_ip(&self, req: &HttpRequest) -> IpAddr {
        let peer = req.peer_addr().map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        let forwarded_for = req.headers().get("x-forwarded-for").and_then(|v| v.to_str().ok());
        self.clients.client_ip(peer, forwarded_for)
    }

    /// Refuses an address that has been guessing socket ids, before any lookup.
    pub fn admit(&self, ip: IpAddr) -> Result<(), BridgeError> {
        match self.blocked.get(&ip).map(|until| *until) {
            Some(until) if until > Instant::now() => Err(BridgeError::RateLimited(until - Instant::now())),
            _ => Ok(()),
        }
    }

    /// Counts a lookup of a socket that does not exist.
    pub fn unknown_socket(&self, ip: IpAddr) -> BridgeError {
        match self.unknown.check(&ip) {
            Ok(()) => BridgeError::UnknownSocket,
            Err(wait) => {
                self.blocked.insert(ip, Instant::now() + wait);
                BridgeError::RateLimited(wait)
            }
        }
    }

    /// Holds one of the address's poll slots for as long as the slot lives.
    pub fn poll_slot(&self, ip: IpAddr) -> Result<PollSlot<'_>, BridgeError> {
        let mut count = self.polls.entry(ip).or_default();
        if *count >= self.max_polls {
            return Err(BridgeError::TooManyPolls);
        }
        *count += 1;
        Ok(PollSlot { guard: self, ip })
    }

    /// Drops state of addresses that have gone quiet.
    pub fn forget_idle(&self) {
        let now = Instant::now();
        self.blocked.retain(|_, until| *until > now);
        self.polls.retain(|_, count| *count > 0);
        self.unknown.forget_idle();
    }
}

pub struct PollSlot<'a> {
    guard: &'a ClientGuard,
    ip: IpAddr,
}

impl Drop for PollSlot<'_> {
    fn drop(&mut self) {
        if let Some(mut count) = self.guard.polls.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
        }
    }
}
