//! One bridged socket: an owner task holding the upstream WebSocket and the
//! client's receive queue, and the cloneable [`SocketHandle`] HTTP handlers
//! use to reach it.
//!
//! All state of a socket lives in its task, so requests on different sockets
//! never contend, and the order of messages is simply the order of the queue.
//!
//! - [`core`]: the socket's state without I/O, and what RFC 6455 asks of a
//!   client that awc leaves to its user (pings, fragments, UTF-8, the
//!   closing handshake), with a bounded queue of frames for the upstream;
//! - [`owner`]: the task that drives the core, never waiting on the upstream;
//! - [`delivery`]: numbered messages, acknowledgements and the waiting poll;
//! - [`fragments`]: messages that arrive in pieces, in either direction.

mod core;
pub mod delivery;
pub mod fragments;
mod owner;

pub use self::delivery::PollOutcome;
pub use self::owner::{End, NewSocket, UpstreamSocket, new_socket};

use awc::ws::CloseReason;
use bytes::Bytes;
use polysocket_common::wire::ClientMessage;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

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

/// One `/s` request as the owner sees it: one message, or a batch of them
/// (a client on a slow link sends everything waiting in one request).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSend {
    /// In the order they go upstream; never empty.
    pub messages: Vec<Outgoing>,
    /// The client's sequence number of the first message (the others follow
    /// it, one each), making retried sends idempotent message by message.
    pub seq: Option<u64>,
    /// More fragments of the last message follow (long messages over GET).
    pub more: bool,
}

/// A send that was not wholly forwarded: why, and how many of its messages
/// (from the first) were taken before, so the client resends only the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub failure: SendFailure,
    pub accepted: usize,
}

impl From<SendFailure> for Rejected {
    fn from(failure: SendFailure) -> Self {
        Rejected { failure, accepted: 0 }
    }
}

/// Why a send (or a client close) was not forwarded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendFailure {
    #[error("socket is closed")]
    Closed,
    #[error("upstream did not take the message in time")]
    Timeout,
    #[error("too many sends waiting on this socket")]
    Busy,
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

/// Per-socket limits, shared by all sockets of a daemon.
#[derive(Debug, Clone)]
pub struct SocketLimits {
    pub idle_timeout: Duration,
    pub max_message_bytes: usize,
    pub max_queue_bytes: usize,
    /// What all sockets of the daemon queue together (beyond each socket's
    /// first [`core::QUEUE_FLOOR`] bytes).
    pub max_daemon_queue_bytes: usize,
    pub send_timeout: Duration,
    /// Longest time between pings to the upstream.
    pub ping_interval: Duration,
    /// Sends per second one socket may make (0: no limit).
    pub max_sends_per_second: u32,
}

// Each socket's channel allocates its slots 32 at a time, sized for the
// largest command, and most sockets sit idle: the rare large commands are
// boxed and times are milliseconds, so a command is 32 bytes.
enum Command {
    Send { send: Box<ClientSend>, reply: oneshot::Sender<Result<(), Rejected>> },
    Close { reason: Option<Box<CloseReason>>, reply: oneshot::Sender<Result<(), SendFailure>> },
    Poll { ttl_ms: u32, ack: Option<u64>, reply: oneshot::Sender<PollOutcome> },
    Stream { heartbeat_ms: u32, ack: Option<u64>, sink: delivery::StreamSink },
}

/// How HTTP handlers reach a socket's owner task. When the last handle is
/// dropped, the owner closes the upstream and ends.
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

    pub async fn send(&self, send: ClientSend) -> Result<(), Rejected> {
        self.ask(|reply| Command::Send { send: Box::new(send), reply }).await.unwrap_or(Err(SendFailure::Closed.into()))
    }

    /// Starts the closing handshake (`None`: a Close without a code); the
    /// upstream's answer arrives on `/j`.
    pub async fn close(&self, reason: Option<CloseReason>) -> Result<(), SendFailure> {
        let reason = reason.map(Box::new);
        self.ask(|reply| Command::Close { reason, reply }).await.unwrap_or(Err(SendFailure::Closed))
    }

    /// Waits up to `ttl` for messages. `ack` releases messages up to that
    /// `seq`; without it, everything returned by earlier polls is released.
    pub async fn poll(&self, ttl: Duration, ack: Option<u64>) -> PollOutcome {
        let ttl_ms = millis(ttl);
        self.ask(|reply| Command::Poll { ttl_ms, ack, reply }).await.unwrap_or(PollOutcome::Gone)
    }

    /// Starts a stream from `ack` (as a poll's): batches of messages as they
    /// arrive, and a heartbeat after each `heartbeat` without one, until a
    /// newer poll or stream takes over (the receiver then ends). `None` once
    /// the socket has ended.
    pub async fn stream(
        &self,
        heartbeat: Duration,
        ack: Option<u64>,
    ) -> Option<mpsc::UnboundedReceiver<Vec<ClientMessage>>> {
        let (sink, batches) = mpsc::unbounded_channel();
        let heartbeat_ms = millis(heartbeat);
        self.commands.send(Command::Stream { heartbeat_ms, ack, sink }).await.ok()?;
        Some(batches)
    }
}

fn millis(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    /// Every socket's command channel allocates 32 slots up front.
    #[test]
    fn a_command_stays_small() {
        assert!(std::mem::size_of::<super::Command>() <= 32, "{}", std::mem::size_of::<super::Command>());
    }
}
