//! Streaming receive: `/j/<socket>?stream=sse` (Server-Sent Events, also
//! chosen by `Accept: text/event-stream`) or `?stream=ndjson` (one JSON
//! message per line, for `curl -N`) keeps one response open and writes each
//! message as it arrives, the same objects a poll returns.
//!
//! A stream takes the socket's messages as they are queued (see
//! [`crate::socket::delivery`]) but releases only what its client confirmed
//! when it began (`ack`, or SSE's `Last-Event-ID`), so a stream cut anywhere
//! loses nothing and repeats nothing once its client reconnects from the last
//! `seq` it read. Retained messages are bounded: a stream ends after
//! `--max-stream-time`, once it has written `--max-stream-bytes` on the wire
//! (going on past it only while messages wait, up to twice that: a burst is
//! not cut by a reconnection's round trip, which on a slow link stalls it)
//! or half the socket's queue in messages (so it never stalls the upstream),
//! after the close (nothing can
//! follow it; like any message, it stays until a poll or stream
//! acknowledges it), and when a newer poll or stream takes over. Heartbeats
//! keep proxies from timing the response out.
//!
//! A client that takes gzip gets the stream gzipped as one stream: each
//! chunk is flushed whole (nothing is held back), and compressed against
//! everything before it, so a feed of similar JSON costs a fraction of its
//! size on the wire. `--max-compressed-streams` bounds the compression
//! contexts held; past it, streams go uncompressed.

use crate::client_limits::PollSlot;
use crate::daemon::Daemon;
use crate::error::RequestError;
use crate::metrics::Counted;
use crate::socket::SocketHandle;
use actix_web::http::header::{ACCEPT, CACHE_CONTROL, CONTENT_ENCODING, HeaderValue, X_CONTENT_TYPE_OPTIONS};
use actix_web::{HttpRequest, HttpResponse};
use bytes::{BufMut, Bytes, BytesMut};
use polysocket_common::compression::{self, GzipStream};
use polysocket_common::wire::ClientMessage;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tokio::time::Instant;

/// Time between heartbeats when the client gives no `ttl`: under the idle
/// timeouts of common proxies (nginx 60 s, AWS ALB 60 s, Cloudflare 100 s).
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// SSE's opening comment: 2 KiB, so proxies and old browsers that buffer the
/// first bytes of a response start passing it through at once.
const SSE_PADDING: usize = 2048;
/// How long an EventSource waits before reconnecting after a stream ends.
const SSE_RETRY_MS: u32 = 500;
/// Most batches one chunk gathers, so a socket the upstream floods still
/// yields to the connection's writes.
const MAX_BATCHES_PER_CHUNK: usize = 64;
/// Past `--max-stream-bytes`, a stream goes on while messages wait for it,
/// up to this many times the limit.
const BUSY_STREAM_FACTOR: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Sse,
    Ndjson,
}

