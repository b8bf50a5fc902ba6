//! Real upstream WebSocket servers with scripted behaviours, chosen by path:
//!
//! - `/echo`: echoes text and binary messages, answers pings;
//! - `/headers`: first sends a JSON text with the `Origin`, `X-Forwarded-For`
//!   and subprotocol it saw (selecting `v2.test` if offered), then echoes;
//! - `/say?n=N&text=T`: sends `T-1` ... `T-N` at once, then echoes;
//! - `/push?hz=N`: from the first message it receives, sends `p-1`, `p-2`,
//!   ... N times a second (so a client set up slowly finds no backlog);
//! - `/fragmented`: sends "fragmented" as three continuation frames;
//! - `/close`: closes with 4000 "bye" when it receives a message;
//! - `/pings`: answers each message with the number of pings received so far;
//! - `/deaf`: echoes, but never answers pings;
//! - `/discard`: reads messages and answers none (the benchmark's send path);
//! - `/stall`: never reads what it is sent, as a consumer that has stopped:
//!   its TCP window fills and writes to it stop;
//! - `/invalid-utf8`: sends a fragmented text message that is not UTF-8;
//! - `/huge?bytes=N`: sends one binary message of N bytes;
//! - `/slow?ms=N`: waits N ms before accepting the handshake; the most
//!   handshakes it ever had in progress at once is at `GET /slow-stats`;
//! - `/wrong-protocol`: accepts the handshake selecting a subprotocol nobody offered;
//! - `/forbidden`: answers the handshake with HTTP 403;
//! - `/tachyon`: a Tachyon-like server that requires a bearer (see [`crate::tachyon`]).
//!
//! `/headers` also reports the `Authorization` and `X-Api-Key` it saw, for
//! the headers a token adds upstream.

use actix_web::http::header::{HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, Item, Session};
use bytes::Bytes;
use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct UpstreamServer {
    port: u16,
}

impl UpstreamServer {
    /// Starts the server on a free loopback port, inside the current actix system.
    pub fn start() -> Self {
        Self::start_on(0).expect("start upstream on a free port")
    }

    /// Starts the server on `127.0.0.1:<port>` (0 for any free port).
    pub fn start_on(port: u16) -> std::io::Result<Self> {
        Self::serve(TcpListener::bind(("127.0.0.1", port))?, None)
    }

    /// Starts a wss:// server for `localhost`, with a certificate from a
    /// certificate authority made up on the spot; returns the server and
    /// that authority's certificate (PEM), which nothing trusts by default.
    pub fn start_tls() -> (Self, String) {
        let made_up = crate::LocalhostCertificate::new("polysocket test CA");
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(
                vec![made_up.cert.der().clone()],
                rustls::pki_types::PrivateKeyDer::try_from(made_up.key.serialize_der()).expect("server key DER"),
            )
            .expect("server TLS config");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        (Self::serve(listener, Some(config)).expect("start TLS upstream"), made_up.ca.pem())
    }

    fn serve(listener: TcpListener, tls: Option<rustls::ServerConfig>) -> std::io::Result<Self> {
        let port = listener.local_addr()?.port();
        let stats = web::Data::new(HandshakeStats::default());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(stats.clone())
                .route("/forbidden", web::get().to(|| async { HttpResponse::Forbidden().body("no") }))
                .route("/slow", web::get().to(slow))
                .route("/slow-stats", web::get().to(slow_stats))
                .route("/tachyon", web::get().to(crate::tachyon::handshake))
                .default_service(web::get().to(websocket))
        })
        .workers(1)
        .disable_signals();
        let server = match tls {
            Some(config) => server.listen_rustls_0_23(listener, config)?,
            None => server.listen(listener)?,
        };
        actix_web::rt::spawn(server.run());
        Ok(UpstreamServer { port })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ws://127.0.0.1:<port><path_and_query>`
    pub fn url(&self, path_and_query: &str) -> String {
        format!("ws://127.0.0.1:{}{}", self.port, path_and_query)
    }
}

/// Handshakes `/slow` has in progress, and the most it ever had at once.
#[derive(Default)]
struct HandshakeStats {
    in_progress: AtomicUsize,
    max_in_progress: AtomicUsize,
}

async fn slow(
    req: HttpRequest,
    body: web::Payload,
    stats: web::Data<HandshakeStats>,
) -> Result<HttpResponse, actix_web::Error> {
    let now = stats.in_progress.fetch_add(1, Ordering::SeqCst) + 1;
    stats.max_in_progress.fetch_max(now, Ordering::SeqCst);
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())?.into_inner();
    let ms = query.get("ms").and_then(|ms| ms.parse().ok()).unwrap_or(200);
    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
    stats.in_progress.fetch_sub(1, Ordering::SeqCst);
    websocket(req, body).await
}

async fn slow_stats(stats: web::Data<HandshakeStats>) -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"max_in_progress": stats.max_in_progress.load(Ordering::SeqCst)}))
}

