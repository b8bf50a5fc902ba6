//! Refuses upstream connections to addresses that are not on the public
//! internet, so the bridge cannot be used to reach a private network.
//!
//! The target host is resolved once, every answer is checked, and the
//! connection goes to the checked address: a DNS server that answers
//! differently the second time (rebinding) gets no second chance.

use futures_util::future::LocalBoxFuture;
use ipnet::IpNet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressRefusal {
    #[error("target host did not resolve")]
    Unresolvable,
    #[error("target address is not public")]
    NotPublic,
}

/// Which non-public addresses may be reached.
#[derive(Debug, Clone, Copy)]
pub enum Private<'a> {
    /// Any (`--allow-private-targets`).
    All,
    /// Only these networks (a token's `allow_private`).
    Only(&'a [IpNet]),
}

impl Private<'_> {
    fn allows(&self, ip: IpAddr) -> bool {
        match self {
            Private::All => true,
            Private::Only(nets) => is_public(ip) || nets.iter().any(|net| net.contains(&ip)),
        }
    }
}

/// Turns a host and port into addresses. The system resolver in production;
/// tests use one whose answers change between calls, as a rebinding DNS
/// server's would.
pub type Resolver = Rc<dyn Fn(String, u16) -> LocalBoxFuture<'static, std::io::Result<Vec<SocketAddr>>>>;

/// The operating system's resolver.
pub fn system_resolver() -> Resolver {
    Rc::new(|host, port| Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), port)).await?.collect()) }))
}

/// Resolves `host:port` once, checks every answer, and returns the address
/// to connect to.
pub async fn resolve_checked(
    resolver: &Resolver,
    host: &str,
    port: u16,
    private: Private<'_>,
) -> Result<SocketAddr, AddressRefusal> {
    let addrs = resolver(host.to_owned(), port).await.map_err(|_| AddressRefusal::Unresolvable)?;
    let first = *addrs.first().ok_or(AddressRefusal::Unresolvable)?;
    if !addrs.iter().all(|a| private.allows(a.ip())) {
        return Err(AddressRefusal::NotPublic);
    }
    Ok(first)
}

