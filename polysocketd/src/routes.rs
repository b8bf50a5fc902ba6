//! `/s/<socket>` (send) and `/j/<socket>` (long-poll receive).

use crate::bridge::{Outgoing, PollOutcome, SendFailure};
use crate::daemon::Daemon;
use actix_web::http::StatusCode;
use actix_web::http::header::CONTENT_TYPE;
use actix_web::{HttpRequest, HttpResponse, web};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use polysocket_common::jsonp;
use polysocket_common::wire::{Accepted, Failure, Messages};
use serde::Deserialize;
use std::time::Duration;

/// A poll's wait when the client gives no `ttl`.
const DEFAULT_TTL: Duration = Duration::from_millis(25_000);

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/s/{socket}", web::get().to(send))
        .route("/s/{socket}", web::post().to(send))
        .route("/j/{socket}", web::get().to(poll));
}

/// Why a send or poll failed; each maps to the status the API documents.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("missing d")]
    MissingData,
    #[error("invalid t: must be t (text) or b (binary)")]
    InvalidType,
    #[error("invalid d: not standard base64")]
    InvalidBase64,
    #[error("invalid d: text must be UTF-8")]
    InvalidUtf8,
    #[error("invalid ttl: must be milliseconds")]
    InvalidTtl,
    #[error("invalid ack: must be a sequence number")]
    InvalidAck,
    #[error("malformed form body")]
    MalformedForm,
    #[error("unsupported content type: use a form, text/plain or application/octet-stream")]
    UnsupportedContentType,
    #[error("message too big")]
    TooBig,
    #[error("unknown socket")]
    UnknownSocket,
    #[error("superseded by a newer poll")]
    Superseded,
    #[error(transparent)]
    Send(#[from] SendFailure),
}

