//! A token's target and origin patterns, parsed into their parts.
//!
//! A pattern is never matched as a string: a `*` in a string glob crosses
//! whatever stands between it and the next literal, so `ws://*.example.com/*`
//! once admitted `ws://127.0.0.1:1/echo?.example.com:80/` and took the token's
//! upstream credentials there. Here the pattern and the URL are both parsed
//! (by the same URL parser, so both are normalized alike) and compared part by
//! part, and each `*` stays inside the part it was written in:
//!
//! - **host**: `*` alone is any host; `*.example.com` is one or more whole
//!   labels in front of `.example.com` (never `example.com` itself, never an
//!   address); anything else is one exact host. A `*` anywhere else in a host
//!   is refused when the pattern is loaded.
//! - **port**: a number, `*` for any, or nothing for the scheme's default.
//! - **path**: compared segment by segment; a `*` inside a segment never
//!   crosses a `/`, and a final `/*` stands for the rest of the path. Where a
//!   wildcard decides, an encoded `/` or `\` (`%2F`, `%5C`) is refused: servers
//!   that decode them before routing would see a path the pattern never named.
//! - **query**: a pattern without one admits any query; with one, the query is
//!   compared parameter by parameter (`&`), a `*` never crossing an `&`.
//!
//! The pattern `*` alone admits every target.

use crate::target::Target;
use std::fmt;
use url::{Host, Url};

/// Why a pattern cannot be used; it names the pattern, which is the
/// operator's own configuration, not a client's input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pattern {pattern:?}: {reason}")]
pub struct PatternError {
    pattern: String,
    reason: &'static str,
}

fn invalid(pattern: &str, reason: &'static str) -> PatternError {
    PatternError { pattern: pattern.to_owned(), reason }
}

/// Which hosts a pattern admits.
#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Exact(Host<String>),
    /// `*.example.com`, kept as `.example.com`: a name ending in it, with at
    /// least one label of its own in front.
    Below(String),
}

impl HostPattern {
    /// `scheme` picks the parser's rules (ws/wss and http/https share them).
    fn parse(scheme: &str, host: &str) -> Result<Self, &'static str> {
        if host == "*" {
            return Ok(HostPattern::Any);
        }
        let (wildcard, name) = match host.strip_prefix("*.") {
            Some(name) => (true, name),
            None => (false, host),
        };
        if name.contains('*') {
            return Err("a * in a host must be the whole host or its first label (*.example.com)");
        }
        // The URL parser would end the host at any of these and quietly keep
        // only what came before.
        if name.contains(['#', '\\', '@', '?', '/']) || name.chars().any(char::is_whitespace) {
            return Err("not a valid host");
        }
        let parsed = Url::parse(&format!("{scheme}://{name}/")).map_err(|_| "not a valid host")?;
        match (wildcard, parsed.host()) {
            (false, Some(host)) => Ok(HostPattern::Exact(host.to_owned())),
            (true, Some(Host::Domain(domain))) => Ok(HostPattern::Below(format!(".{domain}"))),
            (true, Some(_)) => Err("*. must be followed by a domain name, not an address"),
            (_, None) => Err("not a valid host"),
        }
    }

    fn matches(&self, host: Host<&str>) -> bool {
        match (self, host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Exact(Host::Domain(exact)), Host::Domain(domain)) => exact == domain,
            (HostPattern::Exact(Host::Ipv4(exact)), Host::Ipv4(ip)) => *exact == ip,
            (HostPattern::Exact(Host::Ipv6(exact)), Host::Ipv6(ip)) => *exact == ip,
            (HostPattern::Exact(_), _) => false,
            (HostPattern::Below(suffix), Host::Domain(domain)) => domain
                .strip_suffix(suffix.as_str())
                .is_some_and(|labels| !labels.is_empty() && !labels.split('.').any(str::is_empty)),
            (HostPattern::Below(_), _) => false,
        }
    }
}

/// Which ports a pattern admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortPattern {
    Any,
    Exact(u16),
}

