//! Opening the upstream WebSocket for a create request.

use crate::netguard::{self, GuardError};
use actix_web::http::header::SEC_WEBSOCKET_PROTOCOL;
use awc::error::{ConnectError, SendRequestError, WsClientError};
use awc::{BoxedSocket, Client};
use polysocket_common::target::Target;
use polysocket_common::wire::EstablishRequest;
use std::time::Duration;

pub type Upstream = actix_codec::Framed<BoxedSocket, awc::ws::Codec>;

/// An open upstream and the subprotocol it selected ("" for none).
pub struct Opened {
    pub upstream: Upstream,
    pub protocol: String,
}

/// Why an upstream did not open; the text reaches the client after
/// "upstream handshake failed: ", so it says who failed and how.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("invalid target")]
    InvalidTarget,
    #[error(transparent)]
    Guard(#[from] GuardError),
    #[error("upstream handshake failed: connection refused")]
    Refused,
    #[error("upstream handshake failed: timeout")]
    Timeout,
    #[error("upstream handshake failed: HTTP {0}")]
    Status(u16),
    #[error("upstream handshake failed: server selected a subprotocol that was not offered")]
    UnofferedProtocol,
    #[error("upstream handshake failed: {0}")]
    Other(String),
}

/// Limits applied to the opening handshake.
pub struct OpenSettings {
    pub allow_private: bool,
    pub handshake_timeout: Duration,
    pub max_frame_bytes: usize,
}

pub async fn open(client: &Client, request: &EstablishRequest, settings: &OpenSettings) -> Result<Opened, OpenError> {
    let target = Target::parse(&request.target).map_err(|_| OpenError::InvalidTarget)?;
    let connect = async {
        let addr = netguard::resolve_checked(target.host_for_lookup(), target.port(), settings.allow_private).await?;
        let mut handshake = client
            .ws(target.as_str())
            // Connect to the address that was checked, never a fresh lookup.
            .address(addr)
            .max_frame_size(settings.max_frame_bytes);
        if let Some(origin) = &request.origin {
            handshake = handshake.origin(origin.as_str());
        }
        if !request.protocols.is_empty() {
            handshake = handshake.protocols(&request.protocols);
        }
        if let Some(ip) = &request.client_ip {
            handshake = handshake.header("X-Forwarded-For", ip.as_str());
        }
        let (response, upstream) = handshake.connect().await.map_err(describe)?;
        // awc does not check that the selected subprotocol is one we offered
        // (RFC 6455 §4.1 requires the client to fail the connection).
        let protocol = response
            .headers()
            .get(SEC_WEBSOCKET_PROTOCOL)
            .map(|v| v.to_str().unwrap_or("\u{0}").to_owned())
            .unwrap_or_default();
        if !protocol.is_empty() && !request.protocols.contains(&protocol) {
            return Err(OpenError::UnofferedProtocol);
        }
        Ok(Opened { upstream, protocol })
    };
    tokio::time::timeout(settings.handshake_timeout, connect).await.map_err(|_| OpenError::Timeout)?
}

fn describe(error: WsClientError) -> OpenError {
    match error {
        WsClientError::InvalidResponseStatus(status) => OpenError::Status(status.as_u16()),
        WsClientError::SendRequest(SendRequestError::Connect(ConnectError::Io(io)))
            if io.kind() == std::io::ErrorKind::ConnectionRefused =>
        {
            OpenError::Refused
        }
        WsClientError::SendRequest(SendRequestError::Timeout)
        | WsClientError::SendRequest(SendRequestError::Connect(ConnectError::Timeout)) => OpenError::Timeout,
        other => OpenError::Other(other.to_string()),
    }
}
