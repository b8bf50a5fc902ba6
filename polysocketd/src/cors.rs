//! CORS for `/s` and `/j`, so a page can use `fetch`/XHR (a `POST` send, a
//! streaming receive) across origins: allowed for the page origin that
//! created the socket, which its token allowed at `/create`, and no other.
//! Credentials are never allowed: the socket id is the only capability.

use crate::daemon::Daemon;
use crate::error::RequestError;
use actix_web::http::StatusCode;
use actix_web::http::header::{
    ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE,
    HeaderValue, ORIGIN, VARY,
};
use actix_web::{HttpRequest, HttpResponse};
use polysocket_common::jsonp;

/// Headers a page may send: a body's type, and an EventSource's resume point.
const ALLOWED_HEADERS: &str = "Content-Type, Last-Event-ID";
/// How long a browser may reuse a preflight answer.
const PREFLIGHT_MAX_AGE: &str = "600";

/// The request's `Origin`, when it is the one that created `socket`.
fn allowed_origin(daemon: &Daemon, socket: &str, req: &HttpRequest) -> Option<HeaderValue> {
    let origin = req.headers().get(ORIGIN)?;
    daemon.socket_created_from(socket, origin.as_bytes()).then(|| origin.clone())
}

/// Lets the page read `response` if it is the socket's own origin.
pub fn allow(daemon: &Daemon, socket: &str, req: &HttpRequest, response: &mut HttpResponse) {
    if let Some(origin) = allowed_origin(daemon, socket, req) {
        let headers = response.headers_mut();
        headers.insert(ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.append(VARY, HeaderValue::from_static("Origin"));
    }
}

/// Answers an `OPTIONS` preflight: 204 with what the socket's origin may do,
/// else 403 (the same for an unknown socket, so it tells a guesser nothing).
pub fn preflight(daemon: &Daemon, socket: &str, req: &HttpRequest, methods: &'static str) -> HttpResponse {
    let Some(origin) = allowed_origin(daemon, socket, req) else {
        return RequestError::CorsRefused.reply(&jsonp::Answer::Json);
    };
    HttpResponse::build(StatusCode::NO_CONTENT)
        .insert_header((ACCESS_CONTROL_ALLOW_ORIGIN, origin))
        .insert_header((ACCESS_CONTROL_ALLOW_METHODS, methods))
        .insert_header((ACCESS_CONTROL_ALLOW_HEADERS, ALLOWED_HEADERS))
        .insert_header((ACCESS_CONTROL_MAX_AGE, PREFLIGHT_MAX_AGE))
        .insert_header((VARY, "Origin"))
        .finish()
}
