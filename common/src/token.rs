//! Token records: who may open sockets, from which pages, to which targets.

use crate::target::{Target, glob_match, normalize_pattern};
use crate::wire::Secret;
use actix_web::http::header::{HeaderName, HeaderValue};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One token as written in the tokens file and stored in the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRecord {
    pub token: String,
    /// Globs matched against the normalized target URL; a pattern without a
    /// port means the scheme's default port.
    pub targets: Vec<String>,
    /// Page origins allowed to use the token, as globs; `*` allows any page,
    /// including clients that send no origin at all (curl).
    pub origins: Vec<String>,
    /// Sockets the token may hold open at once, fleet-wide.
    pub max_connections: u32,
    /// Non-public networks this token may reach on purpose (e.g. an internal
    /// WebSocket service), although daemons refuse non-public addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_private: Vec<IpNet>,
    /// How the token is named in metrics (tokens are secrets and never
    /// appear there); without it, a hash of the token names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Headers the daemon adds to every upstream handshake for this token
    /// (an API key the page must never see); see [`TokenRecord::validate`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub upstream_headers: BTreeMap<String, Secret>,
    /// Whether a client may hand a bearer credential to `/create` (`bearer=`
    /// or `Authorization: Bearer`) for the daemon to send upstream as
    /// `Authorization: Bearer ...`. Off unless the operator turns it on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_bearer: bool,
}

/// Headers a token may not set upstream: the connection's own (RFC 9110
/// §7.6.1 hop-by-hop), the WebSocket handshake's, and those the bridge sets
/// itself (`Origin` is the page's, `X-Forwarded-For` the client's).
const RESERVED_HEADERS: [&str; 13] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "origin",
    "x-forwarded-for",
];

impl TokenRecord {
    /// Checks what serde cannot: a non-empty token and upstream headers that
    /// are valid HTTP and leave the handshake to the bridge.
    pub fn validate(&self) -> Result<(), String> {
        if self.token.is_empty() {
            return Err("empty token".into());
        }
        for (name, value) in &self.upstream_headers {
            let parsed = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("upstream header {name:?} is not a valid header name"))?;
            let lower = parsed.as_str();
            if RESERVED_HEADERS.contains(&lower) || lower.starts_with("sec-websocket-") {
                return Err(format!(
                    "upstream header {name:?} is not allowed: hop-by-hop and WebSocket handshake headers are the bridge's"
                ));
            }
            if lower == "authorization" && self.forward_bearer {
                return Err("an Authorization upstream header and forward_bearer exclude each other".into());
            }
            HeaderValue::from_str(&value.0)
                .map_err(|_| format!("upstream header {name:?} has a value that is not a valid header value"))?;
        }
        Ok(())
    }

    /// The token's name in metric labels: the operator's `label`, or
    /// `t-` and 12 hex digits of its SHA-1, which cannot be turned back
    /// into the token.
    pub fn metric_label(&self) -> String {
        use sha1::Digest;
        self.label.clone().unwrap_or_else(|| {
            let digest = sha1::Sha1::digest(self.token.as_bytes());
            format!("t-{}", digest.iter().take(6).map(|b| format!("{b:02x}")).collect::<String>())
        })
    }
}

/// The tokens file: `{"tokens":[...]}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokensFile {
    pub tokens: Vec<TokenRecord>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokensFileError {
    #[error("cannot read tokens file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("invalid tokens file {path}: {source}")]
    Parse { path: String, source: serde_json::Error },
    #[error("invalid tokens file {path}: {reason}")]
    Invalid { path: String, reason: String },
}

impl TokensFile {
    pub fn load(path: &Path) -> Result<Self, TokensFileError> {
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| TokensFileError::Read { path: shown.clone(), source })?;
        let file: TokensFile =
            serde_json::from_str(&text).map_err(|source| TokensFileError::Parse { path: shown.clone(), source })?;
        for record in &file.tokens {
            record.validate().map_err(|reason| TokensFileError::Invalid {
                path: shown.clone(),
                reason: format!("{reason} (token labelled {})", record.metric_label()),
            })?;
        }
        Ok(file)
    }
}

/// Why a token refuses a create; the messages are part of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("origin not allowed")]
    Origin,
    #[error("target not allowed")]
    Target,
}

