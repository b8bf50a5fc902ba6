//! The owner task of one socket. It alone touches the upstream and the
//! client's queue, and does what awc leaves to its user under RFC 6455:
//! answering pings, reassembling fragments, validating UTF-8, and running
//! the closing handshake.
//!
//! It is generic over the upstream connection ([`UpstreamSocket`]), so tests
//! drive it with a scripted peer on tokio's paused clock.

use super::delivery::DeliveryQueue;
use super::fragments::{Assembly, AssemblyError};
use super::{ClientSend, Command, Outgoing, Rejected, SendFailure, SocketHandle, SocketLimits};
use crate::metrics::DaemonMetrics;
use actix_http::ws::{Item, ProtocolError};
use awc::ws::{CloseCode, CloseReason, Frame, Message};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use polysocket_common::limits::Limit;
use polysocket_common::wire::ClientMessage;
use rand::Rng;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, sleep_until};

/// Requests a socket may have waiting for its owner; senders beyond that
/// wait their turn, which is the backpressure a slow upstream needs.
const COMMAND_QUEUE: usize = 32;
/// How long to wait for the upstream's Close after sending ours.
const CLOSE_WAIT: Duration = Duration::from_secs(3);

/// A WebSocket connection to the upstream, as the owner uses it: awc's
/// framed connection in production, a scripted peer in tests.
pub trait UpstreamSocket:
    Stream<Item = Result<Frame, ProtocolError>> + Sink<Message, Error = ProtocolError> + Unpin
{
}

