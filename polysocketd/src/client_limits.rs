//! Per-client bounds on the daemon: how fast an address may ask for sockets
//! that do not exist (socket-id guessing), and how many polls it may hold open.

use crate::error::RequestError;
use actix_web::HttpRequest;
use dashmap::DashMap;
use polysocket_common::limits::{ClientArgs, KeyedLimit};
use std::net::IpAddr;
use tokio::time::Instant;

pub struct ClientLimits {
    clients: ClientArgs,
    /// Failed socket lookups per address.
    unknown: KeyedLimit<IpAddr>,
    /// Addresses that ran out of failed lookups, until when.
    blocked: DashMap<IpAddr, Instant>,
    /// Polls waiting per address.
    polls: DashMap<IpAddr, usize>,
    max_polls: usize,
}

impl ClientLimits {
    pub fn new(clients: ClientArgs, unknown_per_second: u32, max_polls: usize) -> Self {
        ClientLimits {
            clients,
            unknown: KeyedLimit::per_second(unknown_per_second),
            blocked: DashMap::new(),
            polls: DashMap::new(),
            max_polls,
        }
    }

    /// The client's address (behind trusted proxies, the one they name).
    pub fn client_ip(&self, req: &HttpRequest) -> IpAddr {
        self.clients.client_ip_of(req)
    }

    /// Refuses an address that has been guessing socket ids, before any lookup.
    pub fn admit(&self, ip: IpAddr) -> Result<(), RequestError> {
        match self.blocked.get(&ip).map(|until| *until) {
            Some(until) if until > Instant::now() => Err(RequestError::RateLimited(until - Instant::now())),
            _ => Ok(()),
        }
    }

    /// Counts a lookup of a socket that does not exist.
    pub fn unknown_socket(&self, ip: IpAddr) -> RequestError {
        match self.unknown.check(&ip) {
            Ok(()) => RequestError::UnknownSocket,
            Err(wait) => {
                self.blocked.insert(ip, Instant::now() + wait);
                RequestError::RateLimited(wait)
            }
        }
    }

    /// Holds one of the address's poll slots for as long as the slot lives.
    pub fn poll_slot(&self, ip: IpAddr) -> Result<PollSlot<'_>, RequestError> {
        let mut count = self.polls.entry(ip).or_default();
        if *count >= self.max_polls {
            return Err(RequestError::TooManyPolls);
        }
        *count += 1;
        Ok(PollSlot { limits: self, ip })
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
    limits: &'a ClientLimits,
    ip: IpAddr,
}

impl Drop for PollSlot<'_> {
    fn drop(&mut self) {
        if let Some(mut count) = self.limits.polls.get_mut(&self.ip) {
            *count = count.saturating_sub(1);
        }
    }
}