async fn websocket(req: HttpRequest, body: web::Payload) -> Result<HttpResponse, actix_web::Error> {
    let (mut response, mut session, stream) = actix_ws::handle_with_protocols(&req, body, &["v2.test"])?;
    let query = web::Query::<HashMap<String, String>>::from_query(req.query_string())?.into_inner();
    let path = req.path().to_owned();
    if path == "/wrong-protocol" {
        response.headers_mut().insert(SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("unoffered"));
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let seen = serde_json::json!({
        "origin": header("origin"),
        "x-forwarded-for": header("x-forwarded-for"),
        "authorization": header("authorization"),
        "x-api-key": header("x-api-key"),
        "protocol": response.headers().get(SEC_WEBSOCKET_PROTOCOL).and_then(|v| v.to_str().ok()).unwrap_or(""),
    });
    actix_web::rt::spawn(async move {
        let opened = match path.as_str() {
            "/headers" => session.text(seen.to_string()).await,
            "/say" => say(&mut session, &query).await,
            "/fragmented" => fragmented(&mut session, b"frag").await,
            "/invalid-utf8" => fragmented(&mut session, b"\xff\xfe").await,
            "/huge" => {
                let size = query.get("bytes").and_then(|n| n.parse().ok()).unwrap_or(1 << 21);
                session.binary(vec![7u8; size]).await
            }
            _ => Ok(()),
        };
        if opened.is_ok() {
            let behaviour = match path.as_str() {
                "/close" => Behaviour::CloseOnMessage,
                "/pings" => Behaviour::CountPings,
                "/deaf" => Behaviour::IgnorePings,
                "/discard" => Behaviour::Discard,
                "/push" => {
                    let hz: f64 = query.get("hz").and_then(|n| n.parse().ok()).filter(|&hz| hz > 0.0).unwrap_or(10.0);
                    Behaviour::PushFromFirstMessage { period: std::time::Duration::from_secs_f64(1.0 / hz) }
                }
                _ => Behaviour::Echo,
            };
            if path == "/stall" {
                // Held, never read, until the daemon gives up on the connection.
                let _unread = (session, stream);
                return std::future::pending().await;
            }
            let stream = stream.max_frame_size(16 << 20).aggregate_continuations().max_continuation_size(16 << 20);
            serve(session, stream, behaviour).await;
        }
    });
    Ok(response)
}

async fn say(session: &mut Session, query: &HashMap<String, String>) -> Result<(), actix_ws::Closed> {
    let count: usize = query.get("n").and_then(|n| n.parse().ok()).unwrap_or(1);
    let text = query.get("text").cloned().unwrap_or_else(|| "msg".into());
    for i in 1..=count {
        session.text(format!("{text}-{i}")).await?;
    }
    Ok(())
}

/// Sends a numbered message every `period` until the session ends.
async fn push(mut session: Session, period: std::time::Duration) {
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 1u64.. {
        ticks.tick().await;
        if session.text(format!("p-{n}")).await.is_err() {
            return;
        }
    }
}

/// Sends `first` + "ment" + "ed" as one text message in three frames.
async fn fragmented(session: &mut Session, first: &'static [u8]) -> Result<(), actix_ws::Closed> {
    session.continuation(Item::FirstText(Bytes::from_static(first))).await?;
    session.continuation(Item::Continue(Bytes::from_static(b"ment"))).await?;
    session.continuation(Item::Last(Bytes::from_static(b"ed"))).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Echo,
    CloseOnMessage,
    CountPings,
    IgnorePings,
    Discard,
    PushFromFirstMessage { period: std::time::Duration },
}

async fn serve(mut session: Session, mut stream: actix_ws::AggregatedMessageStream, behaviour: Behaviour) {
    let mut pings = 0usize;
    let mut pushing = false;
    while let Some(Ok(message)) = stream.recv().await {
        let sent = match message {
            AggregatedMessage::Text(_) if matches!(behaviour, Behaviour::PushFromFirstMessage { .. }) => {
                if let (Behaviour::PushFromFirstMessage { period }, false) = (behaviour, pushing) {
                    pushing = true;
                    actix_web::rt::spawn(push(session.clone(), period));
                }
                Ok(())
            }
            AggregatedMessage::Text(_) | AggregatedMessage::Binary(_) if behaviour == Behaviour::CloseOnMessage => {
                let reason = CloseReason { code: CloseCode::Other(4000), description: Some("bye".into()) };
                let _ = session.close(Some(reason)).await;
                return;
            }
            AggregatedMessage::Text(_) | AggregatedMessage::Binary(_) if behaviour == Behaviour::Discard => Ok(()),
            AggregatedMessage::Text(_) if behaviour == Behaviour::CountPings => session.text(pings.to_string()).await,
            AggregatedMessage::Text(text) => session.text(text).await,
            AggregatedMessage::Binary(bytes) => session.binary(bytes).await,
            AggregatedMessage::Ping(_) if behaviour == Behaviour::IgnorePings => Ok(()),
            AggregatedMessage::Ping(payload) => {
                pings += 1;
                session.pong(&payload).await
            }
            AggregatedMessage::Pong(_) => Ok(()),
            AggregatedMessage::Close(reason) => {
                let _ = session.close(reason).await;
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
}