impl<T> UpstreamSocket for T where
    T: Stream<Item = Result<Frame, ProtocolError>> + Sink<Message, Error = ProtocolError> + Unpin
{
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

/// A new socket: the handle for handlers, the owner task to spawn, and a
/// signal for when the upstream connection is over.
pub struct NewSocket<O> {
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

pub fn new_socket<U: UpstreamSocket>(
    upstream: U,
    limits: SocketLimits,
    metrics: Arc<DaemonMetrics>,
) -> NewSocket<impl Future<Output = End>> {
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
        delivery: DeliveryQueue::new(now),
        incoming: None,
        outgoing: None,
        client_seq: 0,
        closing_deadline: None,
        upstream_ended: Some(ended_tx),
        last_send: now,
        awaiting_pong: false,
    };
    NewSocket { handle: SocketHandle { commands: commands_tx }, owner: owner.run(), upstream_ended }
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

struct Owner<U> {
    upstream: U,
    commands: mpsc::Receiver<Command>,
    limits: SocketLimits,
    metrics: Arc<DaemonMetrics>,
    /// This socket's send rate.
    sends: Limit,
    delivery: DeliveryQueue,
    /// An upstream message arriving in continuation frames.
    incoming: Option<Assembly>,
    /// A client message arriving in `more=1` requests.
    outgoing: Option<Assembly>,
    /// The last client `seq` accepted.
    client_seq: u64,
    /// Set while our Close awaits the upstream's answer.
    closing_deadline: Option<Instant>,
    /// Told when the upstream connection is over; dropped with the owner otherwise.
    upstream_ended: Option<oneshot::Sender<()>>,
    /// When the client last sent (or closed); polls count through `delivery`.
    last_send: Instant,
    ping_at: Instant,
    /// A ping is outstanding; reaching the next ping time without a pong
    /// means the upstream is gone.
    awaiting_pong: bool,
}

impl<U: UpstreamSocket> Owner<U> {
    async fn run(mut self) -> End {
        // One timer for whichever deadline comes first: re-creating a timer
        // per deadline on every turn of the loop cost a timer-wheel insert
        // and removal each, several times per round trip.
        let timer = sleep_until(Instant::now());
        tokio::pin!(timer);
        loop {
            let can_read = !self.delivery.is_closed() && self.delivery.queued_bytes() < self.limits.max_queue_bytes;
            let (due_at, due) = self.next_due();
            if timer.deadline() != due_at {
                timer.as_mut().reset(due_at);
            }
            // The handlers' futures are boxed: inline, the largest of them
            // would size this loop's future, held by every idle socket.
            tokio::select! {
                frame = self.upstream.next(), if can_read => Box::pin(self.on_frame(frame)).await,
                command = self.commands.recv() => match command {
                    Some(Command::Send { send, reply }) => {
                        self.last_send = Instant::now();
                        let _ = reply.send(Box::pin(self.on_send(*send)).await);
                    }
                    Some(Command::Close { reason, reply }) => {
                        self.last_send = Instant::now();
                        let _ = reply.send(Box::pin(self.start_close(reason.map(|reason| *reason))).await);
                    }
                    Some(Command::Poll { ttl_ms, ack, reply }) => {
                        let now = Instant::now();
                        self.delivery.poll(reply, ack, now + Duration::from_millis(ttl_ms.into()), now);
                    }
                    Some(Command::Stream { heartbeat_ms, ack, sink }) => {
                        self.delivery.stream(sink, ack, Duration::from_millis(heartbeat_ms.into()), Instant::now());
                    }
                    None => {
                        Box::pin(self.close_and_wait(CloseCode::Away, "going away")).await;
                        return End::Abandoned;
                    }
                },
                () = &mut timer => match due {
                    Due::Poll => self.delivery.heartbeat(Instant::now()),
                    Due::Ping => Box::pin(self.keepalive()).await,
                    Due::Closing => {
                        let _ = Box::pin(self.upstream.close()).await;
                        self.end_with(1006, "upstream did not answer the close".into());
                    }
                    Due::Idle => {
                        Box::pin(self.close_and_wait(CloseCode::Away, "idle")).await;
                        return End::Idle;
                    }
                },
            }
            if let Some(code) = self.delivery.finished() {
                return End::Delivered { code };
            }
        }
    }

    /// The earliest of the deadlines that currently apply, and what it is for.
    fn next_due(&self) -> (Instant, Due) {
        let open = !self.delivery.is_closed() && self.closing_deadline.is_none();
        let waiting_poll = self.delivery.poll_deadline().map(|at| (at, Due::Poll));
        let idle =
            self.delivery.idle_since().map(|since| (since.max(self.last_send) + self.limits.idle_timeout, Due::Idle));
        let ping = open.then_some((self.ping_at, Due::Ping));
        let closing = self.closing_deadline.map(|at| (at, Due::Closing));
        [waiting_poll, idle, ping, closing]
            .into_iter()
            .flatten()
            .min_by_key(|(at, _)| *at)
            .expect("an owner without a waiting poll always has an idle deadline")
    }

    async fn on_send(&mut self, send: ClientSend) -> Result<(), Rejected> {
        let ClientSend { mut messages, seq, more } = send;
        if self.delivery.is_closed() || self.closing_deadline.is_some() {
            return Err(SendFailure::Closed.into());
        }
        // What a retried request carries again was accepted the first time:
        // accepted again, not repeated, and not counted against the rate a
        // second time.
        let repeated = match seq {
            Some(seq) if seq > self.client_seq + 1 => {
                return Err(SendFailure::OutOfOrder { expected: self.client_seq + 1 }.into());
            }
            Some(seq) => usize::try_from(self.client_seq + 1 - seq).unwrap_or(usize::MAX).min(messages.len()),
            None => 0,
        };
        messages.drain(..repeated);
        let mut accepted = repeated;
        // Checked before anything goes, so that only the first message can
        // fail on its content (continuing a message in pieces).
        if messages.iter().any(|message| message.bytes().len() > self.limits.max_message_bytes) {
            return Err(Rejected { failure: SendFailure::TooBig, accepted });
        }
        let next_seq = seq.map(|seq| seq + repeated as u64);
        let written = tokio::time::timeout(
            self.limits.send_timeout,
            self.write_upstream(messages, more, next_seq, &mut accepted),
        )
        .await;
        match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(failure)) => Err(Rejected { failure, accepted }),
            Err(_) => Err(Rejected { failure: SendFailure::Timeout, accepted }),
        }
    }

    /// Writes the messages upstream in order, counting in `accepted` each
    /// one taken (its `seq` recorded): cut short by a failure or a timeout,
    /// what was taken stays taken and goes out in order, and the client
    /// resends only the rest.
    async fn write_upstream(
        &mut self,
        messages: Vec<Outgoing>,
        more: bool,
        mut seq: Option<u64>,
        accepted: &mut usize,
    ) -> Result<(), SendFailure> {
        let last = messages.len().saturating_sub(1);
        for (i, message) in messages.into_iter().enumerate() {
            self.sends.check().map_err(SendFailure::RateLimited)?;
            // Room first, then the message: a timeout while waiting for room
            // leaves the message (and any pieces before it) untouched.
            if poll_fn(|cx| Pin::new(&mut self.upstream).poll_ready(cx)).await.is_err() {
                return Err(self.write_failed());
            }
            if let Some(complete) = self.assemble(message, more && i == last)? {
                let size = complete.bytes().len();
                let frame = match complete {
                    Outgoing::Text(text) => Message::Text(text.into()),
                    Outgoing::Binary(bytes) => Message::Binary(bytes),
                };
                if Pin::new(&mut self.upstream).start_send(frame).is_err() {
                    return Err(self.write_failed());
                }
                self.metrics.to_upstream.count(size);
            }
            if let Some(next) = seq.as_mut() {
                self.client_seq = *next;
                *next += 1;
            }
            *accepted += 1;
        }
        // One flush for the batch: one write to the upstream, not one per message.
        if self.upstream.flush().await.is_err() {
            return Err(self.write_failed());
        }
        Ok(())
    }

    fn write_failed(&mut self) -> SendFailure {
        self.end_with(1006, "upstream write failed".into());
        SendFailure::Upstream
    }

    /// Appends a `more=1` fragment, or returns the message that is complete.
    fn assemble(&mut self, message: Outgoing, more: bool) -> Result<Option<Outgoing>, SendFailure> {
        let max = self.limits.max_message_bytes;
        let Some(mut assembly) = self.outgoing.take().or_else(|| more.then(|| Assembly::new(message.is_text(), max)))
        else {
            // Whole messages were checked against the limit in `on_send`.
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

    /// Client-initiated close: our Close goes out now, the upstream's answer
    /// (or a timeout) ends the connection.
    async fn start_close(&mut self, reason: Option<CloseReason>) -> Result<(), SendFailure> {
        if self.delivery.is_closed() {
            return Err(SendFailure::Closed);
        }
        if self.closing_deadline.is_some() {
            return Ok(());
        }
        if self.upstream.send(Message::Close(reason)).await.is_err() {
            return Err(self.write_failed());
        }
        self.closing_deadline = Some(Instant::now() + CLOSE_WAIT);
        Ok(())
    }

    async fn deliver(&mut self, text: bool, data: Bytes) {
        let size = data.len();
        self.metrics.to_client.count(size);
        if !text {
            let encoded = BASE64.encode(&data);
            return self.delivery.push(size, |seq| ClientMessage::Binary { seq, data: encoded }, Instant::now());
        }
        match String::from_utf8(data.into()) {
            Ok(text) => self.delivery.push(size, |seq| ClientMessage::Text { seq, data: text }, Instant::now()),
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
        if self.delivery.is_closed() {
            return;
        }
        log::debug!("upstream connection ended: {code} {reason}");
        self.closing_deadline = None;
        if let Some(ended) = self.upstream_ended.take() {
            let _ = ended.send(());
        }
        self.delivery.push_close(code, reason, Instant::now());
    }

    /// Closes an upstream nobody will read from any more, giving the peer a
    /// bounded moment to answer.
    async fn close_and_wait(&mut self, code: CloseCode, reason: &str) {
        if self.delivery.is_closed() {
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

#[cfg(test)]
mod tests {
    //! The owner against a scripted upstream, on tokio's paused clock: time
    //! moves only when every task waits, straight to the next deadline, so
    //! these tests check timings exactly and never sleep.

    use super::*;
    use crate::socket::{PollOutcome, SocketHandle};
    use prometheus::Registry;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::task::JoinHandle;

    const HOUR: Duration = Duration::from_secs(3600);

    /// The upstream's side of the connection, as the test plays it.
    struct Peer {
        frames: mpsc::UnboundedReceiver<Result<Frame, ProtocolError>>,
        sent: mpsc::UnboundedSender<Message>,
        room: Arc<std::sync::Mutex<Room>>,
    }

    /// How many more messages the upstream takes.
    #[derive(Clone, Copy)]
    enum Room {
        Unlimited,
        /// Then it stops taking any (its TCP window is full).
        Full(usize),
        /// Then the connection breaks.
        Broken(usize),
    }

    impl Stream for Peer {
        type Item = Result<Frame, ProtocolError>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.frames.poll_recv(cx)
        }
    }

    impl Sink<Message> for Peer {
        type Error = ProtocolError;

        fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ProtocolError>> {
            match *self.room.lock().unwrap() {
                Room::Full(0) => Poll::Pending,
                Room::Broken(0) => Poll::Ready(Err(ProtocolError::Io(std::io::ErrorKind::BrokenPipe.into()))),
                _ => Poll::Ready(Ok(())),
            }
        }

        fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), ProtocolError> {
            if let Room::Full(left) | Room::Broken(left) = &mut *self.room.lock().unwrap() {
                *left -= 1;
            }
            self.sent.send(message).map_err(|_| ProtocolError::Io(std::io::ErrorKind::BrokenPipe.into()))
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ProtocolError>> {
            Poll::Ready(Ok(()))
        }

        fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ProtocolError>> {
            Poll::Ready(Ok(()))
        }
    }

    struct Harness {
        handle: SocketHandle,
        owner: JoinHandle<End>,
        /// Frames the upstream sends.
        upstream: mpsc::UnboundedSender<Result<Frame, ProtocolError>>,
        /// What the owner sent the upstream.
        received: mpsc::UnboundedReceiver<Message>,
        room: Arc<std::sync::Mutex<Room>>,
    }

    fn limits() -> SocketLimits {
        SocketLimits {
            idle_timeout: HOUR,
            max_message_bytes: 1 << 20,
            max_queue_bytes: 1 << 20,
            send_timeout: Duration::from_secs(10),
            ping_interval: HOUR,
            max_sends_per_second: 0,
        }
    }

    fn start(limits: SocketLimits) -> Harness {
        let (upstream, frames) = mpsc::unbounded_channel();
        let (sent, received) = mpsc::unbounded_channel();
        let room = Arc::new(std::sync::Mutex::new(Room::Unlimited));
        let peer = Peer { frames, sent, room: room.clone() };
        let new = new_socket(peer, limits, Arc::new(DaemonMetrics::new(&Registry::new(), 1)));
        Harness { handle: new.handle, owner: tokio::spawn(new.owner), upstream, received, room }
    }

    impl Harness {
        fn frame(&self, frame: Frame) {
            self.upstream.send(Ok(frame)).unwrap();
        }

        async fn next_sent(&mut self) -> Message {
            self.received.recv().await.expect("the owner sent something")
        }

        /// Checks that the upstream got exactly these text messages, in order.
        async fn sent_texts(&mut self, expected: &[&str]) {
            for text in expected {
                assert_eq!(self.next_sent().await, Message::Text((*text).into()));
            }
            assert!(self.received.try_recv().is_err(), "nothing else went upstream");
        }

        async fn messages(&self, ack: Option<u64>) -> Vec<ClientMessage> {
            match self.handle.poll(HOUR, ack).await {
                PollOutcome::Messages(messages) => messages,
                other => panic!("expected messages, got {other:?}"),
            }
        }
    }

    fn text(seq: u64, data: &str) -> ClientMessage {
        ClientMessage::Text { seq, data: data.into() }
    }

    fn close(seq: u64, code: u16, reason: &str) -> ClientMessage {
        ClientMessage::Close { seq, code, reason: reason.into() }
    }

    fn close_frame(code: u16, reason: &str) -> Message {
        Message::Close(Some(CloseReason { code: CloseCode::from(code), description: Some(reason.into()) }))
    }

    fn send(data: &str, seq: Option<u64>) -> ClientSend {
        batch(&[data], seq, false)
    }

    fn batch(data: &[&str], seq: Option<u64>, more: bool) -> ClientSend {
        ClientSend { messages: data.iter().map(|d| Outgoing::Text((*d).into())).collect(), seq, more }
    }

    fn rejected(failure: SendFailure, accepted: usize) -> Result<(), Rejected> {
        Err(Rejected { failure, accepted })
    }

    #[tokio::test(start_paused = true)]
    async fn pings_are_answered_and_an_upstream_that_stops_answering_ours_is_lost() {
        let mut socket = start(SocketLimits { ping_interval: Duration::from_secs(10), ..limits() });
        socket.frame(Frame::Ping(Bytes::from_static(b"hi")));
        assert_eq!(socket.next_sent().await, Message::Pong(Bytes::from_static(b"hi")));

        let started = Instant::now();
        assert!(matches!(socket.next_sent().await, Message::Ping(_)));
        let first = started.elapsed();
        assert!(first >= Duration::from_secs(7) && first <= Duration::from_secs(10), "pinged after {first:?}");
        socket.frame(Frame::Pong(Bytes::new()));
        assert!(matches!(socket.next_sent().await, Message::Ping(_)), "a pong keeps the connection");
        // No pong this time: by the next ping time the upstream is gone.
        assert_eq!(socket.messages(None).await, vec![close(1, 1006, "upstream stopped answering pings")]);
        assert!(started.elapsed() <= Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_poll_gets_a_heartbeat_when_its_ttl_runs_out() {
        let socket = start(limits());
        let started = Instant::now();
        let answer = socket.handle.poll(Duration::from_secs(25), None).await;
        assert_eq!(answer, PollOutcome::Messages(vec![ClientMessage::Heartbeat]));
        assert_eq!(started.elapsed(), Duration::from_secs(25));
    }

    #[tokio::test(start_paused = true)]
    async fn a_socket_nobody_polls_goes_idle_from_the_end_of_its_last_poll() {
        let mut socket = start(SocketLimits { idle_timeout: Duration::from_secs(60), ..limits() });
        let started = Instant::now();
        socket.handle.poll(Duration::from_secs(25), None).await;
        assert_eq!(socket.next_sent().await, close_frame(1001, "idle"));
        assert_eq!(started.elapsed(), Duration::from_secs(85), "25 s of polling, then 60 s idle");
        socket.frame(Frame::Close(None));
        assert_eq!(socket.owner.await.unwrap(), End::Idle);
    }

    #[tokio::test(start_paused = true)]
    async fn fragments_are_joined_and_invalid_text_fails_the_connection() {
        let mut socket = start(limits());
        socket.frame(Frame::Continuation(Item::FirstText(Bytes::from_static(b"frag"))));
        socket.frame(Frame::Continuation(Item::Continue(Bytes::from_static(b"ment"))));
        socket.frame(Frame::Continuation(Item::Last(Bytes::from_static(b"ed"))));
        assert_eq!(socket.messages(None).await, vec![text(1, "fragmented")]);

        socket.frame(Frame::Text(Bytes::from_static(b"\xff")));
        assert_eq!(socket.next_sent().await, close_frame(1007, "invalid UTF-8 in text message"));
        assert_eq!(socket.messages(None).await, vec![close(2, 1007, "invalid UTF-8 in text message")]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retried_send_is_forwarded_once_and_a_gap_is_refused() {
        let mut socket = start(limits());
        assert_eq!(socket.handle.send(send("a", Some(1))).await, Ok(()));
        assert_eq!(socket.handle.send(send("a", Some(1))).await, Ok(()), "a retry is accepted again");
        assert_eq!(socket.handle.send(send("c", Some(3))).await, rejected(SendFailure::OutOfOrder { expected: 2 }, 0));
        assert_eq!(socket.handle.send(send("b", Some(2))).await, Ok(()));
        assert_eq!(socket.next_sent().await, Message::Text("a".into()));
        assert_eq!(socket.next_sent().await, Message::Text("b".into()));
        assert!(socket.received.try_recv().is_err(), "nothing else went upstream");
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_goes_upstream_in_order_and_a_retry_delivers_only_what_is_new() {
        let mut socket = start(limits());
        assert_eq!(socket.handle.send(batch(&["a", "b", "c"], Some(1), false)).await, Ok(()));
        assert_eq!(socket.handle.send(batch(&["a", "b", "c"], Some(1), false)).await, Ok(()), "retried whole");
        assert_eq!(socket.handle.send(batch(&["c", "d"], Some(3), false)).await, Ok(()), "overlapping the last");
        assert_eq!(
            socket.handle.send(batch(&["f"], Some(6), false)).await,
            rejected(SendFailure::OutOfOrder { expected: 5 }, 0)
        );
        socket.sent_texts(&["a", "b", "c", "d"]).await;
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_message_of_a_batch_may_continue_in_the_next() {
        let mut socket = start(limits());
        assert_eq!(socket.handle.send(batch(&["a", "long "], Some(1), true)).await, Ok(()));
        assert_eq!(socket.handle.send(batch(&["one", "b"], Some(3), false)).await, Ok(()));
        socket.sent_texts(&["a", "long one", "b"]).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_the_upstream_stops_taking_says_how_much_went_and_the_retry_sends_the_rest() {
        let mut socket = start(limits());
        *socket.room.lock().unwrap() = Room::Full(2);
        let started = Instant::now();
        let answer = socket.handle.send(batch(&["a", "b", "c", "d"], Some(1), false)).await;
        assert_eq!(answer, rejected(SendFailure::Timeout, 2));
        assert_eq!(started.elapsed(), limits().send_timeout);
        *socket.room.lock().unwrap() = Room::Unlimited;
        // A client that lost that answer retries the whole batch; one that read it, the rest.
        assert_eq!(socket.handle.send(batch(&["a", "b", "c", "d"], Some(1), false)).await, Ok(()));
        socket.sent_texts(&["a", "b", "c", "d"]).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_cut_by_a_broken_upstream_says_how_much_went() {
        let mut socket = start(limits());
        *socket.room.lock().unwrap() = Room::Broken(1);
        assert_eq!(
            socket.handle.send(batch(&["a", "b", "c"], Some(1), false)).await,
            rejected(SendFailure::Upstream, 1)
        );
        socket.sent_texts(&["a"]).await;
        assert_eq!(socket.messages(None).await, vec![close(1, 1006, "upstream write failed")]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_send_rate_counts_messages_not_requests() {
        // One a second, with a burst of two.
        let mut socket = start(SocketLimits { max_sends_per_second: 1, ..limits() });
        let answer = socket.handle.send(batch(&["a", "b", "c"], Some(1), false)).await;
        assert!(matches!(answer, Err(Rejected { failure: SendFailure::RateLimited(_), accepted: 2 })), "{answer:?}");
        socket.sent_texts(&["a", "b"]).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_with_a_message_over_the_limit_sends_nothing() {
        let mut socket = start(SocketLimits { max_message_bytes: 3, ..limits() });
        assert_eq!(
            socket.handle.send(batch(&["a", "toolong", "b"], Some(1), false)).await,
            rejected(SendFailure::TooBig, 0)
        );
        assert_eq!(socket.handle.send(batch(&["a", "b"], Some(1), false)).await, Ok(()), "the same seq, not taken");
        socket.sent_texts(&["a", "b"]).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_close_that_the_upstream_never_answers_ends_after_a_bounded_wait() {
        let mut socket = start(limits());
        let reason = CloseReason { code: CloseCode::from(4001), description: Some("bye".into()) };
        assert_eq!(socket.handle.close(Some(reason)).await, Ok(()));
        assert_eq!(socket.next_sent().await, close_frame(4001, "bye"));
        let started = Instant::now();
        assert_eq!(socket.messages(None).await, vec![close(1, 1006, "upstream did not answer the close")]);
        assert_eq!(started.elapsed(), CLOSE_WAIT);
        assert_eq!(socket.handle.poll(HOUR, None).await, PollOutcome::Gone);
        assert_eq!(socket.owner.await.unwrap(), End::Delivered { code: 1006 });
    }

    #[tokio::test(start_paused = true)]
    async fn an_upstream_close_is_echoed_and_delivered_last() {
        let mut socket = start(limits());
        socket.frame(Frame::Text(Bytes::from_static(b"last words")));
        socket.frame(Frame::Close(Some(CloseReason { code: CloseCode::from(4000), description: Some("bye".into()) })));
        assert_eq!(socket.next_sent().await, Message::Close(Some(CloseCode::from(4000).into())));
        assert_eq!(socket.messages(None).await, vec![text(1, "last words"), close(2, 4000, "bye")]);
        assert_eq!(socket.handle.send(send("late", None)).await, rejected(SendFailure::Closed, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_stops_reading_the_upstream_until_the_client_catches_up() {
        let socket = start(SocketLimits { max_queue_bytes: 4, ..limits() });
        socket.frame(Frame::Text(Bytes::from_static(b"abcd")));
        socket.frame(Frame::Text(Bytes::from_static(b"e")));
        assert_eq!(socket.messages(Some(0)).await, vec![text(1, "abcd")], "the queue is full after the first");
        assert_eq!(socket.messages(Some(1)).await, vec![text(2, "e")]);
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_every_handle_closes_the_upstream() {
        let Harness { handle, owner, upstream, mut received, .. } = start(limits());
        drop(handle);
        assert_eq!(received.recv().await, Some(close_frame(1001, "going away")));
        upstream.send(Ok(Frame::Close(None))).unwrap();
        assert_eq!(owner.await.unwrap(), End::Abandoned);
    }
}