impl Format {
    /// The format `stream=` asks for; without it, SSE when the client
    /// accepts `text/event-stream` (an EventSource), else none: a poll.
    pub fn requested(param: Option<&str>, req: &HttpRequest) -> Result<Option<Format>, RequestError> {
        match param {
            Some("sse") => Ok(Some(Format::Sse)),
            Some("ndjson") => Ok(Some(Format::Ndjson)),
            None | Some("") => {
                let accept = req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
                Ok(accept.contains("text/event-stream").then_some(Format::Sse))
            }
            Some(_) => Err(RequestError::InvalidStream),
        }
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Sse => "text/event-stream; charset=utf-8",
            Format::Ndjson => "application/x-ndjson; charset=utf-8",
        }
    }

    /// What opens the stream: SSE's padding comment and reconnect delay; a
    /// heartbeat line for NDJSON, so its reader knows the stream is live.
    fn opening(self) -> Bytes {
        let mut out = BytesMut::new();
        match self {
            Format::Sse => {
                out.put_u8(b':');
                out.put_bytes(b' ', SSE_PADDING);
                out.put_slice(format!("\nretry: {SSE_RETRY_MS}\n\n").as_bytes());
            }
            Format::Ndjson => self.write(&ClientMessage::Heartbeat, &mut out),
        }
        out.freeze()
    }

    /// One message: an SSE event whose id is its `seq` (heartbeats are
    /// comments), or one NDJSON line. JSON holds no raw newline, so a
    /// message is always one `data:` line.
    fn write(self, message: &ClientMessage, out: &mut BytesMut) {
        match (self, message) {
            (Format::Sse, ClientMessage::Heartbeat) => out.put_slice(b": heartbeat\n\n"),
            (Format::Sse, _) => {
                if let Some(seq) = seq_of(message) {
                    writeln!(out, "id: {seq}").expect("writing to memory succeeds");
                }
                out.put_slice(b"data: ");
                serde_json::to_writer(out.writer(), message).expect("messages serialize");
                out.put_slice(b"\n\n");
            }
            (Format::Ndjson, _) => {
                serde_json::to_writer(out.writer(), message).expect("messages serialize");
                out.put_u8(b'\n');
            }
        }
    }

    /// One chunk of the response: `first`, and the batches that arrived
    /// behind it while the connection was busy (one write, and one pass
    /// through actix's dispatcher, for all of them); and whether the close
    /// is among them.
    fn chunk(
        self,
        first: Vec<ClientMessage>,
        waiting: &mut mpsc::UnboundedReceiver<Vec<ClientMessage>>,
    ) -> (BytesMut, bool) {
        let mut batches = vec![first];
        while batches.len() < MAX_BATCHES_PER_CHUNK
            && let Ok(batch) = waiting.try_recv()
        {
            batches.push(batch);
        }
        let mut chunk = BytesMut::with_capacity(batches.iter().flatten().map(Format::size_hint).sum());
        for message in batches.iter().flatten() {
            self.write(message, &mut chunk);
        }
        let closed = batches.iter().flatten().any(|m| matches!(m, ClientMessage::Close { .. }));
        (chunk, closed)
    }

    /// Room for one written message, so a chunk is allocated once rather
    /// than regrown field by field as serde writes it: the payload, the
    /// JSON and SSE framing around it, and room for escapes.
    fn size_hint(message: &ClientMessage) -> usize {
        const FRAMING: usize = 64;
        let payload = match message {
            ClientMessage::Text { data, .. } | ClientMessage::Binary { data, .. } => data.len(),
            ClientMessage::Close { reason, .. } => reason.len(),
            ClientMessage::Heartbeat => 0,
        };
        payload + payload / 8 + FRAMING
    }
}

fn seq_of(message: &ClientMessage) -> Option<u64> {
    match message {
        ClientMessage::Text { seq, .. } | ClientMessage::Binary { seq, .. } | ClientMessage::Close { seq, .. } => {
            Some(*seq)
        }
        ClientMessage::Heartbeat => None,
    }
}

/// Where a stream starts: SSE's `Last-Event-ID` (an EventSource
/// reconnecting) wins over `ack`.
pub fn start_ack(req: &HttpRequest, ack: Option<u64>) -> Result<Option<u64>, RequestError> {
    match req.headers().get("last-event-id").map(HeaderValue::to_str) {
        None => Ok(ack),
        Some(Ok("")) => Ok(ack),
        Some(Ok(id)) => id.parse().map(Some).map_err(|_| RequestError::InvalidAck),
        Some(Err(_)) => Err(RequestError::InvalidAck),
    }
}

struct Stream {
    /// The socket's batches of messages; ends when a newer poll takes over.
    batches: mpsc::UnboundedReceiver<Vec<ClientMessage>>,
    format: Format,
    ends_at: Instant,
    /// What it has written on the wire, and `--max-stream-bytes`.
    wire_bytes: usize,
    max_wire_bytes: usize,
    /// What it may still hand over before its client acknowledges (half
    /// the socket's queue).
    message_bytes_left: usize,
    opening: Option<Bytes>,
    finished: bool,
    gzip: Option<Gzip>,
    /// Held for the stream's life: it is a waiting receive, and one of its
    /// address's poll slots where those are limited.
    _waiting: (Counted, Counted, Option<PollSlot>),
}

