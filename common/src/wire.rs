//! Types that cross a process boundary: JSON answers to clients and the
//! create hand-off between a router and a daemon.

use serde::{Deserialize, Serialize};

/// One entry of a `/j` poll answer.
///
/// Text, binary and close messages carry `seq` (1, 2, 3, ... per socket) so a
/// client can acknowledge what it has and detect duplicates after a retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ClientMessage {
    Text {
        seq: u64,
        data: String,
    },
    /// `data` is standard base64.
    Binary {
        seq: u64,
        data: String,
    },
    Close {
        seq: u64,
        code: u16,
        reason: String,
    },
    /// The poll's ttl expired with nothing to deliver.
    Heartbeat,
}

/// The JSON body of every failed request: `{"ok":false,"error":"..."}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Failure {
    pub ok: bool,
    pub error: String,
    /// On an out-of-order send: the `seq` the daemon expects next.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected: Option<u64>,
    /// On a batch of messages cut short: how many of them, from the first,
    /// were taken (the client resends only the rest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<u64>,
    /// The same request may well succeed if tried again shortly: the fault
    /// was the fleet's (no daemon answered, Redis unreachable), not the
    /// request's. Absent when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retryable: bool,
    /// On a create the upstream refused: the HTTP status it answered the
    /// handshake with (401 and 403 usually mean a missing or bad credential).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_status: Option<u16>,
}

impl Failure {
    pub fn new(error: impl ToString) -> Self {
        Failure {
            ok: false,
            error: error.to_string(),
            expected: None,
            accepted: None,
            retryable: false,
            upstream_status: None,
        }
    }
}

/// `{"ok":true}`: a send was accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Accepted {
    pub ok: bool,
}

impl Accepted {
    pub const OK: Accepted = Accepted { ok: true };
}

/// The answer to a successful `/j` poll.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Messages {
    pub ok: bool,
    pub messages: Vec<ClientMessage>,
}

/// The answer to a successful `/create`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Created {
    pub ok: bool,
    /// `{uniq}.<daemon fqdn>`: where the client sends and polls.
    pub fqdn: String,
    pub socket: String,
    /// The subprotocol the upstream selected, empty when none.
    pub protocol: String,
}

/// What a router asks a daemon to open. Everything the daemon needs travels in
/// the request so the daemon never looks anything up per create.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EstablishRequest {
    /// Correlates the daemon's reply with the router's waiting create.
    pub id: String,
    /// Where the daemon sends its reply (a Redis channel; unused in memory).
    pub reply_to: String,
    /// Unix time in milliseconds by which the daemon must take the request;
    /// a daemon that gets it later drops it and frees the reservation, as
    /// the router has moved on to another daemon.
    pub accept_by_ms: u64,
    /// Unix time in milliseconds after which the router no longer waits for
    /// the outcome: a socket opened later is closed at once.
    pub expires_at_ms: u64,
    /// The normalized ws:// or wss:// URL.
    pub target: String,
    /// The page origin, passed upstream as `Origin`.
    pub origin: Option<String>,
    pub protocols: Vec<String>,
    /// The client's address, passed upstream as `X-Forwarded-For`.
    pub client_ip: Option<String>,
    /// The token whose connection slot this socket holds; released when the
    /// socket ends.
    pub token: String,
    /// Non-public networks the token may reach (see `TokenRecord::allow_private`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_private: Vec<ipnet::IpNet>,
    /// Headers added to the upstream handshake: the token's operator-held
    /// headers and, where the token allows it, the client's bearer as
    /// `Authorization`. Checked by the router; the daemon adds them as given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upstream_headers: Vec<(String, Secret)>,
}

