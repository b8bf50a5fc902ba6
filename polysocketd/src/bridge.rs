//! One bridged socket: an owner task holding the upstream WebSocket and the
//! client's receive queue, and the cloneable [`SocketHandle`] HTTP handlers
//! use to reach it.
//!
//! All state of a socket lives in its task, so requests on different sockets
//! never contend, and the order of messages is simply the order of the queue.
//! The task also does what awc leaves to its user under RFC 6455: answering
//! pings, reassembling fragments, validating UTF-8, and running the closing
//! handshake.

use crate::fragments::{Assembly, AssemblyError};
use crate::metrics::DaemonMetrics;
use crate::upstream::Upstream;
use actix_http::ws::{Item, ProtocolError};
use awc::ws::{CloseCode, CloseReason, Frame, Message};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use polysocket_common::limits::Limit;
use polysocket_common::wire::ClientMessage;
use rand::Rng;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

/// Requests a socket may have waiting for its owner; senders beyond that
/// wait their turn, which is the backpressure a slow upstream needs.
const COMMAND_QUEUE: usize = 32;
/// How long to wait for the upstream's Close after sending ours.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// A message from the client for the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Text(String),
    Binary(Bytes),
}

impl Outgoing {
    fn is_text(&self) -> bool {
        matches!(self, Outgoing::Text(_))
    }

    fn bytes(&self) -> &[u8] {
        match self {
            Outgoing::Text(text) => text.as_bytes(),
            Outgoing::Binary(bytes) => bytes,
        }
    }
}

/// One `/s` request as the owner sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Send {
    pub message: Outgoing,
    /// The client's sequence number, making retried sends idempotent.
    pub seq: Option<u64>,
    /// More fragments of this message follow (long messages over GET).
    pub more: bool,
}

/// Why a send (or a client close) was not forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendFailure {
    #[error("socket is closed")]
    Closed,
    #[error("upstream did not take the message in time")]
    Timeout,
    #[error("upstream write failed")]
    Upstream,
    #[error("out of order: expected seq {expected}")]
    OutOfOrder { expected: u64 },
    #[error("message too big")]
    TooBig,
    #[error("fragments of one message must all have the same t")]
    MixedFragments,
    #[error("too many sends on this socket: retry in {}s", polysocket_common::limits::retry_after_secs(*.0))]
    RateLimited(Duration),
}

/// What a poll gets.
#[derive(Debug)]
pub enum PollOutcome {
    Messages(Vec<ClientMessage>),
    /// A newer poll on the same socket took over.
    Superseded,
    /// The socket has ended and its close was acknowledged.
    Gone,
}

enum Command {
    // Boxed: each socket's channel allocates its slots 32 at a time, sized
    // for the largest command, and most sockets sit idle.
    Send { send: Box<Send>, reply: oneshot::Sender<Result<(), SendFailure>> },
    Close { reason: Option<CloseReason>, reply: oneshot::Sender<Result<(), SendFailure>> },
    Poll { ttl: Duration, ack: Option<u64>, reply: oneshot::Sender<PollOutcome> },
}

/// How HTTP handlers reach a socket's owner task.
#[derive(Clone)]
pub struct SocketHandle {
    commands: mpsc::Sender<Command>,
}

impl SocketHandle {
    async fn ask<T>(&self, command: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(command(reply)).await.ok()?;
        answer.await.ok()
    }

    pub async fn send(&self, send: Send) -> Result<(), SendFailure> {
        self.ask(|reply| Command::Send { send: Box::new(send), reply }).await.unwrap_or(Err(SendFailure::Closed))
    }

    /// Starts the closing handshake (`None`: a Close without a code); the
    /// upstream's answer arrives on `/j`.
    pub async fn close(&self, reason: Option<CloseReason>) -> Result<(), SendFailure> {
        self.ask(|reply| Command::Close { reason, reply }).await.unwrap_or(Err(SendFailure::Closed))
    }

    /// Waits up to `ttl` for messages. `ack` releases messages up to that
    /// `seq`; without it, everything returned by earlier polls is released.
    pub async fn poll(&self, ttl: Duration, ack: Option<u64>) -> PollOutcome {
        self.ask(|reply| Command::Poll { ttl, ack, reply }).await.unwrap_or(PollOutcome::Gone)
    }
}

