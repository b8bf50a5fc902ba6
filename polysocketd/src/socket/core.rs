//! The state of one socket, without I/O: events go in (a command from a
//! handler, a frame from the upstream, the connection taking or refusing
//! what it was given, the clock), frames to write and answers to handlers
//! come out. The driver ([`super::owner`]) moves bytes; every decision about
//! what goes upstream when, and how long anything may wait, is made here,
//! where tests can run it on a paused clock without a socket.
//!
//! Frames go upstream through two queues. Control frames (pong, ping,
//! Close) go first, so a backlog of data never delays the answer to a ping
//! or a close. Data frames wait in a queue bounded in bytes; a send whose
//! messages do not fit waits its turn until `--send-timeout`. Nothing here
//! ever waits on the upstream: a connection that stops taking frames stops
//! only its own queue, and one that leaves a control frame unwritten for a
//! `--send-timeout` is declared lost.

use super::delivery::DeliveryQueue;
use super::fragments::{Assembly, AssemblyError};
use super::{ClientSend, Command, Outgoing, Rejected, SendFailure, SocketLimits};
use crate::metrics::DaemonMetrics;
use actix_http::ws::{Item, ProtocolError};
use awc::ws::{CloseCode, CloseReason, Frame, Message};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use polysocket_common::limits::Limit;
use polysocket_common::wire::ClientMessage;
use rand::Rng;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// How long to wait for the upstream's Close after ours went out.
pub const CLOSE_WAIT: Duration = Duration::from_secs(3);
/// Data bytes a socket holds for the upstream beyond what the connection
/// has taken; a larger message is held alone.
const DATA_QUEUE_BYTES: usize = 64 * 1024;
/// Bytes each socket may queue for its client whatever the daemon-wide
/// total: a socket whose client keeps up always reads its upstream.
pub const QUEUE_FLOOR: usize = 64 * 1024;
/// Sends one socket may have waiting; more are refused at once rather than
/// held (each holds its request's messages, up to a body each). A client
/// sends one request at a time; a few more cover retries racing answers.
pub const WAITING_SENDS: usize = 4;

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

/// Where the upstream connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upstream {
    /// Frames flow both ways.
    Open,
    /// Our Close is queued or sent; the upstream's answer ends the
    /// connection, or `answer_by` does (brought forward to a [`CLOSE_WAIT`]
    /// once our Close has gone out).
    Closing { answer_by: Instant },
    /// Over for the client (its close is queued). What is left in the
    /// control queue goes out until `release_by`, then the connection is
    /// dropped.
    Ended { release_by: Instant },
}

/// A send whose messages are not all in the data queue yet.
struct WaitingSend {
    send: ClientSend,
    /// Its `seq` was checked against what came before it (a send is
    /// checked when it reaches the front, after the sends ahead of it).
    admitted: bool,
    /// Messages of it taken so far, from the first.
    accepted: usize,
    deadline: Instant,
    reply: oneshot::Sender<Result<(), Rejected>>,
}

/// A send wholly taken, answered once its last frame is flushed.
struct FlushingSend {
    /// Data frames that must be flushed before this send is.
    frames: u64,
    accepted: usize,
    deadline: Instant,
    reply: oneshot::Sender<Result<(), Rejected>>,
}

