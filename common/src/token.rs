//! Token records: who may open sockets, from which pages, to which targets.

use crate::pattern::{OriginPattern, TargetPattern};
use crate::target::Target;
use crate::wire::Secret;
use actix_web::http::header::{HeaderName, HeaderValue};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// One token as written in the tokens file and stored in the fleet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RecordFields")]
pub struct TokenRecord {
    pub token: String,
    /// What the token may reach, in order: the first rule whose pattern
    /// admits a target decides what that target is granted.
    pub targets: Vec<TargetRule>,
    /// Page origins allowed to use the token; `*` allows any page,
    /// including clients that send no origin at all (curl).
    pub origins: Vec<OriginPattern>,
    /// Sockets the token may hold open at once, fleet-wide.
    pub max_connections: u32,
    /// How the token is named in metrics (tokens are secrets and never
    /// appear there); without it, a hash of the token names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Whether a client may hand a bearer credential to `/create` (`bearer=`
    /// or `Authorization: Bearer`) for the daemon to send upstream as
    /// `Authorization: Bearer ...`. Off unless the operator turns it on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub forward_bearer: bool,
}

/// A target pattern and what it grants the targets it admits, and only
/// those: an API key in `upstream_headers` goes to no other host.
/// Written as the pattern alone when it grants nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum TargetRule {
    Plain(TargetPattern),
    Granting(Grants),
}

/// A pattern with grants, as written: `{"pattern": ..., "allow_private": [...],
/// "upstream_headers": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    pub pattern: TargetPattern,
    /// Non-public networks these targets may resolve to on purpose (an
    /// internal WebSocket service), although daemons refuse non-public
    /// addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_private: Vec<IpNet>,
    /// Headers the daemon adds to the upstream handshake (an API key the
    /// page must never see); see [`TokenRecord::validate`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub upstream_headers: BTreeMap<String, Secret>,
}

impl TargetRule {
    /// A rule from its parts, written plainly when it grants nothing.
    pub fn new(pattern: TargetPattern, allow_private: Vec<IpNet>, upstream_headers: BTreeMap<String, Secret>) -> Self {
        if allow_private.is_empty() && upstream_headers.is_empty() {
            TargetRule::Plain(pattern)
        } else {
            TargetRule::Granting(Grants { pattern, allow_private, upstream_headers })
        }
    }

    pub fn pattern(&self) -> &TargetPattern {
        match self {
            TargetRule::Plain(pattern) | TargetRule::Granting(Grants { pattern, .. }) => pattern,
        }
    }

    pub fn allow_private(&self) -> &[IpNet] {
        match self {
            TargetRule::Plain(_) => &[],
            TargetRule::Granting(grants) => &grants.allow_private,
        }
    }

    pub fn upstream_headers(&self) -> impl Iterator<Item = (&String, &Secret)> {
        let headers = match self {
            TargetRule::Plain(_) => None,
            TargetRule::Granting(grants) => Some(&grants.upstream_headers),
        };
        headers.into_iter().flatten()
    }
}

/// By hand: serde's untagged enums hide why a pattern was refused.
impl<'de> Deserialize<'de> for TargetRule {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Rule;

        impl<'de> serde::de::Visitor<'de> for Rule {
            type Value = TargetRule;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a target pattern, or {\"pattern\": ..., \"allow_private\": ..., \"upstream_headers\": ...}",
                )
            }

            fn visit_str<E: serde::de::Error>(self, written: &str) -> Result<TargetRule, E> {
                TargetPattern::parse(written).map(TargetRule::Plain).map_err(E::custom)
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<TargetRule, A::Error> {
                Grants::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(TargetRule::Granting)
            }
        }

        deserializer.deserialize_any(Rule)
    }
}

/// Patterns travel as the text they were written as, and are parsed (so
/// checked) wherever they are read: the tokens file, Redis, the admin CLI.
macro_rules! serde_as_written {
    ($($pattern:ident),*) => {$(
        impl Serialize for $pattern {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $pattern {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let written = String::deserialize(deserializer)?;
                $pattern::parse(&written).map_err(serde::de::Error::custom)
            }
        }
    )*};
}

serde_as_written!(TargetPattern, OriginPattern);