/// Per-socket limits, shared by all sockets of a daemon.
#[derive(Debug, Clone)]
pub struct Limits {
    pub idle_timeout: Duration,
    pub max_message_bytes: usize,
    pub max_queue_bytes: usize,
    pub send_timeout: Duration,
    /// Longest time between pings to the upstream.
    pub ping_interval: Duration,
    /// Sends per second one socket may make (0: no limit).
    pub max_sends_per_second: u32,
}

/// How a socket ended, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The close was delivered to the client.
    Delivered {
        code: u16,
    },
    Idle,
    /// Every handle was dropped (daemon shutting down, or the create was abandoned).
    Abandoned,
}

/// A new bridged socket: the handle for handlers, the owner task to spawn,
/// and a signal for when the upstream connection is over.
pub struct Bridge<O> {
    pub handle: SocketHandle,
    /// The owner task. Spawn it on the thread the upstream was opened on (awc
    /// is `!Send`). It finishes when the socket has ended and its close was
    /// acknowledged, when it has gone idle, or when every handle is gone.
    pub owner: O,
    /// Resolves (`Ok` or `Err`) once the upstream connection is over, which
    /// may be well before the client has read the close: the moment the
    /// socket stops counting against limits.
    pub upstream_ended: oneshot::Receiver<()>,
}

pub fn bridge(upstream: Upstream, limits: Limits, metrics: Arc<DaemonMetrics>) -> Bridge<impl Future<Output = End>> {
    let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let (ended_tx, upstream_ended) = oneshot::channel();
    let now = Instant::now();
    let owner = Owner {
        sends: Limit::per_second(limits.max_sends_per_second),
        ping_at: now + random_ping_interval(limits.ping_interval),
        upstream,
        commands,
        limits,
        metrics,
        queue: VecDeque::new(),
        queued_bytes: 0,
        next_seq: 1,
        returned_upto: 0,
        waiting: None,
        incoming: None,
        outgoing: None,
        client_seq: 0,
        closing_deadline: None,
        closed: None,
        upstream_ended: Some(ended_tx),
        idle_since: now,
        awaiting_pong: false,
    };
    Bridge { handle: SocketHandle { commands: commands_tx }, owner: owner.run(), upstream_ended }
}

/// What the owner's timer fires for.
#[derive(Clone, Copy)]
enum Due {
    /// The waiting poll's ttl ran out: it gets a heartbeat.
    Poll,
    Ping,
    /// The upstream did not answer our Close in time.
    Closing,
    Idle,
}

struct WaitingPoll {
    reply: oneshot::Sender<PollOutcome>,
    deadline: Instant,
}

struct QueuedMessage {
    seq: u64,
    size: usize,
    message: ClientMessage,
}

struct Owner {
    upstream: Upstream,
    commands: mpsc::Receiver<Command>,
    limits: Limits,
    metrics: Arc<DaemonMetrics>,
    /// This socket's send rate.
    sends: Limit,
    /// Messages not yet acknowledged by the client, oldest first.
    queue: VecDeque<QueuedMessage>,
    /// Payload bytes in `queue`; reading the upstream pauses at the limit.
    queued_bytes: usize,
    next_seq: u64,
    /// Highest `seq` handed to a poll that reached its client, so a poll
    /// without `ack` knows what it acknowledges.
    returned_upto: u64,
    waiting: Option<WaitingPoll>,
    /// An upstream message arriving in continuation frames.
    incoming: Option<Assembly>,
    /// A client message arriving in `more=1` requests.
    outgoing: Option<Assembly>,
    /// The last client `seq` accepted.
    client_seq: u64,
    /// Set while our Close awaits the upstream's answer.
    closing_deadline: Option<Instant>,
    /// Set once the upstream connection is over: code and reason delivered
    /// to the client as the final message.
    closed: Option<(u16, String)>,
    /// Told when `closed` is set; dropped with the owner otherwise.
    upstream_ended: Option<oneshot::Sender<()>>,
    /// When the client was last active (end of its last poll, or a send).
    idle_since: Instant,
    ping_at: Instant,
    /// A ping is outstanding; reaching the next ping time without a pong
    /// means the upstream is gone.
    awaiting_pong: bool,
}

