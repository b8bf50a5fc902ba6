//! One bridged socket: an owner task holding the upstream WebSocket and the
//! client's receive queue, and the cloneable [`SocketHandle`] HTTP handlers
//! use to reach it.
//!
//! All state of a socket lives in its task, so requests on different sockets
//! never contend, and the order of messages is simply the order of the queue.

use crate::upstream::Upstream;
use actix_http::ws::Item;
use awc::ws::{CloseCode, CloseReason, Frame, Message};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use polysocket_common::wire::ClientMessage;
use rand::Rng;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

/// Requests a socket may have waiting for its owner; senders beyond that
/// wait their turn, which is the backpressure a slow upstream needs.
const COMMAND_QUEUE: usize = 32;
/// The upstream is pinged at a random interval in this range (ms): at least
/// every 10 s as upstream protocols expect, randomized so that thousands of
/// sockets opened together do not ping in lockstep.
const PING_INTERVAL_MS: std::ops::Range<u64> = 7_000..10_000;
/// How long to wait for the upstream's Close after sending ours.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// A message from the client for the upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    Text(String),
    Binary(Bytes),
}

impl Outgoing {
    fn into_message(self) -> Message {
        match self {
            Outgoing::Text(text) => Message::Text(text.into()),
            Outgoing::Binary(bytes) => Message::Binary(bytes),
        }
    }
}

/// Why a send was not forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendFailure {
    #[error("socket is closed")]
    Closed,
    #[error("upstream did not take the message in time")]
    Timeout,
    #[error("upstream write failed")]
    Upstream,
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
    Send { message: Outgoing, reply: oneshot::Sender<Result<(), SendFailure>> },
    Poll { ttl: Duration, ack: Option<u64>, reply: oneshot::Sender<PollOutcome> },
}

/// How HTTP handlers reach a socket's owner task.
#[derive(Clone)]
pub struct SocketHandle {
    commands: mpsc::Sender<Command>,
}

impl SocketHandle {
    pub async fn send(&self, message: Outgoing) -> Result<(), SendFailure> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(Command::Send { message, reply }).await.map_err(|_| SendFailure::Closed)?;
        answer.await.unwrap_or(Err(SendFailure::Closed))
    }

    /// Waits up to `ttl` for messages. `ack` releases messages up to that
    /// `seq`; without it, everything returned by earlier polls is released.
    pub async fn poll(&self, ttl: Duration, ack: Option<u64>) -> PollOutcome {
        let (reply, answer) = oneshot::channel();
        if self.commands.send(Command::Poll { ttl, ack, reply }).await.is_err() {
            return PollOutcome::Gone;
        }
        answer.await.unwrap_or(PollOutcome::Gone)
    }
}

/// Per-socket limits, shared by all sockets of a daemon.
#[derive(Debug, Clone)]
pub struct Limits {
    pub idle_timeout: Duration,
    pub max_message_bytes: usize,
    pub max_queue_bytes: usize,
    pub send_timeout: Duration,
}