pub struct SocketCore {
    limits: Arc<SocketLimits>,
    metrics: Arc<DaemonMetrics>,
    upstream: Upstream,
    /// The driver has dropped the connection.
    released: bool,
    /// Set when the owner closes on its own (idle, abandoned): the task ends
    /// once the connection is released, whatever the client has read.
    ending: Option<End>,
    delivery: DeliveryQueue,
    /// Pong, ping and Close frames, written before any data.
    control: VecDeque<Message>,
    /// Our Close is queued or sent: no frame may follow it.
    close_queued: bool,
    /// Since when a control frame has waited for the connection to take and
    /// flush it.
    control_waiting_since: Option<Instant>,
    data: VecDeque<Message>,
    /// Payload bytes in `data`.
    data_bytes: usize,
    /// Data frames ever queued, handed to the connection, and flushed.
    data_queued: u64,
    data_written: u64,
    data_flushed: u64,
    waiting: VecDeque<WaitingSend>,
    flushing: VecDeque<FlushingSend>,
    /// This socket's send rate.
    sends: Limit,
    /// An upstream message arriving in continuation frames. Boxed, as
    /// `outgoing` is: most sockets never see a fragment, and every byte of
    /// this struct is in each idle socket's task.
    incoming: Option<Box<Assembly>>,
    /// A client message arriving in `more=1` requests.
    outgoing: Option<Box<Assembly>>,
    /// The last client `seq` taken.
    client_seq: u64,
    /// Told when the upstream connection is over.
    upstream_ended: Option<oneshot::Sender<()>>,
    /// When the client last sent (or closed); polls count through `delivery`.
    last_send: Instant,
    ping_at: Instant,
    /// A ping is outstanding: reaching the next ping time without a pong
    /// means the upstream is gone.
    awaiting_pong: bool,
    /// Reading stopped for a full queue since the last ping: the pong may be
    /// sitting unread, so no verdict on this round.
    paused_since_ping: bool,
}

impl SocketCore {
    pub fn new(
        limits: Arc<SocketLimits>,
        metrics: Arc<DaemonMetrics>,
        upstream_ended: oneshot::Sender<()>,
        now: Instant,
    ) -> Self {
        SocketCore {
            delivery: DeliveryQueue::new(now, metrics.queued_bytes.clone()),
            sends: Limit::per_second(limits.max_sends_per_second),
            ping_at: now + random_ping_interval(limits.ping_interval),
            limits,
            metrics,
            upstream: Upstream::Open,
            released: false,
            ending: None,
            control: VecDeque::new(),
            close_queued: false,
            control_waiting_since: None,
            data: VecDeque::new(),
            data_bytes: 0,
            data_queued: 0,
            data_written: 0,
            data_flushed: 0,
            waiting: VecDeque::new(),
            flushing: VecDeque::new(),
            incoming: None,
            outgoing: None,
            client_seq: 0,
            upstream_ended: Some(upstream_ended),
            last_send: now,
            awaiting_pong: false,
            paused_since_ping: false,
        }
    }

    // ---- what the driver asks

    /// Whether to read the next upstream frame: not once the connection is
    /// over for the client, nor while the client's queue is full.
    pub fn can_read(&self) -> bool {
        !matches!(self.upstream, Upstream::Ended { .. }) && !self.queue_full()
    }

    /// The next frame to hand the connection, control frames first.
    pub fn next_frame(&mut self, now: Instant) -> Option<Message> {
        let frame = match self.control.pop_front() {
            Some(frame) => frame,
            None => {
                let frame = self.data.pop_front()?;
                self.data_written += 1;
                self.data_bytes -= match &frame {
                    Message::Text(text) => text.len(),
                    Message::Binary(bytes) => bytes.len(),
                    _ => 0,
                };
                frame
            }
        };
        if let (Message::Close(_), Upstream::Closing { answer_by }) = (&frame, self.upstream) {
            self.upstream = Upstream::Closing { answer_by: answer_by.min(now + CLOSE_WAIT) };
        }
        Some(frame)
    }

    pub fn has_frame(&self) -> bool {
        !self.control.is_empty() || !self.data.is_empty()
    }

    /// The connection has flushed everything handed to it.
    pub fn on_flushed(&mut self, now: Instant) {
        self.data_flushed = self.data_written;
        self.control_waiting_since = (!self.control.is_empty()).then_some(now);
        while self.flushing.front().is_some_and(|send| send.frames <= self.data_flushed) {
            let send = self.flushing.pop_front().expect("checked");
            let _ = send.reply.send(Ok(()));
        }
        self.take_sends();
    }