impl Owner {
    async fn run(mut self) -> End {
        // One timer for whichever deadline comes first: re-creating a timer
        // per deadline on every turn of the loop cost a timer-wheel insert
        // and removal each, several times per round trip.
        let timer = sleep_until(Instant::now());
        tokio::pin!(timer);
        loop {
            let can_read = self.closed.is_none() && self.queued_bytes < self.limits.max_queue_bytes;
            let (due_at, due) = self.next_due();
            if timer.deadline() != due_at {
                timer.as_mut().reset(due_at);
            }
            tokio::select! {
                frame = self.upstream.next(), if can_read => self.on_frame(frame).await,
                command = self.commands.recv() => match command {
                    Some(Command::Send { send, reply }) => {
                        self.idle_since = Instant::now();
                        let _ = reply.send(self.on_send(*send).await);
                    }
                    Some(Command::Close { reason, reply }) => {
                        self.idle_since = Instant::now();
                        let _ = reply.send(self.start_close(reason).await);
                    }
                    Some(Command::Poll { ttl, ack, reply }) => self.on_poll(ttl, ack, reply),
                    None => {
                        self.close_and_wait(CloseCode::Away, "going away").await;
                        return End::Abandoned;
                    }
                },
                () = &mut timer => match due {
                    Due::Poll => {
                        self.answer_waiting(PollOutcome::Messages(vec![ClientMessage::Heartbeat]));
                    }
                    Due::Ping => self.keepalive().await,
                    Due::Closing => {
                        let _ = self.upstream.close().await;
                        self.end_with(1006, "upstream did not answer the close".into());
                    }
                    Due::Idle => {
                        self.close_and_wait(CloseCode::Away, "idle").await;
                        return End::Idle;
                    }
                },
            }
            if let (Some((code, _)), true, None) = (&self.closed, self.queue.is_empty(), &self.waiting) {
                return End::Delivered { code: *code };
            }
        }
    }

    /// The earliest of the deadlines that currently apply, and what it is for.
    fn next_due(&self) -> (Instant, Due) {
        let open = self.closed.is_none() && self.closing_deadline.is_none();
        let waiting_poll = self.waiting.as_ref().map(|w| (w.deadline, Due::Poll));
        // A socket with a poll waiting is in use; idleness counts from its end.
        let idle = self.waiting.is_none().then(|| (self.idle_since + self.limits.idle_timeout, Due::Idle));
        let ping = open.then_some((self.ping_at, Due::Ping));
        let closing = self.closing_deadline.map(|at| (at, Due::Closing));
        [waiting_poll, idle, ping, closing]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
            .expect("an owner without a waiting poll always has an idle deadline")
    }

    async fn on_send(&mut self, send: Send) -> Result<(), SendFailure> {
        if self.closed.is_some() || self.closing_deadline.is_some() {
            return Err(SendFailure::Closed);
        }
        if let Some(seq) = send.seq {
            if seq <= self.client_seq {
                // A retry of a send that was accepted: accepted again, not
                // repeated, and not counted against the rate a second time.
                return Ok(());
            }
            if seq != self.client_seq + 1 {
                return Err(SendFailure::OutOfOrder { expected: self.client_seq + 1 });
            }
        }
        self.sends.check().map_err(SendFailure::RateLimited)?;
        if let Some(message) = self.assemble(send.message, send.more)? {
            self.forward(message).await?;
        }
        if let Some(seq) = send.seq {
            self.client_seq = seq;
        }
        Ok(())
    }

    /// Appends a `more=1` fragment, or returns the message that is complete.
    fn assemble(&mut self, message: Outgoing, more: bool) -> Result<Option<Outgoing>, SendFailure> {
        let max = self.limits.max_message_bytes;
        let Some(mut assembly) = self.outgoing.take().or_else(|| more.then(|| Assembly::new(message.is_text(), max)))
        else {
            return if message.bytes().len() > max { Err(SendFailure::TooBig) } else { Ok(Some(message)) };
        };
        if assembly.is_text() != message.is_text() {
            // Only this piece is refused; the message so far stays.
            self.outgoing = Some(assembly);
            return Err(SendFailure::MixedFragments);
        }
        // Over the limit, the pieces so far are dropped with the assembly.
        assembly.push(message.bytes(), !more).map_err(|_| SendFailure::TooBig)?;
        if more {
            self.outgoing = Some(assembly);
            return Ok(None);
        }
        let text = assembly.is_text();
        let data = assembly.finish();
        Ok(Some(if text {
            Outgoing::Text(String::from_utf8(data.into()).expect("pieces are each UTF-8 strings"))
        } else {
            Outgoing::Binary(data)
        }))
    }