/// A record as written, before [`TokenRecord::validate`]; it still knows
/// the token-wide grants of earlier versions, to say where they went.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordFields {
    token: String,
    targets: Vec<TargetRule>,
    origins: Vec<OriginPattern>,
    max_connections: u32,
    #[serde(default)]
    label: Option<String>,
    #[serde(default)]
    forward_bearer: bool,
    #[serde(default)]
    allow_private: Option<serde_json::Value>,
    #[serde(default)]
    upstream_headers: Option<serde_json::Value>,
}

impl TryFrom<RecordFields> for TokenRecord {
    type Error = String;

    fn try_from(fields: RecordFields) -> Result<Self, String> {
        for (name, given) in [("allow_private", &fields.allow_private), ("upstream_headers", &fields.upstream_headers)]
        {
            if given.is_some() {
                return Err(format!(
                    "{name} belongs to a target pattern, not to the whole token: write the target as \
                     {{\"pattern\": \"wss://...\", \"{name}\": ...}} in \"targets\" (token labelled {})",
                    label_of(&fields.token, fields.label.as_deref())
                ));
            }
        }
        let record = TokenRecord {
            token: fields.token,
            targets: fields.targets,
            origins: fields.origins,
            max_connections: fields.max_connections,
            label: fields.label,
            forward_bearer: fields.forward_bearer,
        };
        record.validate()?;
        Ok(record)
    }
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
        for rule in &self.targets {
            for (name, value) in rule.upstream_headers() {
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
        }
        Ok(())
    }

    /// The token's name in metric labels: the operator's `label`, or
    /// `t-` and 12 hex digits of its SHA-1, which cannot be turned back
    /// into the token.
    pub fn metric_label(&self) -> String {
        label_of(&self.token, self.label.as_deref())
    }
}

fn label_of(token: &str, label: Option<&str>) -> String {
    label.map(str::to_owned).unwrap_or_else(|| format!("t-{}", crate::logging::one_way_hex(token, 6)))
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
}