/// Creates the owner for an open upstream. The returned future is the owner
/// task (spawn it on the thread the upstream was opened on: awc is `!Send`);
/// it finishes when the socket has ended and been acknowledged, gone idle, or
/// lost every handle.
pub fn bridge(upstream: Upstream, limits: Limits) -> (SocketHandle, impl Future<Output = End>) {
    let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let owner = Owner {
        upstream,
        commands,
        limits,
        queue: VecDeque::new(),
        queued_bytes: 0,
        next_seq: 1,
        returned_upto: 0,
        waiting: None,
        fragments: None,
        closed: None,
        idle_since: Instant::now(),
        awaiting_pong: false,
    };
    (SocketHandle { commands: commands_tx }, owner.run())
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

struct WaitingPoll {
    reply: oneshot::Sender<PollOutcome>,
    deadline: Instant,
}

/// A fragmented message being reassembled.
struct Fragments {
    text: bool,
    data: BytesMut,
}

struct Owner {
    upstream: Upstream,
    commands: mpsc::Receiver<Command>,
    limits: Limits,
    /// Messages not yet acknowledged by the client, oldest first.
    queue: VecDeque<QueuedMessage>,
    /// Payload bytes in `queue`; reading the upstream pauses at the limit.
    queued_bytes: usize,
    next_seq: u64,
    /// Highest `seq` handed to a poll that reached its client, so a poll
    /// without `ack` knows what it acknowledges.
    returned_upto: u64,
    waiting: Option<WaitingPoll>,
    fragments: Option<Fragments>,
    /// Set once the upstream connection is over: code and reason delivered
    /// to the client as the final message.
    closed: Option<(u16, String)>,
    /// When the client was last active (end of its last poll, or a send).
    idle_since: Instant,
    /// A ping is outstanding; another tick without a pong means the
    /// upstream is gone.
    awaiting_pong: bool,
}

struct QueuedMessage {
    seq: u64,
    size: usize,
    message: ClientMessage,
}

impl Owner {
    async fn run(mut self) -> End {
        let mut ping_at = Instant::now() + random_ping_interval();
        loop {
            let can_read = self.closed.is_none() && self.queued_bytes < self.limits.max_queue_bytes;
            let poll_deadline = self.waiting.as_ref().map(|w| w.deadline);
            let idle_deadline = self.waiting.is_none().then(|| self.idle_since + self.limits.idle_timeout);
            tokio::select! {
                frame = self.upstream.next(), if can_read => self.on_frame(frame).await,
                command = self.commands.recv() => match command {
                    Some(Command::Send { message, reply }) => {
                        self.idle_since = Instant::now();
                        let _ = reply.send(self.forward(message).await);
                    }
                    Some(Command::Poll { ttl, ack, reply }) => self.on_poll(ttl, ack, reply),
                    None => {
                        self.close_upstream(CloseCode::Away, "going away").await;
                        return End::Abandoned;
                    }
                },
                _ = sleep_until(poll_deadline.unwrap_or_else(Instant::now)), if poll_deadline.is_some() => {
                    self.answer_waiting(|_| PollOutcome::Messages(vec![ClientMessage::Heartbeat]));
                }
                _ = sleep_until(ping_at), if self.closed.is_none() => {
                    ping_at = Instant::now() + random_ping_interval();
                    self.keepalive().await;
                }
                _ = sleep_until(idle_deadline.unwrap_or_else(Instant::now)), if idle_deadline.is_some() => {
                    self.close_upstream(CloseCode::Away, "idle").await;
                    return End::Idle;
                }
            }
            if let Some(code) = self.finished() {
                return End::Delivered { code };
            }
        }
    }

    /// The socket is over once its close has been acknowledged by a poll.
    fn finished(&self) -> Option<u16> {
        match (&self.closed, self.queue.is_empty(), &self.waiting) {
            (Some((code, _)), true, None) => Some(*code),
            _ => None,
        }
    }

    async fn forward(&mut self, message: Outgoing) -> Result<(), SendFailure> {
        if self.closed.is_some() {
            return Err(SendFailure::Closed);
        }
        match tokio::time::timeout(self.limits.send_timeout, self.upstream.send(message.into_message())).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => {
                self.upstream_lost("upstream write failed");
                Err(SendFailure::Upstream)
            }
            Err(_) => Err(SendFailure::Timeout),
        }
    }

    fn on_poll(&mut self, ttl: Duration, ack: Option<u64>, reply: oneshot::Sender<PollOutcome>) {
        self.answer_waiting(|_| PollOutcome::Superseded);
        // Nothing beyond what was returned can be acknowledged; an `ack`
        // below it means responses were lost, and they are returned again.
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
        if !self.queue.is_empty() {
            self.flush();
        }
    }

    /// Hands everything queued to the waiting poll, if any.
    fn flush(&mut self) {
        let messages: Vec<ClientMessage> = self.queue.iter().map(|m| m.message.clone()).collect();
        let last_seq = self.queue.back().map(|m| m.seq);
        if self.answer_waiting(|_| PollOutcome::Messages(messages))
            && let Some(seq) = last_seq
        {
            self.returned_upto = seq;
        }
    }

    /// Answers the waiting poll; `true` if its client was still there.
    fn answer_waiting(&mut self, outcome: impl FnOnce(&mut Self) -> PollOutcome) -> bool {
        let Some(waiting) = self.waiting.take() else {
            return false;
        };
        self.idle_since = Instant::now();
        let outcome = outcome(self);
        waiting.reply.send(outcome).is_ok()
    }

    fn enqueue(&mut self, build: impl FnOnce(u64) -> ClientMessage, size: usize) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push_back(QueuedMessage { seq, size, message: build(seq) });
        self.queued_bytes += size;
        self.flush();
    }

    async fn deliver(&mut self, text: bool, data: Bytes) {
        if text {
            match String::from_utf8(data.to_vec()) {
                Ok(text) => self.enqueue(|seq| ClientMessage::Text { seq, data: text }, data.len()),
                Err(_) => self.fail(CloseCode::Invalid, "invalid UTF-8 in text message").await,
            }
        } else {
            let encoded = BASE64.encode(&data);
            self.enqueue(|seq| ClientMessage::Binary { seq, data: encoded }, data.len());
        }
    }

    async fn on_frame(&mut self, frame: Option<Result<Frame, awc::error::WsProtocolError>>) {
        match frame {
            Some(Ok(Frame::Text(data))) if self.fragments.is_none() => self.deliver(true, data).await,
            Some(Ok(Frame::Binary(data))) if self.fragments.is_none() => self.deliver(false, data).await,
            Some(Ok(Frame::Continuation(item))) => self.on_fragment(item).await,
            Some(Ok(Frame::Text(_) | Frame::Binary(_))) => {
                self.fail(CloseCode::Protocol, "new message before the fragmented one ended").await;
            }
            Some(Ok(Frame::Ping(payload))) => {
                if self.upstream.send(Message::Pong(payload)).await.is_err() {
                    self.upstream_lost("upstream write failed");
                }
            }
            Some(Ok(Frame::Pong(_))) => self.awaiting_pong = false,
            Some(Ok(Frame::Close(reason))) => {
                let (code, reason) = match reason {
                    Some(r) => (u16::from(r.code), r.description.unwrap_or_default()),
                    None => (1005, String::new()),
                };
                // Echo the code (RFC 6455 §5.5.1); 1005 is never sent on the wire.
                let echo = (code != 1005).then(|| CloseReason::from(CloseCode::from(code)));
                let _ = self.upstream.send(Message::Close(echo)).await;
                let _ = self.upstream.close().await;
                self.end_with(code, reason);
            }
            Some(Err(e)) => self.fail(CloseCode::Protocol, &format!("protocol error: {e}")).await,
            None => self.upstream_lost("connection lost"),
        }
    }

    async fn on_fragment(&mut self, item: Item) {
        let (data, last) = match item {
            Item::FirstText(_) | Item::FirstBinary(_) if self.fragments.is_some() => {
                return self.fail(CloseCode::Protocol, "new message before the fragmented one ended").await;
            }
            Item::FirstText(data) => {
                self.fragments = Some(Fragments { text: true, data: BytesMut::new() });
                (data, false)
            }
            Item::FirstBinary(data) => {
                self.fragments = Some(Fragments { text: false, data: BytesMut::new() });
                (data, false)
            }
            Item::Continue(data) => (data, false),
            Item::Last(data) => (data, true),
        };
        let Some(fragments) = self.fragments.as_mut() else {
            return self.fail(CloseCode::Protocol, "continuation without a message start").await;
        };
        if fragments.data.len() + data.len() > self.limits.max_message_bytes {
            return self.fail(CloseCode::Size, "message too big").await;
        }
        fragments.data.extend_from_slice(&data);
        if last {
            let Fragments { text, data } = self.fragments.take().expect("checked above");
            self.deliver(text, data.freeze()).await;
        }
    }

    async fn keepalive(&mut self) {
        if self.awaiting_pong {
            self.upstream_lost("upstream stopped answering pings");
            return;
        }
        self.awaiting_pong = true;
        if self.upstream.send(Message::Ping(Bytes::from_static(b"polysocket"))).await.is_err() {
            self.upstream_lost("upstream write failed");
        }
    }

    /// Fails the connection with `code` (RFC 6455 §7.1.7): the upstream gets
    /// a Close and the client is told why.
    async fn fail(&mut self, code: CloseCode, reason: &str) {
        self.fragments = None;
        let close = Message::Close(Some(CloseReason { code, description: Some(reason.to_owned()) }));
        let _ = self.upstream.send(close).await;
        let _ = self.upstream.close().await;
        self.end_with(u16::from(code), reason.to_owned());
    }

    /// The connection died without a closing handshake: reported as 1006,
    /// which is never sent on the wire.
    fn upstream_lost(&mut self, reason: &str) {
        self.end_with(1006, reason.to_owned());
    }

    fn end_with(&mut self, code: u16, reason: String) {
        if self.closed.is_some() {
            return;
        }
        log::debug!("upstream closed: {code} {reason}");
        self.closed = Some((code, reason.clone()));
        self.enqueue(|seq| ClientMessage::Close { seq, code, reason }, 0);
    }

    async fn close_upstream(&mut self, code: CloseCode, reason: &str) {
        if self.closed.is_some() {
            return;
        }
        let close = Message::Close(Some(CloseReason { code, description: Some(reason.to_owned()) }));
        if self.upstream.send(close).await.is_ok() {
            // Give the peer a bounded moment to answer with its Close.
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

fn random_ping_interval() -> Duration {
    Duration::from_millis(rand::rng().random_range(PING_INTERVAL_MS))
}