    async fn forward(&mut self, message: Outgoing) -> Result<(), SendFailure> {
        let size = message.bytes().len();
        let frame = match message {
            Outgoing::Text(text) => Message::Text(text.into()),
            Outgoing::Binary(bytes) => Message::Binary(bytes),
        };
        match tokio::time::timeout(self.limits.send_timeout, self.upstream.send(frame)).await {
            Ok(Ok(())) => {
                self.metrics.to_upstream.count(size);
                Ok(())
            }
            Ok(Err(_)) => {
                self.end_with(1006, "upstream write failed".into());
                Err(SendFailure::Upstream)
            }
            Err(_) => Err(SendFailure::Timeout),
        }
    }

    /// Client-initiated close: our Close goes out now, the upstream's answer
    /// (or a timeout) ends the connection.
    async fn start_close(&mut self, reason: Option<CloseReason>) -> Result<(), SendFailure> {
        if self.closed.is_some() {
            return Err(SendFailure::Closed);
        }
        if self.closing_deadline.is_some() {
            return Ok(());
        }
        if self.upstream.send(Message::Close(reason)).await.is_err() {
            self.end_with(1006, "upstream write failed".into());
            return Err(SendFailure::Upstream);
        }
        self.closing_deadline = Some(Instant::now() + CLOSE_WAIT);
        Ok(())
    }

    fn on_poll(&mut self, ttl: Duration, ack: Option<u64>, reply: oneshot::Sender<PollOutcome>) {
        self.answer_waiting(PollOutcome::Superseded);
        // Nothing beyond what was returned can be acknowledged; an `ack`
        // below it means answers were lost, and they are returned again.
        let ack = ack.map_or(self.returned_upto, |ack| ack.min(self.returned_upto));
        while self.queue.front().is_some_and(|m| m.seq <= ack) {
            let released = self.queue.pop_front().expect("checked non-empty");
            self.queued_bytes -= released.size;
        }
        self.returned_upto = ack;
        if self.queue.is_empty() && self.closed.is_some() {
            self.idle_since = Instant::now();
            let _ = reply.send(PollOutcome::Gone);
            return;
        }
        self.waiting = Some(WaitingPoll { reply, deadline: Instant::now() + ttl });
        self.flush();
    }

    /// Hands everything queued to the waiting poll, if there is one.
    fn flush(&mut self) {
        let Some(last_seq) = self.queue.back().map(|m| m.seq) else { return };
        if self.waiting.is_none() {
            return;
        }
        let messages = self.queue.iter().map(|m| m.message.clone()).collect();
        if self.answer_waiting(PollOutcome::Messages(messages)) {
            self.returned_upto = last_seq;
        }
    }

    /// Answers the waiting poll; `true` if its client was still there.
    fn answer_waiting(&mut self, outcome: PollOutcome) -> bool {
        let Some(waiting) = self.waiting.take() else { return false };
        self.idle_since = Instant::now();
        waiting.reply.send(outcome).is_ok()
    }