impl TokensFile {
    pub fn load(path: &Path) -> Result<Self, TokensFileError> {
        let shown = path.display().to_string();
        let text =
            std::fs::read_to_string(path).map_err(|source| TokensFileError::Read { path: shown.clone(), source })?;
        // Every record is validated as it is read (see `RecordFields`).
        serde_json::from_str(&text).map_err(|source| TokensFileError::Parse { path: shown, source })
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
    /// Checks the page origin and the target against the token's patterns:
    /// the rule that admits the target, with what it grants.
    pub fn authorize(&self, origin: Option<&str>, target: &Target) -> Result<&TargetRule, Refusal> {
        if !self.origins.iter().any(|pattern| pattern.matches(origin)) {
            return Err(Refusal::Origin);
        }
        self.targets.iter().find(|rule| rule.pattern().matches(target)).ok_or(Refusal::Target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(origins: &[&str]) -> TokenRecord {
        TokenRecord {
            token: "t".into(),
            targets: ["ws://127.0.0.1:*/*", "wss://*.example.com/*"]
                .iter()
                .map(|p| TargetRule::Plain(TargetPattern::parse(p).unwrap()))
                .collect(),
            origins: origins.iter().map(|o| OriginPattern::parse(o).unwrap()).collect(),
            max_connections: 1,
            label: None,
            forward_bearer: false,
        }
    }

    fn with_headers(headers: &[(&str, &str)], forward_bearer: bool) -> TokenRecord {
        let upstream_headers = headers.iter().map(|(n, v)| (n.to_string(), Secret(v.to_string()))).collect();
        let rule =
            TargetRule::new(TargetPattern::parse("wss://api.example.com/*").unwrap(), Vec::new(), upstream_headers);
        TokenRecord { targets: vec![rule], forward_bearer, ..record(&["*"]) }
    }

    fn parse(json: &str) -> Result<TokenRecord, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
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
        // Reading a record validates it.
        let reserved = parse(
            r#"{"token":"t","targets":[{"pattern":"wss://h/*","upstream_headers":{"Host":"x"}}],"origins":["*"],"max_connections":1}"#,
        );
        assert!(reserved.unwrap_err().contains("is not allowed"));
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
        assert!(record(&["*"]).authorize(None, &target).is_ok());
        let strict = record(&["https://app.example.com", "https://*.test"]);
        assert!(strict.authorize(Some("https://app.example.com"), &target).is_ok());
        assert!(strict.authorize(Some("https://a.test"), &target).is_ok());
        assert_eq!(strict.authorize(Some("https://evil.com"), &target), Err(Refusal::Origin));
        assert_eq!(strict.authorize(Some("https://evil.com/.test"), &target), Err(Refusal::Origin));
        assert_eq!(strict.authorize(None, &target), Err(Refusal::Origin));
    }

    #[test]
    fn target_rules() {
        let token = record(&["*"]);
        let allowed = Target::parse("wss://chat.example.com/socket").unwrap();
        let refused = Target::parse("ws://10.0.0.1/").unwrap();
        assert!(token.authorize(None, &allowed).is_ok());
        assert_eq!(token.authorize(None, &refused), Err(Refusal::Target));
    }

    /// Grants go with the pattern that admitted the target: the first that
    /// does, in the order written.
    #[test]
    fn grants_belong_to_one_pattern() {
        let token = parse(
            r#"{"token":"t","origins":["*"],"max_connections":1,"targets":[
                {"pattern":"wss://api.example.com/v1/*","upstream_headers":{"X-Api-Key":"k"}},
                {"pattern":"ws://10.1.2.3:*/*","allow_private":["10.1.0.0/16"]},
                "wss://*.example.com/*"]}"#,
        )
        .unwrap();
        let rule = |target: &str| token.authorize(None, &Target::parse(target).unwrap()).unwrap();
        let api = rule("wss://api.example.com/v1/feed");
        assert_eq!(api.upstream_headers().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["X-Api-Key"]);
        assert!(api.allow_private().is_empty());
        let lan = rule("ws://10.1.2.3:9000/x");
        assert!(lan.allow_private()[0].contains(&"10.1.2.3".parse::<std::net::IpAddr>().unwrap()));
        assert_eq!(lan.upstream_headers().count(), 0);
        for elsewhere in ["wss://chat.example.com/x", "wss://api.example.com/v2/feed"] {
            let plain = rule(elsewhere);
            assert_eq!((plain.upstream_headers().count(), plain.allow_private().len()), (0, 0), "{elsewhere}");
        }
        // Written back as it was read: plain patterns as strings.
        let again = serde_json::to_string(&token).unwrap();
        assert!(again.contains(r#""wss://*.example.com/*"]"#), "{again}");
        assert_eq!(parse(&again).unwrap(), token);
    }

    #[test]
    fn token_wide_grants_say_where_they_went() {
        for field in [r#""allow_private":["10.0.0.0/8"]"#, r#""upstream_headers":{"X-Api-Key":"k"}"#] {
            let json = format!(r#"{{"token":"t","targets":["wss://*"],"origins":["*"],"max_connections":1,{field}}}"#);
            let refused = parse(&json).unwrap_err();
            assert!(refused.contains("belongs to a target pattern") && refused.contains(r#""pattern""#), "{refused}");
        }
    }

    #[test]
    fn bad_patterns_fail_the_record() {
        let bad = parse(r#"{"token":"t","targets":["ws://a.*.example.com/"],"origins":["*"],"max_connections":1}"#);
        assert!(bad.unwrap_err().contains("first label"));
        let bad = parse(r#"{"token":"t","targets":["ws://h/"],"origins":["app.example.com"],"max_connections":1}"#);
        assert!(bad.unwrap_err().contains("invalid pattern"));
        let bad = parse(
            r#"{"token":"t","targets":[{"pattern":"ws://h/","headers":{}}],"origins":["*"],"max_connections":1}"#,
        );
        assert!(bad.is_err());
    }

    #[test]
    fn parses_the_documented_file() {
        let file: TokensFile = serde_json::from_str(
            r#"{"tokens":[{"token":"dev","targets":["ws://127.0.0.1:*/*","wss://*.example.com/*"],"origins":["*"],"max_connections":100}]}"#,
        )
        .unwrap();
        assert_eq!(file.tokens[0].max_connections, 100);
        assert!(!file.tokens[0].forward_bearer);
        let record = &serde_json::from_str::<TokensFile>(
            r#"{"tokens":[{"token":"t","targets":[{"pattern":"wss://*","upstream_headers":{"X-Api-Key":"k"}}],"origins":["*"],"max_connections":1,"forward_bearer":true}]}"#,
        )
        .unwrap()
        .tokens[0];
        assert_eq!(record.targets[0].upstream_headers().next(), Some((&"X-Api-Key".to_string(), &Secret("k".into()))));
        assert!(record.forward_bearer);
    }
}
