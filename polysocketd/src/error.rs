//! Why a `/s` or `/j` request failed, and the status each failure is
//! answered with. Its own module so that everything below the routes (the
//! daemon, client limits) can return it without depending on the routes.

use crate::socket::SendFailure;
use actix_web::HttpResponse;
use actix_web::http::StatusCode;
use actix_web::http::header::{ALLOW, HeaderValue};
use polysocket_common::jsonp;
use polysocket_common::limits::{insert_retry_after, retry_after_secs};
use polysocket_common::wire::Failure;
use std::time::Duration;

/// Why a send or poll failed; each maps to the status the API documents.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("method not allowed: use {0}")]
    MethodNotAllowed(&'static str),
    #[error("missing d")]
    MissingData,
    #[error("invalid t: must be t (text), j (text as a JSON string), b (binary) or c (close)")]
    InvalidType,
    #[error("invalid t: give one t for every d, or one for all of them")]
    TypeCount,
    #[error("invalid t: c (close) takes no d and comes alone")]
    CloseInBatch,
    #[error("too many messages: at most {0} in one request")]
    TooManyMessages(usize),
    #[error("request body too big: at most {0} bytes (send fewer messages at a time)")]
    BodyTooBig(usize),
    #[error("invalid d: not standard base64")]
    InvalidBase64,
    #[error("invalid d: t=j takes a JSON string")]
    InvalidJsonText,
    #[error("invalid frame: must be 0 or 1")]
    InvalidFrame,
    #[error("invalid d: text must be UTF-8")]
    InvalidUtf8,
    #[error("invalid seq: must be a number from 1")]
    InvalidSeq,
    #[error("invalid more: must be 0 or 1")]
    InvalidMore,
    #[error("invalid code: must be 1000 or 3000-4999")]
    InvalidCloseCode,
    #[error("invalid reason: at most 123 bytes")]
    InvalidCloseReason,
    #[error("invalid ttl: must be milliseconds")]
    InvalidTtl,
    #[error("invalid ack: must be a sequence number")]
    InvalidAck,
    #[error("invalid stream: must be sse or ndjson")]
    InvalidStream,
    #[error("origin not allowed for this socket")]
    CorsRefused,
    #[error("malformed form body")]
    MalformedForm,
    #[error("request body too slow")]
    SlowBody,
    #[error("request body could not be read")]
    UnreadableBody,
    #[error("unsupported content type: use a form, text/plain or application/octet-stream")]
    UnsupportedContentType,
    #[error("unknown socket")]
    UnknownSocket,
    #[error("too many requests: retry in {}s", retry_after_secs(*.0))]
    RateLimited(Duration),
    #[error("too many polls from this address")]
    TooManyPolls,
    #[error("superseded by a newer poll")]
    Superseded,
    #[error(transparent)]
    Send(#[from] SendFailure),
    /// A batch cut short: `accepted` of its messages (from the first) were
    /// taken, and the answer says so.
    #[error("{failure}")]
    PartlySent { failure: SendFailure, accepted: usize },
}

impl RequestError {
    /// Why the upstream side refused a send, whole or in part.
    fn send_failure(&self) -> Option<&SendFailure> {
        match self {
            RequestError::Send(failure) | RequestError::PartlySent { failure, .. } => Some(failure),
            _ => None,
        }
    }

    pub fn status(&self) -> StatusCode {
        if let Some(failure) = self.send_failure() {
            return match failure {
                SendFailure::Closed => StatusCode::FORBIDDEN,
                SendFailure::TooBig => StatusCode::PAYLOAD_TOO_LARGE,
                SendFailure::OutOfOrder { .. } => StatusCode::CONFLICT,
                SendFailure::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
                SendFailure::Timeout => StatusCode::GATEWAY_TIMEOUT,
                SendFailure::Busy => StatusCode::SERVICE_UNAVAILABLE,
                SendFailure::Upstream => StatusCode::BAD_GATEWAY,
                SendFailure::MixedFragments => StatusCode::BAD_REQUEST,
            };
        }
        match self {
            RequestError::UnknownSocket | RequestError::CorsRefused => StatusCode::FORBIDDEN,
            RequestError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            RequestError::UnsupportedContentType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RequestError::SlowBody => StatusCode::REQUEST_TIMEOUT,
            RequestError::TooManyMessages(_) | RequestError::BodyTooBig(_) => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::Superseded => StatusCode::CONFLICT,
            RequestError::RateLimited(_) | RequestError::TooManyPolls => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    pub fn reply(self, answer: &jsonp::Answer) -> HttpResponse {
        let status = self.status();
        let mut failure = Failure::new(&self);
        if let Some(SendFailure::OutOfOrder { expected }) = self.send_failure() {
            failure.expected = Some(*expected);
        }
        if let RequestError::PartlySent { accepted, .. } = &self {
            failure.accepted = Some(*accepted as u64);
        }
        let mut response = jsonp::reply(status, answer, &failure);
        if let Some(SendFailure::RateLimited(wait)) = self.send_failure() {
            insert_retry_after(&mut response, *wait);
        }
        match self {
            RequestError::RateLimited(wait) => insert_retry_after(&mut response, wait),
            RequestError::MethodNotAllowed(allowed) => {
                response.headers_mut().insert(ALLOW, HeaderValue::from_static(allowed));
            }
            _ => {}
        }
        response
    }
}