/// The streaming response for a socket the request named, from `ack` (as a
/// poll's), with a heartbeat after each `heartbeat` without a message;
/// gzipped where the client accepts it and a permit is free.
pub async fn respond(
    format: Format,
    daemon: &Daemon,
    handle: SocketHandle,
    slot: Option<PollSlot>,
    heartbeat: Duration,
    ack: Option<u64>,
    gzip_accepted: bool,
) -> Result<HttpResponse, RequestError> {
    let batches = handle.stream(heartbeat, ack).await.ok_or(RequestError::UnknownSocket)?;
    let limits = &daemon.settings.stream;
    let gzip =
        gzip_accepted.then(|| daemon.compressed_streams.clone().try_acquire_owned().ok()).flatten().map(|permit| {
            Gzip {
                // The opening padding must be that long on the wire.
                stream: match format {
                    Format::Sse => GzipStream::padded(SSE_PADDING),
                    Format::Ndjson => GzipStream::default(),
                },
                _permit: permit,
                _counted: Counted::start(&daemon.metrics.streams_compressed),
            }
        });
    let mut response = HttpResponse::Ok();
    if gzip.is_some() {
        response.insert_header((CONTENT_ENCODING, "gzip"));
    }
    let state = Stream {
        batches,
        format,
        ends_at: Instant::now() + limits.lifetime,
        wire_bytes: 0,
        max_wire_bytes: limits.max_bytes,
        message_bytes_left: daemon.settings.socket.max_queue_bytes / 2,
        opening: Some(format.opening()),
        finished: false,
        gzip,
        _waiting: (Counted::start(&daemon.metrics.streams_open), Counted::start(&daemon.metrics.polls_waiting), slot),
    };
    let mut response = response
        .content_type(format.content_type())
        .insert_header((CACHE_CONTROL, "no-cache, no-store, no-transform"))
        .insert_header((X_CONTENT_TYPE_OPTIONS, "nosniff"))
        // nginx passes the response through unbuffered.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(futures_util::stream::unfold(state, |mut state| async move {
            let chunk = state.next_chunk().await?;
            Some((Ok::<_, Infallible>(chunk), state))
        }));
    compression::vary_on_encoding(&mut response);
    Ok(response)
}

/// A gzipped stream's compression context, and the permit it holds.
struct Gzip {
    stream: GzipStream,
    _permit: OwnedSemaphorePermit,
    _counted: Counted,
}

