//! Who is asking, and how often they may.
//!
//! A bridge that opens connections for strangers must bound what any one of
//! them can make it do: these are the building blocks both services use to
//! answer `429 Too Many Requests` instead of doing the work.

use actix_web::HttpRequest;
use actix_web::HttpResponse;
use actix_web::http::header::{HeaderValue, RETRY_AFTER};
use clap::Args;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::LazyLock;
use std::time::Duration;

/// The clock every limit reads. Making one (quanta's) runs CPUID several
/// times, which a virtual machine traps: about 30 µs, once per socket when
/// each made its own. A copy of this one costs nothing.
static CLOCK: LazyLock<DefaultClock> = LazyLock::new(DefaultClock::default);

/// Proxies whose `X-Forwarded-For` is believed.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// Comma-separated addresses or CIDR blocks of reverse proxies (ingress,
    /// load balancer) whose X-Forwarded-For names the real client. From
    /// anyone else the header is ignored, so it cannot be forged.
    #[arg(long, env = "POLYSOCKET_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_net)]
    pub trusted_proxies: Vec<IpNet>,
}

fn parse_net(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{text:?} is not an address or CIDR block"))
}

impl ClientArgs {
    fn trusts(&self, ip: &IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(ip))
    }

    /// The address of the client that sent `req` (see [`ClientArgs::client_ip`]).
    pub fn client_ip_of(&self, req: &HttpRequest) -> IpAddr {
        // Only test requests have no peer.
        let peer = req.peer_addr().map_or(IpAddr::from([0, 0, 0, 0]), |a| a.ip());
        // Every /s and /j request asks: without trusted proxies (or from a
        // peer that is not one) the headers are not even read.
        if !self.trusts(&peer) {
            return peer;
        }
        // Several header lines are one list, in order (RFC 9110 §5.3); a
        // line that is not text ends the walk as a malformed hop would.
        let lines: Vec<&str> =
            req.headers().get_all("x-forwarded-for").map(|line| line.to_str().unwrap_or("?")).collect();
        let forwarded_for = (!lines.is_empty()).then(|| lines.join(","));
        self.client_ip(peer, forwarded_for.as_deref())
    }

    /// The client's address: the peer, or, when the peer is a trusted
    /// proxy, the nearest address in `X-Forwarded-For` that is not one.
    pub fn client_ip(&self, peer: IpAddr, forwarded_for: Option<&str>) -> IpAddr {
        let trusted = |ip: &IpAddr| self.trusts(ip);
        if !trusted(&peer) {
            return peer;
        }
        let Some(forwarded_for) = forwarded_for else { return peer };
        let mut client = peer;
        // Each proxy appends the address it got the request from: walk back
        // from the nearest hop while the hops are our own proxies.
        for hop in forwarded_for.rsplit(',') {
            match hop.trim().parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !trusted(&ip) {
                        break;
                    }
                }
                Err(_) => break,
            }
        }
        client
    }
}

/// The key per-address limits count under: an IPv6 client gets its /64
/// (one subscriber's network, where picking a new address is free), an
/// IPv4 client (also written as v4-mapped IPv6) its address.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::MAX >> 64))),
        },
        v4 => v4,
    }
}

/// One rate limit (e.g. a socket's sends), with a burst of twice the rate:
/// a single atomic, so every socket can afford its own.
pub struct Limit {
    limiter: Option<DefaultDirectRateLimiter>,
}

impl Limit {
    /// `per_second` of 0 means no limit.
    pub fn per_second(per_second: u32) -> Self {
        Limit { limiter: quota(per_second, 2).map(|quota| RateLimiter::direct_with_clock(quota, CLOCK.clone())) }
    }

    /// Takes one unit, or says how long until one is free.
    pub fn check(&self) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        limiter.check().map_err(|not_until| not_until.wait_time_from(CLOCK.now()))
    }
}

/// `per_second`, with a burst of `burst_seconds` worth of it.
fn quota(per_second: u32, burst_seconds: u32) -> Option<Quota> {
    let burst = NonZeroU32::new(burst_seconds).expect("a burst of at least a second");
    NonZeroU32::new(per_second).map(|rate| Quota::per_second(rate).allow_burst(rate.saturating_mul(burst)))
}