/// A credential (an upstream header's value, a forwarded bearer): it travels
/// and serializes as a plain string but never shows in `Debug` output, so a
/// logged request or token record cannot leak it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Who failed when a daemon could not open a socket, so the router can
/// answer with the right status and count the right outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpenFailure {
    /// The daemon's policy refuses the target (an address that is not public).
    Policy,
    /// The upstream could not be reached: name lookup, TCP or TLS failed.
    Unreachable,
    /// The upstream answered the handshake with an HTTP status, not 101.
    Rejected,
    /// The upstream accepted but broke RFC 6455 (a subprotocol or extension
    /// that was not offered, a malformed handshake answer).
    Protocol,
    /// The connect and handshake took longer than the daemon allows.
    Timeout,
    /// The daemon has no room (or no worker) for the socket; another may.
    DaemonFull,
    /// A kind this build does not know (a newer daemon in a rolling upgrade).
    #[default]
    #[serde(other)]
    Other,
}

/// How a daemon answers an [`EstablishRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub enum EstablishReply {
    /// The daemon took the request and is opening the upstream; the outcome follows.
    Accepted {
        request_id: String,
    },
    Open {
        request_id: String,
        fqdn: String,
        socket: String,
        protocol: String,
    },
    Failed {
        request_id: String,
        #[serde(default)]
        kind: OpenFailure,
        /// The upstream's HTTP status, for [`OpenFailure::Rejected`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        error: String,
    },
}

impl EstablishReply {
    pub fn request_id(&self) -> &str {
        match self {
            EstablishReply::Accepted { request_id }
            | EstablishReply::Open { request_id, .. }
            | EstablishReply::Failed { request_id, .. } => request_id,
        }
    }
}

/// Milliseconds since the Unix epoch, for deadlines shared between hosts.
pub fn unix_millis() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_failures_cross_processes_typed() {
        let failed = EstablishReply::Failed {
            request_id: "r".into(),
            kind: OpenFailure::Rejected,
            status: Some(403),
            error: "upstream handshake failed: HTTP 403".into(),
        };
        let json = serde_json::to_string(&failed).unwrap();
        assert_eq!(
            json,
            r#"{"result":"failed","request_id":"r","kind":"rejected","status":403,"error":"upstream handshake failed: HTTP 403"}"#
        );
        assert_eq!(serde_json::from_str::<EstablishReply>(&json).unwrap(), failed);
        // Daemons of an older build send no kind; newer ones may send kinds we do not know.
        for other in [
            r#"{"result":"failed","request_id":"r","error":"x"}"#,
            r#"{"result":"failed","request_id":"r","kind":"new","error":"x"}"#,
        ] {
            let EstablishReply::Failed { kind, .. } = serde_json::from_str(other).unwrap() else { panic!("{other}") };
            assert_eq!(kind, OpenFailure::Other);
        }
    }

    #[test]
    fn secrets_travel_but_never_show_in_debug() {
        let secret = Secret("hunter2".into());
        assert_eq!(format!("{secret:?}"), "Secret(..)");
        assert_eq!(serde_json::to_string(&secret).unwrap(), r#""hunter2""#);
    }

    #[test]
    fn retryable_appears_only_when_true() {
        assert_eq!(serde_json::to_string(&Failure::new("x")).unwrap(), r#"{"ok":false,"error":"x"}"#);
        let retry = Failure { retryable: true, ..Failure::new("fleet unavailable") };
        assert_eq!(
            serde_json::to_string(&retry).unwrap(),
            r#"{"ok":false,"error":"fleet unavailable","retryable":true}"#
        );
    }

    #[test]
    fn messages_serialize_as_documented() {
        let messages = [
            ClientMessage::Text { seq: 1, data: "hi".into() },
            ClientMessage::Binary { seq: 2, data: "AAE=".into() },
            ClientMessage::Close { seq: 3, code: 1000, reason: "bye".into() },
            ClientMessage::Heartbeat,
        ];
        assert_eq!(
            serde_json::to_string(&messages).unwrap(),
            r#"[{"type":"text","seq":1,"data":"hi"},{"type":"binary","seq":2,"data":"AAE="},{"type":"close","seq":3,"code":1000,"reason":"bye"},{"type":"heartbeat"}]"#
        );
    }
}