impl Stream {
    /// The next chunk as it goes on the wire.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        let Some(plain) = self.next_plain_chunk().await else {
            // A gzipped stream ends with gzip's trailer.
            return self.gzip.take().map(|gzip| gzip.stream.finish());
        };
        let chunk = match &mut self.gzip {
            Some(gzip) => gzip.stream.write(&plain),
            None => plain,
        };
        self.wire_bytes += chunk.len();
        Some(chunk)
    }

    /// Whether the stream has written all it may on the wire: its limit,
    /// unless messages are waiting (up to [`BUSY_STREAM_FACTOR`] times it).
    fn wire_limit_reached(&self) -> bool {
        self.wire_bytes >= self.max_wire_bytes * BUSY_STREAM_FACTOR
            || (self.wire_bytes >= self.max_wire_bytes && self.batches.is_empty())
    }

    async fn next_plain_chunk(&mut self) -> Option<Bytes> {
        if let Some(opening) = self.opening.take() {
            return Some(opening);
        }
        if self.finished || self.message_bytes_left == 0 || self.wire_limit_reached() {
            return None;
        }
        let first = tokio::time::timeout_at(self.ends_at, self.batches.recv()).await.ok()??;
        let (chunk, closed) = self.format.chunk(first, &mut self.batches);
        // Nothing follows the close. It is not acknowledged here: this
        // stream's client may be gone unnoticed, and the close must then
        // reach its next poll.
        self.finished = closed;
        self.message_bytes_left = self.message_bytes_left.saturating_sub(chunk.len());
        Some(chunk.freeze())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(format: Format, message: ClientMessage) -> String {
        let mut out = BytesMut::new();
        format.write(&message, &mut out);
        String::from_utf8(out.to_vec()).unwrap()
    }

    #[test]
    fn messages_are_written_byte_for_byte_as_documented() {
        let text = ClientMessage::Text { seq: 7, data: "a\nb".into() };
        assert_eq!(
            written(Format::Sse, text.clone()),
            "id: 7\ndata: {\"type\":\"text\",\"seq\":7,\"data\":\"a\\nb\"}\n\n"
        );
        assert_eq!(written(Format::Ndjson, text), "{\"type\":\"text\",\"seq\":7,\"data\":\"a\\nb\"}\n");
        assert_eq!(written(Format::Sse, ClientMessage::Heartbeat), ": heartbeat\n\n");
        assert_eq!(written(Format::Ndjson, ClientMessage::Heartbeat), "{\"type\":\"heartbeat\"}\n");
        let opening = Format::Sse.opening();
        assert_eq!(opening.len(), 1 + SSE_PADDING + "\nretry: 500\n\n".len());
        assert!(opening.starts_with(b":   ") && opening.ends_with(b"\nretry: 500\n\n"));
    }

    /// A plain NDJSON stream of at most `max_wire_bytes`, fed by the returned sink.
    fn stream(max_wire_bytes: usize) -> (Stream, mpsc::UnboundedSender<Vec<ClientMessage>>) {
        let (sink, batches) = mpsc::unbounded_channel();
        let gauge = prometheus::IntGauge::new("g", "g").unwrap();
        let stream = Stream {
            batches,
            format: Format::Ndjson,
            ends_at: Instant::now() + Duration::from_secs(60),
            wire_bytes: 0,
            max_wire_bytes,
            message_bytes_left: usize::MAX,
            opening: None,
            finished: false,
            gzip: None,
            _waiting: (Counted::start(&gauge), Counted::start(&gauge), None),
        };
        (stream, sink)
    }

    async fn chunks(mut stream: Stream) -> Vec<usize> {
        let mut sizes = Vec::new();
        while let Some(chunk) = stream.next_chunk().await {
            sizes.push(chunk.len());
        }
        sizes
    }

    #[tokio::test]
    async fn a_stream_past_its_byte_limit_goes_on_while_messages_wait_up_to_twice_it() {
        let text = |seq| vec![ClientMessage::Text { seq, data: "x".repeat(100) }];
        // A line's length, give or take the digits of its seq.
        let line = written(Format::Ndjson, text(100).remove(0)).len();

        // Nothing waits once the limit is reached: the stream ends there.
        let (quiet, sink) = stream(1);
        sink.send(text(1)).unwrap();
        let ended = tokio::time::timeout(Duration::from_secs(5), chunks(quiet)).await;
        assert_eq!(ended.expect("the stream ended").len(), 1, "ended at its limit");
        drop(sink);

        // Messages waiting once the limit is passed (three chunks' worth,
        // of about 64 lines each): on while they wait...
        let busy = |max_wire_bytes| {
            let (busy, sink) = stream(max_wire_bytes);
            for seq in 1..=3 * MAX_BATCHES_PER_CHUNK as u64 {
                sink.send(text(seq)).unwrap();
            }
            chunks(busy)
        };
        assert_eq!(busy(100 * line).await.len(), 3, "the limit passed in the second chunk, the third still goes");
        // ... up to twice the limit.
        assert_eq!(busy(40 * line).await.len(), 2, "twice the limit passed in the second chunk");
    }

    #[test]
    fn batches_waiting_behind_the_first_go_out_in_one_chunk_allocated_once() {
        let text = |seq, data: &str| ClientMessage::Text { seq, data: data.into() };
        let close = ClientMessage::Close { seq: 5, code: 1000, reason: "bye".into() };
        let later = vec![
            vec![text(2, "b"), ClientMessage::Binary { seq: 3, data: "AAEC".into() }],
            vec![ClientMessage::Heartbeat],
            vec![text(4, &"\"quoted\" ".repeat(40)), close.clone()],
        ];
        for format in [Format::Sse, Format::Ndjson] {
            let (sink, mut waiting) = mpsc::unbounded_channel();
            for batch in &later {
                sink.send(batch.clone()).unwrap();
            }
            let first = vec![text(1, "a")];
            let all: Vec<_> = first.iter().chain(later.iter().flatten()).cloned().collect();
            let (chunk, closed) = format.chunk(first, &mut waiting);
            let expected: String = all.iter().map(|m| written(format, m.clone())).collect();
            assert_eq!(String::from_utf8(chunk.to_vec()).unwrap(), expected);
            assert!(closed);
            assert!(waiting.try_recv().is_err(), "every waiting batch was taken");
            let hint: usize = all.iter().map(Format::size_hint).sum();
            assert_eq!(chunk.capacity(), hint, "the chunk was not regrown while written");
        }
    }
}