impl BridgeError {
    fn status(&self) -> StatusCode {
        match self {
            BridgeError::UnknownSocket | BridgeError::Send(SendFailure::Closed) => StatusCode::FORBIDDEN,
            BridgeError::UnsupportedContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            BridgeError::TooBig => StatusCode::PAYLOAD_TOO_LARGE,
            BridgeError::Superseded => StatusCode::CONFLICT,
            BridgeError::Send(SendFailure::Timeout) => StatusCode::GATEWAY_TIMEOUT,
            BridgeError::Send(SendFailure::Upstream) => StatusCode::BAD_GATEWAY,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Query (or form) parameters of `/s`.
#[derive(Debug, Default, Deserialize)]
struct SendParams {
    cb: Option<String>,
    d: Option<String>,
    t: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct PollParams {
    cb: Option<String>,
    ttl: Option<String>,
    ack: Option<String>,
}

async fn send(req: HttpRequest, socket: web::Path<String>, body: Bytes, daemon: web::Data<Daemon>) -> HttpResponse {
    let (params, cb) = match jsonp::parse_query::<SendParams>(req.query_string(), |p| p.cb.as_deref()) {
        Ok(parsed) => parsed,
        Err(e) => return jsonp::plain_bad_request(e),
    };
    let outcome = async {
        let message = if req.method() == actix_web::http::Method::POST {
            message_from_body(&req, params, body)?
        } else {
            message_from_params(params)?
        };
        let size = match &message {
            Outgoing::Text(text) => text.len(),
            Outgoing::Binary(bytes) => bytes.len(),
        };
        if size > daemon.limits.max_message_bytes {
            return Err(BridgeError::TooBig);
        }
        let handle = daemon.sockets.get(socket.as_str()).map(|h| h.clone()).ok_or(BridgeError::UnknownSocket)?;
        Ok(handle.send(message).await?)
    }
    .await;
    match outcome {
        Ok(()) => jsonp::reply(StatusCode::CREATED, cb.as_ref(), &Accepted::OK),
        Err(e) => jsonp::reply(e.status(), cb.as_ref(), &Failure::new(e)),
    }
}

fn message_from_params(params: SendParams) -> Result<Outgoing, BridgeError> {
    let data = params.d.ok_or(BridgeError::MissingData)?;
    match params.t.as_deref() {
        None | Some("t") => Ok(Outgoing::Text(data)),
        Some("b") => BASE64.decode(data).map(|b| Outgoing::Binary(b.into())).map_err(|_| BridgeError::InvalidBase64),
        Some(_) => Err(BridgeError::InvalidType),
    }
}

/// A POST body is a form (`d`, `t`), or the message itself: text/plain is
/// one text message, application/octet-stream one binary message.
fn message_from_body(req: &HttpRequest, query: SendParams, body: Bytes) -> Result<Outgoing, BridgeError> {
    let content_type = req.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/x-www-form-urlencoded" => {
            let form: SendParams = serde_urlencoded::from_bytes(&body).map_err(|_| BridgeError::MalformedForm)?;
            message_from_params(SendParams { cb: None, d: form.d.or(query.d), t: form.t.or(query.t) })
        }
        "text/plain" => String::from_utf8(body.to_vec()).map(Outgoing::Text).map_err(|_| BridgeError::InvalidUtf8),
        "application/octet-stream" => Ok(Outgoing::Binary(body)),
        // An empty body with the data in the query works like a GET.
        "" if body.is_empty() => message_from_params(query),
        _ => Err(BridgeError::UnsupportedContentType),
    }
}

async fn poll(req: HttpRequest, socket: web::Path<String>, daemon: web::Data<Daemon>) -> HttpResponse {
    let (params, cb) = match jsonp::parse_query::<PollParams>(req.query_string(), |p| p.cb.as_deref()) {
        Ok(parsed) => parsed,
        Err(e) => return jsonp::plain_bad_request(e),
    };
    let outcome = async {
        let ttl = match params.ttl.as_deref() {
            None | Some("") => DEFAULT_TTL,
            Some(ms) => Duration::from_millis(ms.parse().map_err(|_| BridgeError::InvalidTtl)?),
        }
        .min(daemon.max_poll_ttl);
        let ack = match params.ack.as_deref() {
            None | Some("") => None,
            Some(seq) => Some(seq.parse::<u64>().map_err(|_| BridgeError::InvalidAck)?),
        };
        let handle = daemon.sockets.get(socket.as_str()).map(|h| h.clone()).ok_or(BridgeError::UnknownSocket)?;
        match handle.poll(ttl, ack).await {
            PollOutcome::Messages(messages) => Ok(messages),
            PollOutcome::Superseded => Err(BridgeError::Superseded),
            PollOutcome::Gone => Err(BridgeError::UnknownSocket),
        }
    }
    .await;
    match outcome {
        Ok(messages) => jsonp::reply(StatusCode::OK, cb.as_ref(), &Messages { ok: true, messages }),
        Err(e) => jsonp::reply(e.status(), cb.as_ref(), &Failure::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(d: Option<&str>, t: Option<&str>) -> SendParams {
        SendParams { cb: None, d: d.map(str::to_owned), t: t.map(str::to_owned) }
    }

    #[test]
    fn send_params() {
        assert_eq!(message_from_params(params(Some("hi"), Some("t"))).unwrap(), Outgoing::Text("hi".into()));
        assert_eq!(message_from_params(params(Some("hi"), None)).unwrap(), Outgoing::Text("hi".into()));
        assert_eq!(
            message_from_params(params(Some("AAH/"), Some("b"))).unwrap(),
            Outgoing::Binary(Bytes::from_static(&[0, 1, 255]))
        );
        assert!(matches!(message_from_params(params(None, Some("t"))), Err(BridgeError::MissingData)));
        assert!(matches!(message_from_params(params(Some("x"), Some("z"))), Err(BridgeError::InvalidType)));
        assert!(matches!(message_from_params(params(Some("!!"), Some("b"))), Err(BridgeError::InvalidBase64)));
    }
}