    pub fn on_write_failed(&mut self, now: Instant) {
        self.drop_queues(SendFailure::Upstream);
        self.end_with(1006, "upstream write failed".into(), now, false);
    }

    /// Whether the driver should close the connection now (flushing first),
    /// and by when it must have let go of it whatever happens.
    pub fn release_by(&self) -> Option<Instant> {
        match self.upstream {
            Upstream::Ended { release_by } if !self.released => Some(release_by),
            _ => None,
        }
    }

    /// Gives back the capacity of queues that have emptied: an idle socket
    /// (most of them, at any time) holds none, and one send or ping would
    /// otherwise leave each queue's first allocation behind for good.
    pub fn shed_idle_buffers(&mut self) {
        fn shed<T>(queue: &mut VecDeque<T>) {
            if queue.is_empty() && queue.capacity() > 0 {
                *queue = VecDeque::new();
            }
        }
        shed(&mut self.control);
        shed(&mut self.data);
        shed(&mut self.waiting);
        shed(&mut self.flushing);
    }

    /// The driver has dropped the connection.
    pub fn on_released(&mut self) {
        self.released = true;
        self.control.clear();
        self.control_waiting_since = None;
    }

    /// How the socket ended, once its task may end: the connection is
    /// released, and the client has read the close or nobody will.
    pub fn finished(&self) -> Option<End> {
        if !self.released {
            return None;
        }
        if let Some(end) = &self.ending {
            return Some(end.clone());
        }
        self.delivery.finished().map(|code| End::Delivered { code })
    }