/// Whether `ip` is a globally routable unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    /// Special-purpose ranges (IANA IPv4 Special-Purpose Address Registry),
    /// plus multicast and the reserved 240/4 block.
    const NOT_PUBLIC: &[([u8; 4], u32)] = &[
        ([0, 0, 0, 0], 8),       // "this network", unspecified
        ([10, 0, 0, 0], 8),      // private
        ([100, 64, 0, 0], 10),   // carrier-grade NAT
        ([127, 0, 0, 0], 8),     // loopback
        ([169, 254, 0, 0], 16),  // link-local
        ([172, 16, 0, 0], 12),   // private
        ([192, 0, 0, 0], 24),    // IETF protocol assignments
        ([192, 0, 2, 0], 24),    // documentation
        ([192, 88, 99, 0], 24),  // 6to4 relay anycast
        ([192, 168, 0, 0], 16),  // private
        ([198, 18, 0, 0], 15),   // benchmarking
        ([198, 51, 100, 0], 24), // documentation
        ([203, 0, 113, 0], 24),  // documentation
        ([224, 0, 0, 0], 4),     // multicast
        ([240, 0, 0, 0], 4),     // reserved, including broadcast
    ];
    !NOT_PUBLIC.iter().any(|&(net, prefix)| in_v4(ip, net, prefix))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let segments = ip.segments();
    let embedded_v4 = |hi: usize| Ipv4Addr::from((u32::from(segments[hi]) << 16) | u32::from(segments[hi + 1]));
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    match segments {
        // NAT64 well-known prefix 64:ff9b::/96 carries an IPv4 address.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => return is_public_v4(embedded_v4(6)),
        // 6to4 2002::/16 carries an IPv4 address in bits 16..48.
        [0x2002, _, _, _, _, _, _, _] => return is_public_v4(embedded_v4(1)),
        _ => {}
    }
    let first = segments[0];
    let not_public = ip.is_unspecified()
        || ip.is_loopback()
        || segments[..6] == [0; 6] // IPv4-compatible (deprecated) ::a.b.c.d
        || first & 0xfe00 == 0xfc00 // unique local fc00::/7
        || first & 0xffc0 == 0xfe80 // link-local fe80::/10
        || first & 0xffc0 == 0xfec0 // site-local (deprecated) fec0::/10
        || first & 0xff00 == 0xff00 // multicast
        || (first == 0x2001 && segments[1] == 0) // Teredo 2001::/32 tunnels to anywhere
        || (first == 0x2001 && segments[1] == 0x0db8) // documentation
        || (first == 0x2001 && segments[1] & 0xfff0 == 0x0010) // ORCHID (deprecated) 2001:10::/28
        || (first == 0x2001 && segments[1] & 0xfff0 == 0x0020) // ORCHIDv2 2001:20::/28
        || (first == 0x2001 && segments[1] == 0x0002 && segments[2] == 0) // benchmarking 2001:2::/48
        || (first == 0x3fff && segments[1] & 0xf000 == 0) // documentation 3fff::/20
        || first == 0x0100 && segments[1..4] == [0; 3] // discard-only 100::/64
        || (first == 0x64 && segments[1] == 0xff9b && segments[2] == 1); // local-use NAT64
    !not_public
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public(s: &str) -> bool {
        is_public(s.parse().unwrap())
    }

    #[test]
    fn v4_ranges() {
        for ip in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "192.0.2.1",
        ] {
            assert!(!public(ip), "{ip} must not be public");
        }
        for ip in ["1.1.1.1", "8.8.8.8", "100.63.255.255", "100.128.0.0", "172.32.0.1", "198.20.0.1"] {
            assert!(public(ip), "{ip} must be public");
        }
    }

    #[test]
    fn v6_ranges() {
        for ip in [
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
            "2001::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "::127.0.0.1",
            "2001:10::1",
            "2001:20::1",
            "2001:2f:ffff::1",
            "2001:2::1",
            "2001:2:0:ffff::1",
            "3fff::1",
            "3fff:fff:ffff::1",
        ] {
            assert!(!public(ip), "{ip} must not be public");
        }
        for ip in [
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::",
            "2001:30::1",
            "2001:2:1::1",
            "3fff:1000::1",
        ] {
            assert!(public(ip), "{ip} must be public");
        }
    }

    #[tokio::test]
    async fn every_answer_is_checked() {
        let mixed: Resolver = Rc::new(|_, port| {
            Box::pin(async move {
                Ok(vec![SocketAddr::from(([127, 0, 0, 1], port)), SocketAddr::from(([8, 8, 8, 8], port))])
            })
        });
        let loopback_only = ["127.0.0.0/8".parse().unwrap()];
        // A public answer does not excuse a private one beside it, in either order.
        assert_eq!(resolve_checked(&mixed, "x", 1, Private::Only(&[])).await, Err(AddressRefusal::NotPublic));
        let private_last: Resolver = Rc::new(|_, port| {
            Box::pin(async move {
                Ok(vec![SocketAddr::from(([8, 8, 8, 8], port)), SocketAddr::from(([10, 0, 0, 1], port))])
            })
        });
        assert_eq!(
            resolve_checked(&private_last, "x", 1, Private::Only(&loopback_only)).await,
            Err(AddressRefusal::NotPublic)
        );
    }

    #[tokio::test]
    async fn resolution_refuses_loopback_unless_allowed() {
        let system = system_resolver();
        let none = Private::Only(&[]);
        assert_eq!(resolve_checked(&system, "127.0.0.1", 80, none).await, Err(AddressRefusal::NotPublic));
        assert_eq!(resolve_checked(&system, "localhost", 80, none).await, Err(AddressRefusal::NotPublic));
        let loopback = SocketAddr::from(([127, 0, 0, 1], 80));
        assert_eq!(resolve_checked(&system, "127.0.0.1", 80, Private::All).await, Ok(loopback));
        let nets = ["127.0.0.0/8".parse().unwrap()];
        assert_eq!(resolve_checked(&system, "127.0.0.1", 80, Private::Only(&nets)).await, Ok(loopback));
        let other = ["10.0.0.0/8".parse().unwrap()];
        assert_eq!(
            resolve_checked(&system, "127.0.0.1", 80, Private::Only(&other)).await,
            Err(AddressRefusal::NotPublic)
        );
    }
}
