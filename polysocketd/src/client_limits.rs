//! Per-client bounds on the daemon: how fast an address may ask for sockets
//! that do not exist (socket-id guessing), and, if configured, how many polls
//! it may hold open.
//!
//! Hundreds of legitimate users can share one address (a corporate NAT), so
//! nothing here ever refuses a request for a socket that exists: a client
//! that guesses ids only slows its own guesses down.

use crate::error::RequestError;
use actix_web::HttpRequest;
use dashmap::DashMap;
use polysocket_common::limits::{ClientArgs, KeyedLimit, address_key};
use std::net::IpAddr;
use std::sync::Arc;

pub struct ClientLimits {
    clients: ClientArgs,
    /// Lookups of unknown sockets per address (an IPv6 client's /64, see
    /// [`address_key`]): past it, they get 429, not 403.
    unknown: KeyedLimit<IpAddr>,
    /// Polls waiting per address key (tracked only when `max_polls` is set).
    polls: DashMap<IpAddr, usize>,
    /// 0: no limit (a socket never has more than one poll waiting anyway).
    max_polls: usize,
}

impl ClientLimits {
    pub fn new(clients: ClientArgs, unknown_per_second: u32, max_polls: usize) -> Self {
        ClientLimits { clients, unknown: KeyedLimit::per_second(unknown_per_second), polls: DashMap::new(), max_polls }
    }

    /// The client's address (behind trusted proxies, the one they name).
    pub fn client_ip(&self, req: &HttpRequest) -> IpAddr {
        self.clients.client_ip_of(req)
    }

    /// Counts a lookup of a socket that does not exist: `403 unknown
    /// socket`, or 429 once the address has made too many.
    pub fn unknown_socket(&self, ip: IpAddr) -> RequestError {
        match self.unknown.check(&address_key(ip)) {
            Ok(()) => RequestError::UnknownSocket,
            Err(wait) => RequestError::RateLimited(wait),
        }
    }

    /// Holds one of the address's poll slots for as long as the slot lives.
    pub fn poll_slot(self: &Arc<Self>, ip: IpAddr) -> Result<Option<PollSlot>, RequestError> {
        if self.max_polls == 0 {
            return Ok(None);
        }
        let key = address_key(ip);
        let mut count = self.polls.entry(key).or_default();
        if *count >= self.max_polls {
            return Err(RequestError::TooManyPolls);
        }
        *count += 1;
        Ok(Some(PollSlot { limits: self.clone(), key }))
    }

    /// Drops state of addresses that have gone quiet.
    pub fn forget_idle(&self) {
        self.polls.retain(|_, count| *count > 0);
        self.unknown.forget_idle();
    }
}

pub struct PollSlot {
    limits: Arc<ClientLimits>,
    key: IpAddr,
}

impl Drop for PollSlot {
    fn drop(&mut self) {
        if let Some(mut count) = self.limits.polls.get_mut(&self.key) {
            *count = count.saturating_sub(1);
        }
    }
}
