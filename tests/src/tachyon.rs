//! A Tachyon-like upstream, after the Tachyon connection spec in
//! `../shared/seeds/`: the handshake needs `Authorization: Bearer <access
//! token>` and the `v0.tachyon` subprotocol; the server pings (every
//! `ping_ms`, 2,000 by default, never more than 10 s apart) and closes with
//! 1008 and a reason when a ping goes unanswered until the next one, when a
//! message is not JSON, or when it is binary. Each JSON text is answered with
//! `{"type":"response","echo":<the message>,"pongs":<pongs so far>}`.

use actix_web::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, Session};
use std::collections::HashMap;
use std::time::Duration;

/// The only access token the server accepts.
pub const ACCESS_TOKEN: &str = "tachyon-test.access_token-0";
/// The only version it speaks.
pub const PROTOCOL: &str = "v0.tachyon";
/// The spec's longest interval between pings.
const MAX_PING_INTERVAL: Duration = Duration::from_secs(10);

pub async fn handshake(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, actix_web::Error> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    if header(AUTHORIZATION) != format!("Bearer {ACCESS_TOKEN}") {
        return Ok(HttpResponse::Unauthorized()
            .insert_header(("WWW-Authenticate", "Bearer"))
            .body("missing or invalid access token"));
    }
    if !header(SEC_WEBSOCKET_PROTOCOL).split(',').any(|offered| offered.trim() == PROTOCOL) {
        return Ok(HttpResponse::BadRequest().body("no supported tachyon version offered"));
    }
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())?.into_inner();
    let every = query
        .get("ping_ms")
        .and_then(|ms| ms.parse().ok())
        .map_or(Duration::from_secs(2), Duration::from_millis)
        .min(MAX_PING_INTERVAL);
    let (response, session, stream) = actix_ws::handle_with_protocols(&req, body, &[PROTOCOL])?;
    actix_web::rt::spawn(serve(session, stream.aggregate_continuations(), every));
    Ok(response)
}

async fn serve(mut session: Session, mut stream: actix_ws::AggregatedMessageStream, every: Duration) {
    let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut pongs = 0u64;
    let mut awaiting_pong = false;
    loop {
        tokio::select! {
            _ = pings.tick() => {
                if awaiting_pong {
                    return policy_close(session, "ping timeout".into()).await;
                }
                awaiting_pong = true;
                if session.ping(b"tachyon").await.is_err() {
                    return;
                }
            }
            message = stream.recv() => {
                let sent = match message {
                    Some(Ok(AggregatedMessage::Pong(_))) => {
                        awaiting_pong = false;
                        pongs += 1;
                        Ok(())
                    }
                    Some(Ok(AggregatedMessage::Ping(payload))) => session.pong(&payload).await,
                    Some(Ok(AggregatedMessage::Text(text))) => match serde_json::from_str::<serde_json::Value>(&text) {
                        Ok(echo) => {
                            let answer = serde_json::json!({"type": "response", "echo": echo, "pongs": pongs});
                            session.text(answer.to_string()).await
                        }
                        Err(e) => return policy_close(session, format!("cannot parse JSON: {e}")).await,
                    },
                    Some(Ok(AggregatedMessage::Binary(_))) => {
                        return policy_close(session, "messages must be UTF-8 JSON text".into()).await;
                    }
                    Some(Ok(AggregatedMessage::Close(reason))) => {
                        let _ = session.close(reason).await;
                        return;
                    }
                    Some(Err(_)) | None => return,
                };
                if sent.is_err() {
                    return;
                }
            }
        }
    }
}

/// Closes with 1008 and a short description, as the spec asks.
async fn policy_close(session: Session, mut description: String) {
    // A close frame's reason fits in 123 bytes.
    while description.len() > 123 {
        description.pop();
    }
    let _ = session.close(Some(CloseReason { code: CloseCode::Policy, description: Some(description) })).await;
}