impl TokenRecord {
    /// Checks the page origin and the target against the token's patterns.
    pub fn authorize(&self, origin: Option<&str>, target: &Target) -> Result<(), Refusal> {
        let origin_ok = self.origins.iter().any(|pattern| match origin {
            _ if pattern == "*" => true,
            Some(origin) => glob_match(pattern, origin),
            None => false,
        });
        if !origin_ok {
            return Err(Refusal::Origin);
        }
        if !self.targets.iter().any(|pattern| glob_match(&normalize_pattern(pattern), target.as_str())) {
            return Err(Refusal::Target);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(origins: &[&str]) -> TokenRecord {
        TokenRecord {
            token: "t".into(),
            targets: vec!["ws://127.0.0.1:*/*".into(), "wss://*.example.com/*".into()],
            origins: origins.iter().map(|s| s.to_string()).collect(),
            max_connections: 1,
            allow_private: Vec::new(),
            label: None,
            upstream_headers: BTreeMap::new(),
            forward_bearer: false,
        }
    }

    fn with_headers(headers: &[(&str, &str)], forward_bearer: bool) -> TokenRecord {
        let upstream_headers = headers.iter().map(|(n, v)| (n.to_string(), Secret(v.to_string()))).collect();
        TokenRecord { upstream_headers, forward_bearer, ..record(&["*"]) }
    }

    #[test]
    fn upstream_headers_leave_the_handshake_to_the_bridge() {
        assert_eq!(with_headers(&[("X-Api-Key", "k"), ("Authorization", "Basic eA==")], false).validate(), Ok(()));
        for reserved in ["Connection", "upgrade", "Host", "Sec-WebSocket-Protocol", "sec-websocket-key", "Origin"] {
            let refused = with_headers(&[(reserved, "x")], false).validate().unwrap_err();
            assert!(refused.contains("is not allowed"), "{reserved}: {refused}");
        }
        assert!(with_headers(&[("bad name", "x")], false).validate().unwrap_err().contains("not a valid header name"));
        assert!(
            with_headers(&[("X-A", "line\nbreak")], false).validate().unwrap_err().contains("not a valid header value")
        );
        let both = with_headers(&[("authorization", "Basic eA==")], true).validate().unwrap_err();
        assert!(both.contains("exclude each other"), "{both}");
        assert!(TokenRecord { token: String::new(), ..record(&["*"]) }.validate().is_err());
    }

    #[test]
    fn upstream_header_values_never_show_in_debug() {
        let shown = format!("{:?}", with_headers(&[("X-Api-Key", "hunter2")], false));
        assert!(shown.contains("X-Api-Key") && !shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn metrics_name_a_token_without_revealing_it() {
        let hashed = record(&["*"]).metric_label();
        assert!(hashed.starts_with("t-") && hashed.len() == 14, "{hashed}");
        assert_eq!(hashed, record(&["*"]).metric_label(), "stable, so dashboards can follow a token");
        let labelled = TokenRecord { label: Some("shop".into()), ..record(&["*"]) };
        assert_eq!(labelled.metric_label(), "shop");
    }

    #[test]
    fn origin_rules() {
        let target = Target::parse("ws://127.0.0.1:9/x").unwrap();
        assert_eq!(record(&["*"]).authorize(None, &target), Ok(()));
        let strict = record(&["https://app.example.com", "https://*.test"]);
        assert_eq!(strict.authorize(Some("https://app.example.com"), &target), Ok(()));
        assert_eq!(strict.authorize(Some("https://a.test"), &target), Ok(()));
        assert_eq!(strict.authorize(Some("https://evil.com"), &target), Err(Refusal::Origin));
        assert_eq!(strict.authorize(None, &target), Err(Refusal::Origin));
    }

    #[test]
    fn target_rules() {
        let token = record(&["*"]);
        let allowed = Target::parse("wss://chat.example.com/socket").unwrap();
        let refused = Target::parse("ws://10.0.0.1/").unwrap();
        assert_eq!(token.authorize(None, &allowed), Ok(()));
        assert_eq!(token.authorize(None, &refused), Err(Refusal::Target));
    }

    #[test]
    fn private_networks_are_optional() {
        let lan: TokenRecord = serde_json::from_str(
            r#"{"token":"lan","targets":["ws://*"],"origins":["*"],"max_connections":1,"allow_private":["10.1.0.0/16"]}"#,
        )
        .unwrap();
        assert!(lan.allow_private[0].contains(&"10.1.2.3".parse::<std::net::IpAddr>().unwrap()));
        assert!(!serde_json::to_string(&record(&["*"])).unwrap().contains("allow_private"));
    }

    #[test]
    fn parses_the_documented_file() {
        let file: TokensFile = serde_json::from_str(
            r#"{"tokens":[{"token":"dev","targets":["ws://127.0.0.1:*/*","wss://*.example.com/*"],"origins":["*"],"max_connections":100}]}"#,
        )
        .unwrap();
        assert_eq!(file.tokens[0].max_connections, 100);
        assert!(file.tokens[0].upstream_headers.is_empty() && !file.tokens[0].forward_bearer);
        let record = &serde_json::from_str::<TokensFile>(
            r#"{"tokens":[{"token":"t","targets":["wss://*"],"origins":["*"],"max_connections":1,"upstream_headers":{"X-Api-Key":"k"},"forward_bearer":true}]}"#,
        )
        .unwrap()
        .tokens[0];
        assert_eq!(record.upstream_headers["X-Api-Key"], Secret("k".into()));
        assert!(record.forward_bearer);
    }
}
