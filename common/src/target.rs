//! Upstream target URLs: validation and normalization (the `pattern`
//! module matches token patterns against them).

use std::fmt;
use url::Url;

/// Longest target URL accepted; real WebSocket endpoints are far shorter, and
/// the bound keeps pattern matching and logging cheap.
pub const MAX_TARGET_LEN: usize = 2048;

/// A validated upstream URL, normalized once: what the daemon connects to
/// and what token patterns are matched against, part by part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    url: Url,
    normalized: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("invalid target: too long")]
    TooLong,
    #[error("invalid target: not a URL")]
    NotAUrl,
    #[error("invalid target: scheme must be ws or wss")]
    Scheme,
    #[error("invalid target: missing host")]
    NoHost,
    #[error("invalid target: credentials are not allowed")]
    Userinfo,
    #[error("invalid target: fragments are not allowed")]
    Fragment,
}

impl Target {
    pub fn parse(raw: &str) -> Result<Self, TargetError> {
        if raw.len() > MAX_TARGET_LEN {
            return Err(TargetError::TooLong);
        }
        let url = Url::parse(raw).map_err(|_| TargetError::NotAUrl)?;
        if !matches!(url.scheme(), "ws" | "wss") {
            return Err(TargetError::Scheme);
        }
        let host = url.host_str().filter(|h| !h.is_empty()).ok_or(TargetError::NoHost)?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(TargetError::Userinfo);
        }
        if url.fragment().is_some() {
            return Err(TargetError::Fragment);
        }
        let port = url.port_or_known_default().ok_or(TargetError::Scheme)?;
        let mut normalized = format!("{}://{}:{}{}", url.scheme(), host, port, url.path());
        if let Some(query) = url.query() {
            normalized.push('?');
            normalized.push_str(query);
        }
        // Percent-encoding can triple a raw URL: the bound is on what is
        // kept, matched and sent upstream.
        if normalized.len() > MAX_TARGET_LEN {
            return Err(TargetError::TooLong);
        }
        Ok(Target { url, normalized })
    }

    /// The host as written in the URL; IPv6 literals keep their brackets.
    pub fn host(&self) -> &str {
        self.url.host_str().expect("checked in parse")
    }

    /// The host without IPv6 brackets, as a resolver expects it.
    pub fn host_for_lookup(&self) -> &str {
        self.host().trim_start_matches('[').trim_end_matches(']')
    }

    pub fn port(&self) -> u16 {
        self.url.port_or_known_default().expect("checked in parse")
    }

    pub fn is_secure(&self) -> bool {
        self.url.scheme() == "wss"
    }

    /// `scheme://host:port/path[?query]`, the port always explicit.
    pub fn as_str(&self) -> &str {
        &self.normalized
    }

    /// The parsed URL, for matching its parts.
    pub(crate) fn url(&self) -> &Url {
        &self.url
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.normalized)
    }
}

/// The origin (`scheme://host[:port]`) of a URL such as a `Referer`.
pub fn origin_of(url: &str) -> Option<String> {
    let url = Url::parse(url).ok()?;
    let origin = url.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_with_explicit_port() {
        let cases = [
            ("ws://Example.com/chat", "ws://example.com:80/chat"),
            ("wss://example.com", "wss://example.com:443/"),
            ("ws://127.0.0.1:9001/runCase?case=1&agent=x", "ws://127.0.0.1:9001/runCase?case=1&agent=x"),
            ("wss://[::1]:8443/a", "wss://[::1]:8443/a"),
        ];
        for (raw, normalized) in cases {
            assert_eq!(Target::parse(raw).unwrap().as_str(), normalized, "{raw}");
        }
    }

    #[test]
    fn refuses_bad_targets() {
        assert_eq!(Target::parse("http://example.com/"), Err(TargetError::Scheme));
        assert_eq!(Target::parse("example.com"), Err(TargetError::NotAUrl));
        assert_eq!(Target::parse("ws://u:p@example.com/"), Err(TargetError::Userinfo));
        assert_eq!(Target::parse("ws://example.com/#x"), Err(TargetError::Fragment));
        assert_eq!(Target::parse(&format!("ws://a/{}", "x".repeat(3000))), Err(TargetError::TooLong));
        // Found by fuzzing: short raw, long once percent-encoded.
        assert_eq!(Target::parse(&format!("ws://a/x{}y", "\u{1}".repeat(1000))), Err(TargetError::TooLong));
    }

    #[test]
    fn ipv6_host_for_lookup_has_no_brackets() {
        let target = Target::parse("ws://[::1]:1/").unwrap();
        assert_eq!(target.host(), "[::1]");
        assert_eq!(target.host_for_lookup(), "::1");
    }

    #[test]
    fn origins_of_referers() {
        assert_eq!(origin_of("https://Example.com:8443/page?x#y").as_deref(), Some("https://example.com:8443"));
        assert_eq!(origin_of("http://example.com/").as_deref(), Some("http://example.com"));
        assert_eq!(origin_of("not a url"), None);
    }
}