/// How many seconds' worth of a keyed limit may come at once. A daemon that
/// restarts sends every client behind a NAT back to create and to ask for
/// its old socket in the same second: a storm that is legitimate, and that a
/// limit per client address or token must let through.
const KEYED_BURST_SECONDS: u32 = 10;

/// A rate limit per key (client address, token, ...), with a burst of ten
/// seconds' worth. Keys that have been quiet are forgotten by [`KeyedLimit::forget_idle`].
pub struct KeyedLimit<K: Hash + Eq + Clone> {
    limiter: Option<DefaultKeyedRateLimiter<K>>,
}

impl<K: Hash + Eq + Clone> KeyedLimit<K> {
    /// `per_second` of 0 means no limit.
    pub fn per_second(per_second: u32) -> Self {
        let limiter =
            quota(per_second, KEYED_BURST_SECONDS).map(|quota| RateLimiter::dashmap_with_clock(quota, CLOCK.clone()));
        KeyedLimit { limiter }
    }

    /// Takes one unit for `key`, or says how long until one is free.
    pub fn check(&self, key: &K) -> Result<(), Duration> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        limiter.check_key(key).map_err(|not_until| not_until.wait_time_from(CLOCK.now()))
    }

    /// Drops the state of keys back at their full allowance, so memory
    /// follows the number of active clients, not of all clients ever seen.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// `Retry-After` in whole seconds, at least one.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// Tells a rate-limited client when to come back.
pub fn insert_retry_after(response: &mut HttpResponse, wait: Duration) {
    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(retry_after_secs(wait)));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(trusted: &[&str]) -> ClientArgs {
        ClientArgs { trusted_proxies: trusted.iter().map(|t| parse_net(t).unwrap()).collect() }
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let peer: IpAddr = "10.0.0.5".parse().unwrap();
        assert_eq!(args(&[]).client_ip(peer, Some("1.2.3.4")), peer);
        let proxies = args(&["10.0.0.0/8"]);
        assert_eq!(proxies.client_ip(peer, Some("1.2.3.4")), "1.2.3.4".parse::<IpAddr>().unwrap());
        // A forged first hop is skipped: the nearest untrusted hop counts.
        assert_eq!(proxies.client_ip(peer, Some("6.6.6.6, 1.2.3.4, 10.0.0.9")), "1.2.3.4".parse::<IpAddr>().unwrap());
        assert_eq!(proxies.client_ip(peer, None), peer);
        assert_eq!(proxies.client_ip(peer, Some("garbage")), peer);
        assert_eq!(args(&["192.168.1.1"]).client_ip(peer, Some("1.2.3.4")), peer);
    }

    #[test]
    fn every_forwarded_for_line_counts() {
        use actix_web::test::TestRequest;
        let req = TestRequest::default()
            .insert_header(("x-forwarded-for", "6.6.6.6"))
            .append_header(("x-forwarded-for", "1.2.3.4, 5.6.7.8"))
            .to_http_request();
        // Test requests have no peer (0.0.0.0, trusted here); the last
        // line holds the nearest hops, and a forged first line is skipped.
        let proxies = args(&["0.0.0.0/32", "5.6.7.8"]);
        assert_eq!(proxies.client_ip_of(&req), "1.2.3.4".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn an_ipv6_client_is_limited_by_its_64() {
        let key = |ip: &str| address_key(ip.parse().unwrap());
        assert_eq!(key("2001:db8:1:2:aaaa::1"), key("2001:db8:1:2:ffff::2"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::".parse::<IpAddr>().unwrap());
        assert_eq!(key("::ffff:1.2.3.4"), key("1.2.3.4"));
        assert_ne!(key("1.2.3.4"), key("1.2.3.5"));
    }

    #[test]
    fn keyed_limits() {
        let limit = KeyedLimit::per_second(1);
        assert!((0..10).all(|_| limit.check(&"a").is_ok()), "a burst of ten seconds' worth");
        let wait = limit.check(&"a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1));
        assert_eq!(limit.check(&"b"), Ok(()), "keys are independent");
        let unlimited = KeyedLimit::per_second(0);
        assert!((0..1000).all(|_| unlimited.check(&"a").is_ok()));
    }

    #[test]
    fn single_limit() {
        let limit = Limit::per_second(1);
        assert!(limit.check().is_ok() && limit.check().is_ok());
        assert!(limit.check().is_err());
        assert!((0..1000).all(|_| Limit::per_second(0).check().is_ok()));
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