    fn enqueue(&mut self, size: usize, build: impl FnOnce(u64) -> ClientMessage) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push_back(QueuedMessage { seq, size, message: build(seq) });
        self.queued_bytes += size;
        self.flush();
    }

    async fn deliver(&mut self, text: bool, data: Bytes) {
        let size = data.len();
        self.metrics.to_client.count(size);
        if !text {
            let encoded = BASE64.encode(&data);
            return self.enqueue(size, |seq| ClientMessage::Binary { seq, data: encoded });
        }
        match String::from_utf8(data.into()) {
            Ok(text) => self.enqueue(size, |seq| ClientMessage::Text { seq, data: text }),
            Err(_) => self.fail(CloseCode::Invalid, "invalid UTF-8 in text message").await,
        }
    }

    async fn on_frame(&mut self, frame: Option<Result<Frame, ProtocolError>>) {
        match frame {
            Some(Ok(Frame::Text(data))) => self.deliver(true, data).await,
            Some(Ok(Frame::Binary(data))) => self.deliver(false, data).await,
            Some(Ok(Frame::Continuation(item))) => self.on_fragment(item).await,
            Some(Ok(Frame::Ping(payload))) => {
                if self.upstream.send(Message::Pong(payload)).await.is_err() {
                    self.end_with(1006, "upstream write failed".into());
                }
            }
            Some(Ok(Frame::Pong(_))) => self.awaiting_pong = false,
            Some(Ok(Frame::Close(reason))) => self.on_close(reason).await,
            Some(Err(ProtocolError::Overflow)) => self.fail(CloseCode::Size, "message too big").await,
            Some(Err(ProtocolError::Io(_))) | None => self.end_with(1006, "connection lost".into()),
            Some(Err(e)) => self.fail(CloseCode::Protocol, &format!("protocol error: {e}")).await,
        }
    }

    async fn on_close(&mut self, reason: Option<CloseReason>) {
        let (code, text) = match &reason {
            Some(r) => (u16::from(r.code), r.description.clone().unwrap_or_default()),
            None => (1005, String::new()),
        };
        if self.closing_deadline.is_none() {
            // The upstream started the closing handshake: echo its code
            // (RFC 6455 §5.5.1). Without a code, answer with none: 1005 is
            // never sent on the wire.
            let echo = reason.map(|r| CloseReason::from(r.code));
            let _ = self.upstream.send(Message::Close(echo)).await;
        }
        let _ = self.upstream.close().await;
        self.end_with(code, text);
    }

    async fn on_fragment(&mut self, item: Item) {
        let max = self.limits.max_message_bytes;
        let (data, last) = match item {
            Item::FirstText(data) => {
                self.incoming = Some(Assembly::new(true, max));
                (data, false)
            }
            Item::FirstBinary(data) => {
                self.incoming = Some(Assembly::new(false, max));
                (data, false)
            }
            Item::Continue(data) => (data, false),
            Item::Last(data) => (data, true),
        };
        // The codec rejects continuations without a start; this cannot be None.
        let Some(assembly) = self.incoming.as_mut() else { return };
        match assembly.push(&data, last) {
            Err(AssemblyError::TooBig) => return self.fail(CloseCode::Size, "message too big").await,
            Err(AssemblyError::NotUtf8) => return self.fail(CloseCode::Invalid, "invalid UTF-8 in text message").await,
            Ok(()) => {}
        }
        if last {
            let assembly = self.incoming.take().expect("checked above");
            self.deliver(assembly.is_text(), assembly.finish()).await;
        }
    }

    async fn keepalive(&mut self) {
        self.ping_at = Instant::now() + random_ping_interval(self.limits.ping_interval);
        if self.awaiting_pong {
            let _ = self.upstream.close().await;
            return self.end_with(1006, "upstream stopped answering pings".into());
        }
        self.awaiting_pong = true;
        if self.upstream.send(Message::Ping(Bytes::from_static(b"polysocket"))).await.is_err() {
            self.end_with(1006, "upstream write failed".into());
        }
    }

    /// Fails the connection with `code` (RFC 6455 §7.1.7): the upstream gets
    /// a Close and the client is told why.
    async fn fail(&mut self, code: CloseCode, reason: &str) {
        self.incoming = None;
        let close = Message::Close(Some(CloseReason { code, description: Some(reason.to_owned()) }));
        let _ = self.upstream.send(close).await;
        let _ = self.upstream.close().await;
        self.end_with(u16::from(code), reason.to_owned());
    }

    /// Records the end of the upstream connection; the client gets it as the
    /// final message. 1006 ("lost") is reported here but never sent on the wire.
    fn end_with(&mut self, code: u16, reason: String) {
        if self.closed.is_some() {
            return;
        }
        log::debug!("upstream connection ended: {code} {reason}");
        self.closing_deadline = None;
        self.closed = Some((code, reason.clone()));
        if let Some(ended) = self.upstream_ended.take() {
            let _ = ended.send(());
        }
        self.enqueue(0, |seq| ClientMessage::Close { seq, code, reason });
    }

    /// Closes an upstream nobody will read from any more, giving the peer a
    /// bounded moment to answer.
    async fn close_and_wait(&mut self, code: CloseCode, reason: &str) {
        if self.closed.is_some() {
            return;
        }
        let close = Message::Close(Some(CloseReason { code, description: Some(reason.to_owned()) }));
        if self.closing_deadline.is_some() || self.upstream.send(close).await.is_ok() {
            let _ = tokio::time::timeout(CLOSE_WAIT, async {
                while let Some(Ok(frame)) = self.upstream.next().await {
                    if matches!(frame, Frame::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        let _ = self.upstream.close().await;
    }
}

/// A random time in the last 30% before `max`: pings come at least every
/// `max` as upstream protocols expect, and sockets opened together do not
/// ping in lockstep.
fn random_ping_interval(max: Duration) -> Duration {
    let max_ms = max.as_millis().max(1) as u64;
    Duration::from_millis(rand::rng().random_range(max_ms * 7 / 10..=max_ms))
}
