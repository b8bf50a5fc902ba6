//! Streaming receives, each with its sends on a second connection:
//! polysocket's `/j?stream=ndjson`, and SockJS's `xhr_streaming` and
//! `eventsource` transports. Two operations: a round trip (send, then read
//! the stream until the echo arrives) and, against an upstream that pushes
//! (`/push?hz=N`, from the first message it gets), one pushed message
//! received; the warm-up operation sends that first message, so nothing
//! piles up while the other clients are set up.
//!
//! Streams end now and then on either side (polysocket after
//! `--max-stream-time` or 128 KiB, SockJS after 128 KiB); the client opens
//! the next one as its browser client would, polysocket's from the last
//! `seq` it read.

use crate::polysocket::Creating;
use crate::run::{Client, Connection, Operation, Streamed};
use hyper::Method;
use serde_json::Value;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::pin::Pin;

/// What one operation is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    RoundTrip,
    Push,
}

/// A polysocket socket received on an NDJSON stream.
pub struct PolysocketStream {
    sends: Connection,
    receives: Connection,
    stream: Option<Streamed>,
    id: String,
    mode: Mode,
    seq: u64,
    acked: u64,
    /// Whether the upstream was told to start pushing.
    pushing: bool,
    /// Whether streams are asked for gzipped.
    gzip: bool,
}

pub async fn polysocket(creating: &Creating, mode: Mode, gzip: bool) -> Result<Client, String> {
    let created = creating.create(&mut creating.connect().await?).await?;
    Ok(Box::new(PolysocketStream {
        sends: Connection::open(created.daemon, &created.host).await?,
        receives: Connection::open(created.daemon, &created.host).await?,
        stream: None,
        id: created.id,
        mode,
        seq: 0,
        acked: 0,
        pushing: false,
        gzip,
    }))
}

impl PolysocketStream {
    /// The next text message, opening streams as they end.
    async fn next_text(&mut self) -> Result<String, String> {
        loop {
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => {
                    let path = format!("/j/{}?stream=ndjson&ttl=15000&ack={}", self.id, self.acked);
                    self.stream.insert(self.receives.stream("stream", Method::GET, &path, self.gzip).await?)
                }
            };
            let Some(line) = stream.next(b"\n").await? else {
                self.stream = None;
                continue;
            };
            let message: Value = serde_json::from_str(&line).map_err(|e| format!("{e}: {line}"))?;
            match message["seq"].as_u64() {
                Some(seq) if seq <= self.acked => continue,
                Some(seq) => self.acked = seq,
                None => continue,
            }
            match message["type"].as_str() {
                Some("text") => return Ok(message["data"].as_str().unwrap_or_default().to_owned()),
                Some("close") => return Err(format!("socket closed: {message}")),
                _ => continue,
            }
        }
    }
}

impl Operation for PolysocketStream {
    fn run(&mut self) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>> {
        Box::pin(async move {
            if self.mode == Mode::Push && self.pushing {
                return self.next_text().await.map(drop);
            }
            self.seq += 1;
            let message = format!("m{}", self.seq);
            let path = format!("/s/{}?seq={}", self.id, self.seq);
            self.sends.post("send", &path, "text/plain", message.clone()).await?.expect("send", 201)?;
            if self.mode == Mode::Push {
                self.pushing = true;
                return self.next_text().await.map(drop);
            }
            while self.next_text().await? != message {}
            Ok(())
        })
    }

    fn finish(&mut self) -> Pin<Box<dyn Future<Output = ()> + '_>> {
        Box::pin(async move {
            let _ = self.sends.get("close", &format!("/s/{}?t=c", self.id)).await;
        })
    }
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum SockjsStreaming {
    XhrStreaming,
    Eventsource,
}

/// A SockJS session received on one of its streaming transports.
pub struct SockjsStream {
    sends: Connection,
    receives: Connection,
    stream: Option<Streamed>,
    session: String,
    transport: SockjsStreaming,
    mode: Mode,
    /// Messages of a frame not yet taken (`a[...]` may carry several).
    pending: VecDeque<String>,
    n: u64,
    pushing: bool,
}

pub async fn sockjs(n: usize, gateway: SocketAddr, transport: SockjsStreaming, mode: Mode) -> Result<Client, String> {
    let session = format!("/sockjs/{:03}/{}", n % 1000, uuid::Uuid::new_v4().simple());
    let mut client = SockjsStream {
        sends: Connection::open(gateway, &gateway.to_string()).await?,
        receives: Connection::open(gateway, &gateway.to_string()).await?,
        stream: None,
        session,
        transport,
        mode,
        pending: VecDeque::new(),
        n: 0,
        pushing: false,
    };
    // The first stream opens the session ("o"); a message needs the upstream open.
    match client.next_frame().await?.as_deref() {
        Some("o") => Ok(Box::new(client)),
        other => Err(format!("sockjs: expected an open frame, got {other:?}")),
    }
}

impl SockjsStream {
    /// The next frame that is not a heartbeat, opening streams as they end.
    async fn next_frame(&mut self) -> Result<Option<String>, String> {
        loop {
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => {
                    let (method, what) = match self.transport {
                        SockjsStreaming::XhrStreaming => (Method::POST, "xhr_streaming"),
                        SockjsStreaming::Eventsource => (Method::GET, "eventsource"),
                    };
                    let path = format!("{}/{what}", self.session);
                    self.stream.insert(self.receives.stream(what, method, &path, false).await?)
                }
            };
            let separator: &[u8] = match self.transport {
                SockjsStreaming::XhrStreaming => b"\n",
                SockjsStreaming::Eventsource => b"\r\n\r\n",
            };
            let Some(raw) = stream.next(separator).await? else {
                self.stream = None;
                continue;
            };
            let frame = raw.trim_start();
            let frame = frame.strip_prefix("data: ").unwrap_or(frame);
            // The xhr_streaming prelude is 2,048 "h"s: a heartbeat too.
            if frame.is_empty() || frame.bytes().all(|b| b == b'h') {
                continue;
            }
            return Ok(Some(frame.to_owned()));
        }
    }

    async fn next_message(&mut self) -> Result<String, String> {
        loop {
            if let Some(message) = self.pending.pop_front() {
                return Ok(message);
            }
            let frame = self.next_frame().await?.unwrap_or_default();
            match frame.split_at_checked(1) {
                Some(("a", messages)) => {
                    let messages: Vec<String> = serde_json::from_str(messages).map_err(|e| format!("{e}: {frame}"))?;
                    self.pending.extend(messages);
                }
                Some(("c", _)) => return Err(format!("session closed: {frame}")),
                _ => continue,
            }
        }
    }
}

impl Operation for SockjsStream {
    fn run(&mut self) -> Pin<Box<dyn Future<Output = Result<(), String>> + '_>> {
        Box::pin(async move {
            if self.mode == Mode::Push && self.pushing {
                return self.next_message().await.map(drop);
            }
            self.n += 1;
            let message = format!("m{}", self.n);
            let body = serde_json::to_string(&[&message]).expect("strings encode");
            let path = format!("{}/xhr_send", self.session);
            self.sends.post("xhr_send", &path, "text/plain", body).await?.expect("xhr_send", 204)?;
            if self.mode == Mode::Push {
                self.pushing = true;
                return self.next_message().await.map(drop);
            }
            while self.next_message().await? != message {}
            Ok(())
        })
    }
}