impl PortPattern {
    fn parse(port: Option<&str>, default: u16) -> Result<Self, &'static str> {
        match port {
            None => Ok(PortPattern::Exact(default)),
            Some("*") => Ok(PortPattern::Any),
            Some(digits) if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
                digits.parse().ok().filter(|&p| p != 0).map(PortPattern::Exact).ok_or("port out of range")
            }
            Some(_) => Err("a port must be a number or *"),
        }
    }

    fn matches(self, port: u16) -> bool {
        self == PortPattern::Any || self == PortPattern::Exact(port)
    }
}

/// Splits `scheme://authority` from the rest, and the authority into host
/// and port (IPv6 literals keep their brackets).
fn split_authority(rest: &str) -> (&str, Option<&str>, &str) {
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let port_at = match authority.rfind(']') {
        Some(bracket) => authority[bracket..].find(':').map(|i| bracket + i),
        None => authority.find(':'),
    };
    match port_at {
        Some(colon) => (&authority[..colon], Some(&authority[colon + 1..]), tail),
        None => (authority, None, tail),
    }
}

/// A `*` glob over one part that holds no separator of the part around it
/// (a path segment, a query parameter). Single backtracking: linear in
/// practice and O(len(text) * len(pattern)) at worst.
fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut resume: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            pi += 1;
            resume = Some((pi, ti));
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((star_pi, star_ti)) = resume {
            pi = star_pi;
            ti = star_ti + 1;
            resume = Some((star_pi, star_ti + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Whether `text` holds a percent-encoded `/` or `\`.
fn has_encoded_separator(text: &str) -> bool {
    text.as_bytes().windows(3).any(|w| {
        w[0] == b'%'
            && (w[1] == b'2' && w[2].eq_ignore_ascii_case(&b'f') || w[1] == b'5' && w[2].eq_ignore_ascii_case(&b'c'))
    })
}

/// Compares `/`-separated paths: each segment by [`glob`], a final `/*` for
/// any rest of the path.
fn path_matches(pattern: &str, path: &str) -> bool {
    if pattern.contains('*') && has_encoded_separator(path) {
        return false;
    }
    let (fixed, rest) = match pattern.strip_suffix("/*") {
        Some(fixed) => (fixed, true),
        None => (pattern, false),
    };
    let mut segments = path.split('/');
    for wanted in fixed.split('/') {
        match segments.next() {
            Some(segment) if glob(wanted, segment) => {}
            _ => return false,
        }
    }
    // The rest wildcard needs the `/` that follows the fixed part.
    if rest { segments.next().is_some() } else { segments.next().is_none() }
}

/// Compares `&`-separated queries parameter by parameter.
fn query_matches(pattern: &str, query: &str) -> bool {
    let mut parameters = query.split('&');
    pattern.split('&').all(|wanted| parameters.next().is_some_and(|parameter| glob(wanted, parameter)))
        && parameters.next().is_none()
}

/// One of a token's target patterns.
#[derive(Clone, PartialEq, Eq)]
pub struct TargetPattern {
    /// As the operator wrote it: what it is shown and stored as.
    written: String,
    rule: Option<TargetRule>,
}

/// A pattern's parts; `None` in [`TargetPattern`] for `*`, every target.
#[derive(Debug, Clone, PartialEq, Eq)]
struct TargetRule {
    secure: bool,
    host: HostPattern,
    port: PortPattern,
    /// Normalized as target paths are (dot segments resolved, percent-encoded).
    path: String,
    query: Option<String>,
}

impl TargetPattern {
    pub fn parse(written: &str) -> Result<Self, PatternError> {
        let fail = |reason| invalid(written, reason);
        if written == "*" {
            return Ok(TargetPattern { written: written.to_owned(), rule: None });
        }
        let (scheme, rest) = written.split_once("://").ok_or_else(|| fail("must start with ws:// or wss://"))?;
        let secure = match scheme.to_ascii_lowercase().as_str() {
            "ws" => false,
            "wss" => true,
            _ => return Err(fail("must start with ws:// or wss://")),
        };
        if rest.contains('#') {
            return Err(fail("fragments are not allowed"));
        }
        let (host, port, tail) = split_authority(rest);
        if host.contains('@') {
            return Err(fail("credentials are not allowed"));
        }
        let scheme = if secure { "wss" } else { "ws" };
        let host = HostPattern::parse(scheme, host).map_err(fail)?;
        let port = PortPattern::parse(port, if secure { 443 } else { 80 }).map_err(fail)?;
        // The path and query are normalized by the parser that normalizes
        // targets: `*` is not among what it encodes.
        let normalized = Url::parse(&format!("{scheme}://h{tail}")).map_err(|_| fail("not a valid path or query"))?;
        let rule = TargetRule {
            secure,
            host,
            port,
            path: normalized.path().to_owned(),
            query: normalized.query().map(str::to_owned),
        };
        Ok(TargetPattern { written: written.to_owned(), rule: Some(rule) })
    }

    pub fn as_str(&self) -> &str {
        &self.written
    }

    pub fn matches(&self, target: &Target) -> bool {
        let Some(rule) = &self.rule else { return true };
        let url = target.url();
        rule.secure == target.is_secure()
            && url.host().is_some_and(|host| rule.host.matches(host))
            && rule.port.matches(target.port())
            && path_matches(&rule.path, url.path())
            && rule.query.as_deref().is_none_or(|wanted| query_matches(wanted, url.query().unwrap_or("")))
    }
}

impl fmt::Debug for TargetPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TargetPattern({:?})", self.written)
    }
}

impl fmt::Display for TargetPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

/// One of a token's page origin patterns: `*` (any page, and clients that
/// send no origin), or `scheme://host[:port]` with the host and port rules
/// of target patterns (`https://*.example.com`).
#[derive(Clone, PartialEq, Eq)]
pub struct OriginPattern {
    written: String,
    rule: Option<OriginRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct OriginRule {
    scheme: String,
    host: HostPattern,
    port: PortPattern,
}

impl OriginPattern {
    pub fn parse(written: &str) -> Result<Self, PatternError> {
        let fail = |reason| invalid(written, reason);
        if written == "*" {
            return Ok(OriginPattern { written: written.to_owned(), rule: None });
        }
        let (scheme, rest) = written.split_once("://").ok_or_else(|| fail("must be * or scheme://host[:port]"))?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(fail("an origin's scheme is http or https")),
        };
        let (host, port, tail) = split_authority(rest);
        if !tail.is_empty() || host.contains('@') {
            return Err(fail("an origin is only scheme://host[:port]"));
        }
        let host = HostPattern::parse(&scheme, host).map_err(fail)?;
        let port = PortPattern::parse(port, default_port).map_err(fail)?;
        Ok(OriginPattern { written: written.to_owned(), rule: Some(OriginRule { scheme, host, port }) })
    }

    /// `origin` as the page sent it (`Origin`, or the origin of `Referer`);
    /// `None` for a client that sent none, which only `*` admits.
    pub fn matches(&self, origin: Option<&str>) -> bool {
        let Some(rule) = &self.rule else { return true };
        let Some(url) = origin.and_then(|origin| Url::parse(origin).ok()) else { return false };
        // An origin is nothing but scheme, host and port.
        let bare = url.path() == "/" && url.query().is_none() && url.fragment().is_none() && url.username().is_empty();
        bare && url.scheme() == rule.scheme
            && url.host().is_some_and(|host| rule.host.matches(host))
            && url.port_or_known_default().is_some_and(|port| rule.port.matches(port))
    }

    pub fn as_str(&self) -> &str {
        &self.written
    }
}

impl fmt::Debug for OriginPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OriginPattern({:?})", self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn admits(pattern: &str, target: &str) -> bool {
        TargetPattern::parse(pattern).unwrap().matches(&Target::parse(target).unwrap())
    }

    #[test]
    fn what_the_docs_promise() {
        let kept = [
            ("ws://127.0.0.1:*/*", "ws://127.0.0.1:9001/echo"),
            ("ws://127.0.0.1:*/*", "ws://127.0.0.1:9001/runCase?case=1&agent=x"),
            ("ws://127.0.0.1:*/*", "ws://127.0.0.1:9001/"),
            ("wss://*.example.com/*", "wss://chat.example.com:443/socket"),
            ("wss://*.example.com/*", "wss://a.b.example.com/x/y"),
            ("wss://*.example.com/*", "wss://CHAT.Example.COM/socket"),
            ("ws://localhost:*/*", "ws://localhost:8080/a"),
            ("ws://h/x?y=1", "ws://h/x?y=1"),
            ("ws://h/rooms/*/feed", "ws://h/rooms/42/feed"),
            ("ws://h/run?case=*&agent=*", "ws://h/run?case=3&agent=bridge"),
            ("ws://[::1]/*", "ws://[::1]:80/a"),
            ("ws://h", "ws://h/"),
            ("wss://api.example.com:8443/v1/*", "wss://api.example.com:8443/v1/stream"),
            ("*", "wss://anything.test:1/x?y"),
            ("ws://*/*", "ws://10.1.2.3:80/x"),
        ];
        for (pattern, target) in kept {
            assert!(admits(pattern, target), "{pattern} should admit {target}");
        }
    }

    /// Every way a stranger might stretch a wildcard past its part.
    #[test]
    fn crossing_attempts_are_refused() {
        let wildcard = "ws://*.example.com/*";
        for target in [
            // The four found by the attacker's trial.
            "ws://127.0.0.1:1/echo/.example.com:80/",
            "ws://127.0.0.1:1/echo?.example.com:80/x",
            "ws://127.0.0.1:1/echo?x=.example.com:80/",
            "ws://127.0.0.1:1/.example.com:80/echo",
            // Host tricks.
            "ws://example.com/",
            "ws://evilexample.com/",
            "ws://example.com.evil.net/",
            "ws://a.example.com.evil.net/x",
            "ws://evil.net/?a.example.com",
            "ws://evil.net:80/.example.com",
            "ws://a.example.com./",
            "ws://.example.com/",
            "ws://a..example.com/",
            "ws://[::1]/.example.com",
            "ws://127.0.0.1/.example.com",
            // The port belongs to the pattern (the default one here).
            "ws://a.example.com:8080/",
            // The scheme too.
            "wss://a.example.com/",
        ] {
            assert!(!admits(wildcard, target), "{wildcard} must refuse {target}");
        }
        // Userinfo and fragments never make it to a target.
        assert!(Target::parse("ws://a.example.com@127.0.0.1/").is_err());
        assert!(Target::parse("ws://127.0.0.1/#.example.com").is_err());
        // `\` is a `/` to the URL parser: the host ends there.
        assert!(!admits(wildcard, "ws://evil.net\\.example.com/"));

        let path = "ws://h/rooms/*/feed";
        for target in
            ["ws://h/rooms/a/b/feed", "ws://h/rooms/feed", "ws://h/rooms/a%2Fb/feed", "ws://h/rooms/a%5cb/feed"]
        {
            assert!(!admits(path, target), "{path} must refuse {target}");
        }
        let rest = "ws://h/api/*";
        for target in ["ws://h/api", "ws://h/apix/y", "ws://h/api/..%2Fadmin", "ws://h/api/../admin", "ws://h/admin"] {
            assert!(!admits(rest, target), "{rest} must refuse {target}");
        }
        let query = "ws://h/run?case=*";
        for target in ["ws://h/run?case=1&admin=1", "ws://h/run", "ws://h/run?admin=1"] {
            assert!(!admits(query, target), "{query} must refuse {target}");
        }
        // A port wildcard is a port, and only a port.
        assert!(!admits("ws://127.0.0.1:*/echo", "ws://127.0.0.1:1/echo/x"));
        assert!(!admits("ws://127.0.0.1:*/echo", "ws://127.0.0.2:1/echo"));
    }

    #[test]
    fn malformed_patterns_are_refused_when_loaded() {
        for pattern in [
            "http://h/",
            "h/*",
            "ws://*h.example.com/",
            "ws://a.*.example.com/",
            "ws://example.*/",
            "ws://*.127.0.0.1/",
            "ws://*.[::1]/",
            "ws://h:8x/",
            "ws://h:0/",
            "ws://h:70000/",
            "ws://u@h/",
            "ws://h/#x",
            "ws:///x",
            "",
            "**",
        ] {
            assert!(TargetPattern::parse(pattern).is_err(), "{pattern} should be refused");
        }
        let shown = TargetPattern::parse("ws://a.*.example.com/").unwrap_err().to_string();
        assert!(shown.contains("ws://a.*.example.com/") && shown.contains("first label"), "{shown}");
    }

    #[test]
    fn patterns_are_normalized_as_targets_are() {
        assert!(admits("WS://H.Example.com:80/a/./b/../c", "ws://h.example.com/a/c"));
        assert!(admits("ws://0x7f.1/*", "ws://127.0.0.1/x"), "IPv4 forms normalized alike");
        assert!(admits("ws://bücher.example/*", "ws://xn--bcher-kva.example/x"));
    }

    #[test]
    fn origins() {
        let pattern = |p: &str| OriginPattern::parse(p).unwrap();
        assert!(pattern("*").matches(None));
        assert!(pattern("*").matches(Some("https://anything.test")));
        let app = pattern("https://app.example.com");
        assert!(app.matches(Some("https://app.example.com")));
        assert!(app.matches(Some("https://APP.example.com:443")));
        assert!(!app.matches(Some("http://app.example.com")));
        assert!(!app.matches(Some("https://app.example.com:8443")));
        assert!(!app.matches(None));
        let below = pattern("https://*.test");
        assert!(below.matches(Some("https://a.test")));
        for refused in ["https://test", "https://evil.com/.test", "https://a.test.evil.com", "https://a.test/x", "null"]
        {
            assert!(!below.matches(Some(refused)), "{refused}");
        }
        assert!(pattern("http://localhost:*").matches(Some("http://localhost:5173")));
        for bad in ["app.example.com", "https://a.test/path", "ftp://a.test", "https://a*.test"] {
            assert!(OriginPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn many_stars_do_not_backtrack_exponentially() {
        let pattern = format!("ws://h/{}", "*a".repeat(500));
        let target = Target::parse(&format!("ws://h/{}", "a".repeat(1500))).unwrap();
        let started = std::time::Instant::now();
        assert!(TargetPattern::parse(&pattern).unwrap().matches(&target));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    fn label() -> impl Strategy<Value = String> {
        "[a-z][a-z0-9]{0,7}"
    }

    proptest! {
        /// A `*.` pattern admits a host exactly when the host is a proper
        /// subdomain of its suffix, whatever is appended to the path or query.
        #[test]
        fn subdomain_wildcards_decide_on_the_host_alone(
            labels in proptest::collection::vec(label(), 0..3),
            suffix in proptest::collection::vec(label(), 1..3),
            other in label(),
            tail in "[a-z0-9./?=&:@.-]{0,24}",
        ) {
            let suffix = suffix.join(".");
            let pattern = TargetPattern::parse(&format!("ws://*.{suffix}:*/*")).unwrap();
            let mut host = labels.clone();
            host.push(suffix.clone());
            let host = host.join(".");
            if let Ok(target) = Target::parse(&format!("ws://{host}:1/{tail}")) {
                prop_assert_eq!(pattern.matches(&target), !labels.is_empty(), "{} {}", host, target);
            }
            // Whatever the tail, another host is never admitted.
            if let Ok(target) = Target::parse(&format!("ws://{other}:1/{tail}.{suffix}")) {
                prop_assert!(!pattern.matches(&target), "{}", target);
            }
        }

        /// A target always matches a pattern that is the target itself, and
        /// `*` in a path segment admits exactly one segment.
        #[test]
        fn exact_and_segment_patterns(segments in proptest::collection::vec("[a-z0-9]{1,6}", 1..5), pick in 0usize..5) {
            let path = segments.join("/");
            let target = Target::parse(&format!("ws://h:9/{path}")).unwrap();
            prop_assert!(TargetPattern::parse(target.as_str()).unwrap().matches(&target));
            let mut wild = segments.clone();
            let pick = pick % wild.len();
            wild[pick] = "*".into();
            let pattern = TargetPattern::parse(&format!("ws://h:9/{}", wild.join("/"))).unwrap();
            prop_assert!(pattern.matches(&target));
            let mut longer = segments.clone();
            longer.insert(pick, "extra".into());
            let longer = Target::parse(&format!("ws://h:9/{}", longer.join("/"))).unwrap();
            prop_assert!(!pattern.matches(&longer) || wild.last().is_some_and(|s| s == "*"));
        }
    }
}