    /// The earliest moment something is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        let active = self.ending.is_none();
        let idle = self
            .delivery
            .idle_since()
            .filter(|_| active)
            .map(|since| since.max(self.last_send) + self.limits.idle_timeout);
        let ping = (self.upstream == Upstream::Open && active).then_some(self.ping_at);
        let (upstream, control) = match self.upstream {
            Upstream::Open => (None, self.control_stalled_at()),
            Upstream::Closing { answer_by } => (Some(answer_by), self.control_stalled_at()),
            // The release bounds whatever is still queued.
            Upstream::Ended { .. } => (self.release_by(), None),
        };
        let sends = [self.waiting.front().map(|s| s.deadline), self.flushing.front().map(|s| s.deadline)];
        [self.delivery.poll_deadline(), idle, ping, upstream, control].into_iter().chain(sends).flatten().min()
    }

    // ---- events

    pub fn on_command(&mut self, command: Command, now: Instant) {
        match command {
            Command::Send { send, reply } => {
                self.last_send = now;
                self.on_send(*send, reply, now);
            }
            Command::Close { reason, reply } => {
                self.last_send = now;
                let _ = reply.send(self.on_client_close(reason.map(|reason| *reason), now));
            }
            Command::Poll { ttl_ms, ack, reply } => {
                self.delivery.poll(reply, ack, now + Duration::from_millis(ttl_ms.into()), now);
            }
            Command::Stream { heartbeat_ms, ack, sink } => {
                self.delivery.stream(sink, ack, Duration::from_millis(heartbeat_ms.into()), now);
            }
        }
    }

    /// Every handle is gone: nobody will read this socket again.
    pub fn on_abandoned(&mut self, now: Instant) {
        self.close_unread(End::Abandoned, "going away", now);
    }

    pub fn on_frame(&mut self, frame: Option<Result<Frame, ProtocolError>>, now: Instant) {
        match frame {
            Some(Ok(Frame::Text(data))) => self.deliver(true, data, now),
            Some(Ok(Frame::Binary(data))) => self.deliver(false, data, now),
            Some(Ok(Frame::Continuation(item))) => self.on_fragment(item, now),
            Some(Ok(Frame::Ping(payload))) => self.queue_pong(payload, now),
            Some(Ok(Frame::Pong(_))) => self.awaiting_pong = false,
            Some(Ok(Frame::Close(reason))) => self.on_upstream_close(reason, now),
            Some(Err(ProtocolError::Overflow)) => self.fail(CloseCode::Size, "message too big", now),
            Some(Err(ProtocolError::Io(_))) | None => self.end_with(1006, "connection lost".into(), now, false),
            Some(Err(e)) => self.fail(CloseCode::Protocol, &format!("protocol error: {e}"), now),
        }
    }

    /// The timer fired: does whatever is due at `now`.
    pub fn on_timer(&mut self, now: Instant) {
        if self.delivery.poll_deadline().is_some_and(|at| at <= now) {
            self.delivery.heartbeat(now);
        }
        self.expire_sends(now);
        let open = !matches!(self.upstream, Upstream::Ended { .. });
        if open && self.control_stalled_at().is_some_and(|at| at <= now) {
            self.drop_queues(SendFailure::Upstream);
            self.end_with(1006, "upstream stopped reading".into(), now, false);
        }
        match self.upstream {
            Upstream::Closing { answer_by } if answer_by <= now => {
                self.end_with(1006, "upstream did not answer the close".into(), now, false);
            }
            Upstream::Open if self.ending.is_none() && self.ping_at <= now => self.keepalive(now),
            _ => {}
        }
        let idle_at = self.delivery.idle_since().map(|since| since.max(self.last_send) + self.limits.idle_timeout);
        if self.ending.is_none() && idle_at.is_some_and(|at| at <= now) {
            self.close_unread(End::Idle, "idle", now);
        }
    }

    /// When a control frame will have waited too long for the connection.
    fn control_stalled_at(&self) -> Option<Instant> {
        self.control_waiting_since.map(|since| since + self.limits.send_timeout)
    }

    // ---- sends

    fn on_send(&mut self, send: ClientSend, reply: oneshot::Sender<Result<(), Rejected>>, now: Instant) {
        if self.upstream != Upstream::Open {
            let _ = reply.send(Err(SendFailure::Closed.into()));
            return;
        }
        if self.waiting.len() + self.flushing.len() >= WAITING_SENDS {
            let _ = reply.send(Err(SendFailure::Busy.into()));
            return;
        }
        let send = WaitingSend { send, admitted: false, accepted: 0, deadline: now + self.limits.send_timeout, reply };
        // The usual send fits at once: it never touches the queue of those
        // waiting (whose allocation would outlive it).
        if !self.waiting.is_empty() {
            self.waiting.push_back(send);
        } else if let Some(blocked) = self.advance(send) {
            self.waiting.push_back(blocked);
        }
    }

    /// Moves the messages of waiting sends, in order, into the data queue
    /// while it has room.
    fn take_sends(&mut self) {
        while let Some(front) = self.waiting.pop_front() {
            if let Some(blocked) = self.advance(front) {
                self.waiting.push_front(blocked);
                return;
            }
        }
    }

    /// Takes what fits of one send, and answers it once it is all taken
    /// (flushed, or to be answered when it is) or refused; gives it back if
    /// it must wait for room.
    fn advance(&mut self, mut send: WaitingSend) -> Option<WaitingSend> {
        if !send.admitted
            && let Err(rejected) = self.admit(&mut send)
        {
            let _ = send.reply.send(Err(rejected));
            return None;
        }
        match self.take(&mut send) {
            Ok(true) => {
                let WaitingSend { accepted, deadline, reply, .. } = send;
                if self.data_flushed >= self.data_queued {
                    let _ = reply.send(Ok(()));
                } else {
                    self.flushing.push_back(FlushingSend { frames: self.data_queued, accepted, deadline, reply });
                }
                None
            }
            Ok(false) => Some(send),
            Err(failure) => {
                let _ = send.reply.send(Err(Rejected { failure, accepted: send.accepted }));
                None
            }
        }
    }

    /// Checks a send against what came before it: a retried request's
    /// messages were taken the first time (taken again, not repeated, and
    /// not counted against the rate a second time); a gap is refused.
    fn admit(&mut self, waiting: &mut WaitingSend) -> Result<(), Rejected> {
        let send = &mut waiting.send;
        let repeated = match send.seq {
            Some(seq) if seq > self.client_seq + 1 => {
                return Err(SendFailure::OutOfOrder { expected: self.client_seq + 1 }.into());
            }
            Some(seq) => usize::try_from(self.client_seq + 1 - seq).unwrap_or(usize::MAX).min(send.messages.len()),
            None => 0,
        };
        send.messages.drain(..repeated);
        send.seq = send.seq.map(|seq| seq + repeated as u64);
        waiting.accepted = repeated;
        // Checked before anything goes, so that only the first message can
        // fail on its content (continuing a message in pieces).
        if send.messages.iter().any(|message| message.bytes().len() > self.limits.max_message_bytes) {
            return Err(Rejected { failure: SendFailure::TooBig, accepted: repeated });
        }
        waiting.admitted = true;
        // Drained from the back so that taking pops cheaply.
        send.messages.reverse();
        Ok(())
    }

    /// Takes what fits of one send: `Ok(true)` once all of it is taken.
    fn take(&mut self, waiting: &mut WaitingSend) -> Result<bool, SendFailure> {
        while let Some(message) = waiting.send.messages.pop() {
            let size = message.bytes().len();
            if self.data_bytes > 0 && self.data_bytes + size > DATA_QUEUE_BYTES {
                waiting.send.messages.push(message);
                return Ok(false);
            }
            self.sends.check().map_err(SendFailure::RateLimited)?;
            let last = waiting.send.messages.is_empty();
            if let Some(complete) = self.assemble(message, waiting.send.more && last)? {
                let size = complete.bytes().len();
                self.metrics.to_upstream.count(size);
                self.data_bytes += size;
                self.data_queued += 1;
                self.data.push_back(match complete {
                    Outgoing::Text(text) => Message::Text(text.into()),
                    Outgoing::Binary(bytes) => Message::Binary(bytes),
                });
            }
            if let Some(seq) = waiting.send.seq.as_mut() {
                self.client_seq = *seq;
                *seq += 1;
            }
            waiting.accepted += 1;
        }
        Ok(true)
    }

    /// Appends a `more=1` fragment, or returns the message that is complete.
    fn assemble(&mut self, message: Outgoing, more: bool) -> Result<Option<Outgoing>, SendFailure> {
        let max = self.limits.max_message_bytes;
        let Some(mut assembly) =
            self.outgoing.take().or_else(|| more.then(|| Box::new(Assembly::new(message.is_text(), max))))
        else {
            // Whole messages were checked against the limit on admission.
            return Ok(Some(message));
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

    /// Answers the sends whose time is up: what was taken of them stays
    /// taken and goes out in order, and the answer says how much that was.
    fn expire_sends(&mut self, now: Instant) {
        while self.waiting.front().is_some_and(|send| send.deadline <= now) {
            let send = self.waiting.pop_front().expect("checked");
            let _ = send.reply.send(Err(Rejected { failure: SendFailure::Timeout, accepted: send.accepted }));
        }
        while self.flushing.front().is_some_and(|send| send.deadline <= now) {
            let send = self.flushing.pop_front().expect("checked");
            let _ = send.reply.send(Err(Rejected { failure: SendFailure::Timeout, accepted: send.accepted }));
        }
        // A send behind the expired one may fit now, or fail its seq check.
        self.take_sends();
    }

    /// Empties the data queue and answers every send still waiting.
    fn drop_queues(&mut self, failure: SendFailure) {
        if self.data.iter().any(|frame| matches!(frame, Message::Close(_))) {
            // A client's Close that had not gone out yet.
            self.close_queued = false;
        }
        self.data.clear();
        self.data_bytes = 0;
        // What was dropped will never be written: nothing waits for it.
        self.data_queued = self.data_written;
        self.outgoing = None;
        for send in self.waiting.drain(..) {
            let _ = send.reply.send(Err(Rejected { failure: failure.clone(), accepted: send.accepted }));
        }
        for send in self.flushing.drain(..) {
            let _ = send.reply.send(Err(Rejected { failure: failure.clone(), accepted: send.accepted }));
        }
    }

    // ---- closes

    /// Client-initiated close: our Close goes out after what was taken, and
    /// the upstream's answer (or a timeout) ends the connection.
    fn on_client_close(&mut self, reason: Option<CloseReason>, now: Instant) -> Result<(), SendFailure> {
        match self.upstream {
            Upstream::Ended { .. } => Err(SendFailure::Closed),
            Upstream::Closing { .. } => Ok(()),
            Upstream::Open => {
                for send in self.waiting.drain(..) {
                    let _ = send.reply.send(Err(Rejected { failure: SendFailure::Closed, accepted: send.accepted }));
                }
                // Behind the data already taken, which goes first.
                self.data.push_back(Message::Close(reason));
                self.close_queued = true;
                self.upstream = Upstream::Closing { answer_by: now + self.limits.send_timeout + CLOSE_WAIT };
                Ok(())
            }
        }
    }

    /// Closes an upstream nobody will read from any more (idle, abandoned),
    /// giving the peer a bounded moment to answer.
    fn close_unread(&mut self, end: End, reason: &str, now: Instant) {
        self.ending = Some(end);
        self.incoming = None;
        self.drop_queues(SendFailure::Closed);
        if self.upstream == Upstream::Open {
            self.queue_close(Some(CloseReason { code: CloseCode::Away, description: Some(reason.to_owned()) }), now);
            self.upstream = Upstream::Closing { answer_by: now + self.limits.send_timeout + CLOSE_WAIT };
        }
    }

    fn on_upstream_close(&mut self, reason: Option<CloseReason>, now: Instant) {
        let (code, text) = match &reason {
            Some(r) => (u16::from(r.code), r.description.clone().unwrap_or_default()),
            None => (1005, String::new()),
        };
        self.drop_queues(SendFailure::Closed);
        if !self.close_queued {
            // The upstream started the closing handshake: echo its code
            // (RFC 6455 §5.5.1). Without a code, answer with none: 1005 is
            // never sent on the wire.
            self.queue_close(reason.map(|r| CloseReason::from(r.code)), now);
        }
        self.end_with(code, text, now, true);
    }

    /// Fails the connection with `code` (RFC 6455 §7.1.7): the upstream gets
    /// a Close and the client is told why.
    fn fail(&mut self, code: CloseCode, reason: &str, now: Instant) {
        self.incoming = None;
        self.drop_queues(SendFailure::Closed);
        self.queue_close(Some(CloseReason { code, description: Some(reason.to_owned()) }), now);
        self.end_with(u16::from(code), reason.to_owned(), now, true);
    }

    /// Records the end of the upstream connection; the client gets it as the
    /// final message. 1006 ("lost") is reported here but never sent on the
    /// wire. With `linger`, what is queued for the upstream (a Close) has a
    /// `--send-timeout` to go out before the connection is dropped.
    fn end_with(&mut self, code: u16, reason: String, now: Instant, linger: bool) {
        if matches!(self.upstream, Upstream::Ended { .. }) {
            return;
        }
        log::debug!("upstream connection ended: {code} {reason}");
        let release_by = if linger { now + self.limits.send_timeout } else { now };
        self.upstream = Upstream::Ended { release_by };
        if !linger {
            self.control.clear();
            self.control_waiting_since = None;
        }
        self.drop_queues(SendFailure::Closed);
        if let Some(ended) = self.upstream_ended.take() {
            let _ = ended.send(());
        }
        if !self.delivery.is_closed() {
            self.delivery.push_close(code, reason, now);
        }
    }

    // ---- upstream frames

    fn queue_control(&mut self, frame: Message, now: Instant) {
        if self.close_queued {
            return;
        }
        self.control_waiting_since.get_or_insert(now);
        self.control.push_back(frame);
    }

    /// Our Close, unless one has gone out already.
    fn queue_close(&mut self, reason: Option<CloseReason>, now: Instant) {
        self.queue_control(Message::Close(reason), now);
        self.close_queued = true;
    }

    /// Answers a ping. Only the most recent needs an answer (RFC 6455
    /// §5.5.3), so a flood of pings holds one pong, not one each.
    fn queue_pong(&mut self, payload: Bytes, now: Instant) {
        if matches!(self.upstream, Upstream::Ended { .. }) {
            return;
        }
        if let Some(pong) = self.control.iter_mut().find(|frame| matches!(frame, Message::Pong(_))) {
            *pong = Message::Pong(payload);
            return;
        }
        self.queue_control(Message::Pong(payload), now);
    }

    fn keepalive(&mut self, now: Instant) {
        self.ping_at = now + random_ping_interval(self.limits.ping_interval);
        if self.awaiting_pong {
            if self.paused_since_ping {
                self.paused_since_ping = self.queue_full();
                return;
            }
            // Our ping not even taken yet says more than a missing pong.
            let reason = match self.control_waiting_since {
                Some(_) => "upstream stopped reading",
                None => "upstream stopped answering pings",
            };
            return self.end_with(1006, reason.into(), now, false);
        }
        self.awaiting_pong = true;
        self.paused_since_ping = self.queue_full();
        if !self.control.iter().any(|frame| matches!(frame, Message::Ping(_))) {
            self.queue_control(Message::Ping(Bytes::from_static(b"polysocket")), now);
        }
    }

    fn queue_full(&self) -> bool {
        let queued = self.delivery.held_bytes();
        let daemon_full =
            || usize::try_from(self.metrics.queued_bytes.get()).unwrap_or(0) >= self.limits.max_daemon_queue_bytes;
        queued >= self.limits.max_queue_bytes || (queued >= QUEUE_FLOOR && daemon_full())
    }

    fn deliver(&mut self, text: bool, data: Bytes, now: Instant) {
        let size = data.len();
        self.metrics.to_client.count(size);
        if !text {
            let encoded = BASE64.encode(&data);
            self.delivery.push(size, |seq| ClientMessage::Binary { seq, data: encoded }, now);
        } else {
            match String::from_utf8(data.into()) {
                Ok(text) => self.delivery.push(size, |seq| ClientMessage::Text { seq, data: text }, now),
                Err(_) => return self.fail(CloseCode::Invalid, "invalid UTF-8 in text message", now),
            }
        }
        if self.queue_full() {
            self.paused_since_ping = true;
        }
    }

    fn on_fragment(&mut self, item: Item, now: Instant) {
        let max = self.limits.max_message_bytes;
        let (data, last) = match item {
            Item::FirstText(data) => {
                self.incoming = Some(Box::new(Assembly::new(true, max)));
                (data, false)
            }
            Item::FirstBinary(data) => {
                self.incoming = Some(Box::new(Assembly::new(false, max)));
                (data, false)
            }
            Item::Continue(data) => (data, false),
            Item::Last(data) => (data, true),
        };
        // The codec rejects continuations without a start; this cannot be None.
        let Some(assembly) = self.incoming.as_mut() else { return };
        match assembly.push(&data, last) {
            Err(AssemblyError::TooBig) => return self.fail(CloseCode::Size, "message too big", now),
            Err(AssemblyError::NotUtf8) => return self.fail(CloseCode::Invalid, "invalid UTF-8 in text message", now),
            Ok(()) => {}
        }
        if last {
            let assembly = self.incoming.take().expect("checked above");
            self.deliver(assembly.is_text(), assembly.finish(), now);
        }
    }
}

/// A random time in the last 30% before `max`: pings come at least every
/// `max` as upstream protocols expect, and sockets opened together do not
/// ping in lockstep.
fn random_ping_interval(max: Duration) -> Duration {
    let max_ms = max.as_millis().max(1) as u64;
    Duration::from_millis(rand::rng().random_range(max_ms * 7 / 10..=max_ms))
}
