//! The owner task of one socket: a thin driver around [`SocketCore`]. It
//! alone touches the upstream connection, and it never waits on it: one
//! poll of the task takes commands, writes what the core has queued (as far
//! as the connection takes it), reads frames while the client's queue has
//! room, and fires the core's one timer. A connection that stops taking
//! frames stops nothing else; the core decides when it has waited too long.
//!
//! It is generic over the upstream connection ([`UpstreamSocket`]), so tests
//! drive it with a scripted peer on tokio's paused clock.

pub use super::core::End;
use super::core::SocketCore;
use super::{Command, SocketHandle, SocketLimits};
use crate::metrics::DaemonMetrics;
use actix_http::ws::ProtocolError;
use awc::ws::{Frame, Message};
use futures_util::{Sink, Stream};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Duration, Instant, Sleep, sleep_until};

/// Requests a socket may have waiting for its owner; senders beyond that
/// wait their turn.
const COMMAND_QUEUE: usize = 32;
/// Events one wake of the task handles before it yields to other sockets'
/// tasks on its thread (an upstream that floods, or a flood of commands).
const EVENTS_PER_WAKE: usize = 64;
/// When nothing is due: the timer still needs a deadline.
const NOTHING_DUE: Duration = Duration::from_secs(86_400);

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

/// A new socket: the handle for handlers, the owner task to spawn, and a
/// signal for when the upstream connection is over.
pub struct NewSocket<O> {
    pub handle: SocketHandle,
    /// The owner task. Spawn it on the thread the upstream was opened on (awc
    /// is `!Send`). It finishes when the socket has ended and its close was
    /// acknowledged, when it has gone idle, or when every handle is gone;
    /// each within a bounded time of the upstream going quiet.
    pub owner: O,
    /// Resolves (`Ok` or `Err`) once the upstream connection is over, which
    /// may be well before the client has read the close: the moment the
    /// socket stops counting against limits.
    pub upstream_ended: oneshot::Receiver<()>,
}

pub fn new_socket<U: UpstreamSocket>(
    upstream: U,
    limits: Arc<SocketLimits>,
    metrics: Arc<DaemonMetrics>,
) -> NewSocket<impl Future<Output = End>> {
    let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let (ended_tx, upstream_ended) = oneshot::channel();
    let core = SocketCore::new(limits, metrics, ended_tx, Instant::now());
    let driver = Driver { core, upstream: Some(upstream), commands, commands_open: true, unflushed: false };
    NewSocket { handle: SocketHandle { commands: commands_tx }, owner: driver.run(), upstream_ended }
}

struct Driver<U> {
    core: SocketCore,
    /// `None` once released: dropping it closes the TCP connection.
    upstream: Option<U>,
    commands: mpsc::Receiver<Command>,
    commands_open: bool,
    /// Frames were handed to the connection since its last flush.
    unflushed: bool,
}

impl<U: UpstreamSocket> Driver<U> {
    async fn run(mut self) -> End {
        // One timer for whichever deadline comes first, moved rather than
        // re-created: a timer-wheel insert and removal per turn add up.
        let timer = sleep_until(Instant::now() + NOTHING_DUE);
        tokio::pin!(timer);
        poll_fn(|cx| self.poll_turn(cx, timer.as_mut())).await
    }

    fn poll_turn(&mut self, cx: &mut Context<'_>, mut timer: Pin<&mut Sleep>) -> Poll<End> {
        for _ in 0..EVENTS_PER_WAKE {
            let mut busy = false;
            if self.commands_open {
                match self.commands.poll_recv(cx) {
                    Poll::Ready(Some(command)) => {
                        self.core.on_command(command, Instant::now());
                        busy = true;
                    }
                    Poll::Ready(None) => {
                        self.commands_open = false;
                        self.core.on_abandoned(Instant::now());
                        busy = true;
                    }
                    Poll::Pending => {}
                }
            }
            busy |= self.poll_upstream(cx);
            let due = self.core.next_deadline().unwrap_or_else(|| Instant::now() + NOTHING_DUE);
            if timer.deadline() != due {
                timer.as_mut().reset(due);
            }
            if timer.as_mut().poll(cx).is_ready() {
                self.core.on_timer(Instant::now());
                busy = true;
            }
            if let Some(end) = self.core.finished() {
                return Poll::Ready(end);
            }
            if !busy {
                self.core.shed_idle_buffers();
                return Poll::Pending;
            }
        }
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    /// Writes, flushes, reads one frame, and lets go of a connection that is
    /// over; whether anything happened.
    fn poll_upstream(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(upstream) = self.upstream.as_mut() else { return false };
        let mut busy = false;
        while self.core.has_frame() {
            match Pin::new(&mut *upstream).poll_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => return self.write_failed(),
                Poll::Pending => break,
            }
            let frame = self.core.next_frame(Instant::now()).expect("has_frame");
            if Pin::new(&mut *upstream).start_send(frame).is_err() {
                return self.write_failed();
            }
            self.unflushed = true;
            busy = true;
        }
        if self.unflushed {
            match Pin::new(&mut *upstream).poll_flush(cx) {
                Poll::Ready(Ok(())) => {
                    self.unflushed = false;
                    self.core.on_flushed(Instant::now());
                    busy = true;
                }
                Poll::Ready(Err(_)) => return self.write_failed(),
                Poll::Pending => {}
            }
        }
        if self.core.can_read()
            && let Poll::Ready(frame) = Pin::new(&mut *upstream).poll_next(cx)
        {
            self.core.on_frame(frame, Instant::now());
            busy = true;
        }
        if let Some(release_by) = self.core.release_by() {
            // The Close (if any) first, then the TCP shutdown; the core's
            // deadline bounds both, and the timer wakes us for it.
            let flushed = !self.core.has_frame() && !self.unflushed;
            let closed = flushed && Pin::new(&mut *upstream).poll_close(cx).is_ready();
            if closed || release_by <= Instant::now() {
                self.release();
                busy = true;
            }
        }
        busy
    }

    fn write_failed(&mut self) -> bool {
        self.core.on_write_failed(Instant::now());
        self.release();
        true
    }

    fn release(&mut self) {
        self.upstream = None;
        self.unflushed = false;
        self.core.on_released();
    }
}

#[cfg(test)]
mod tests {
    //! The owner against a scripted upstream, on tokio's paused clock: time
    //! moves only when every task waits, straight to the next deadline, so
    //! these tests check timings exactly and never sleep.

    use super::*;
    use crate::socket::core::{CLOSE_WAIT, WAITING_SENDS};
    use crate::socket::{ClientSend, Outgoing, PollOutcome, Rejected, SendFailure};
    use actix_http::ws::Item;
    use awc::ws::{CloseCode, CloseReason};
    use bytes::Bytes;
    use polysocket_common::wire::ClientMessage;
    use prometheus::Registry;
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
            max_daemon_queue_bytes: 1 << 30,
            send_timeout: Duration::from_secs(10),
            ping_interval: HOUR,
            max_sends_per_second: 0,
        }
    }

    fn start(limits: SocketLimits) -> Harness {
        start_sharing(limits, Arc::new(DaemonMetrics::new(&Registry::new(), 1)))
    }

    /// A socket of a daemon whose other sockets share `metrics`.
    fn start_sharing(limits: SocketLimits, metrics: Arc<DaemonMetrics>) -> Harness {
        let (upstream, frames) = mpsc::unbounded_channel();
        let (sent, received) = mpsc::unbounded_channel();
        let room = Arc::new(std::sync::Mutex::new(Room::Unlimited));
        let peer = Peer { frames, sent, room: room.clone() };
        let new = new_socket(peer, Arc::new(limits), metrics);
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
    async fn a_batch_the_upstream_stops_taking_says_how_much_was_taken_and_the_retry_sends_the_rest() {
        let mut socket = start(limits());
        // Two go out, a third waits in the socket's queue, the fourth does not fit beside it.
        *socket.room.lock().unwrap() = Room::Full(2);
        let big: Vec<String> = ["a", "b", "c", "d"].iter().map(|c| c.repeat(40 * 1024)).collect();
        let big: Vec<&str> = big.iter().map(String::as_str).collect();
        let started = Instant::now();
        let answer = socket.handle.send(batch(&big, Some(1), false)).await;
        assert_eq!(answer, rejected(SendFailure::Timeout, 3));
        assert_eq!(started.elapsed(), limits().send_timeout);
        *socket.room.lock().unwrap() = Room::Unlimited;
        // A client that lost that answer retries the whole batch; one that read it, the rest.
        assert_eq!(socket.handle.send(batch(&big, Some(1), false)).await, Ok(()));
        socket.sent_texts(&big).await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_cut_by_a_broken_upstream_is_refused_and_the_client_told_why() {
        let mut socket = start(limits());
        *socket.room.lock().unwrap() = Room::Broken(1);
        let answer = socket.handle.send(batch(&["a", "b", "c"], Some(1), false)).await;
        assert!(matches!(answer, Err(Rejected { failure: SendFailure::Upstream, .. })), "{answer:?}");
        socket.sent_texts(&["a"]).await;
        assert_eq!(socket.messages(None).await, vec![close(1, 1006, "upstream write failed")]);
        assert_eq!(socket.handle.send(send("late", None)).await, rejected(SendFailure::Closed, 0));
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

    /// A send to a wedged upstream: taken, never flushed, and refused either
    /// at its --send-timeout or, when the random ping time comes first, as
    /// the socket is declared lost.
    fn taken_never_flushed(answer: &Result<(), Rejected>) -> bool {
        matches!(answer, Err(Rejected { failure: SendFailure::Timeout | SendFailure::Closed, accepted: 1 }))
    }

    /// An upstream that completes the handshake and never reads again.
    fn wedged() -> (Harness, SocketLimits) {
        let limits = SocketLimits {
            ping_interval: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(3),
            ..limits()
        };
        let socket = start(limits.clone());
        *socket.room.lock().unwrap() = Room::Full(0);
        (socket, limits)
    }

    #[tokio::test(start_paused = true)]
    async fn a_wedged_upstream_is_declared_lost_and_its_slot_freed_in_bounded_time() {
        let (socket, limits) = wedged();
        let Harness { handle, owner, upstream: _upstream, received: _received, .. } = socket;
        let started = Instant::now();
        let answer = handle.send(send("into the void", Some(1))).await;
        assert!(taken_never_flushed(&answer), "{answer:?}");
        match handle.poll(HOUR, None).await {
            PollOutcome::Messages(messages) => assert_eq!(messages, vec![close(1, 1006, "upstream stopped reading")]),
            other => panic!("expected the close, got {other:?}"),
        }
        let lost_after = started.elapsed();
        assert!(lost_after <= limits.ping_interval + limits.send_timeout, "lost after {lost_after:?}");
        assert_eq!(handle.poll(HOUR, None).await, PollOutcome::Gone);
        assert_eq!(owner.await.unwrap(), End::Delivered { code: 1006 });
    }

    #[tokio::test(start_paused = true)]
    async fn a_send_the_upstream_is_slow_to_take_does_not_hold_up_polls() {
        let (socket, limits) = wedged();
        let sender = socket.handle.clone();
        let send = tokio::spawn(async move { sender.send(send("slow", Some(1))).await });
        tokio::task::yield_now().await;
        socket.frame(Frame::Text(Bytes::from_static(b"news")));
        let started = Instant::now();
        assert_eq!(socket.messages(None).await, vec![text(1, "news")]);
        assert_eq!(started.elapsed(), Duration::ZERO, "answered while the send waits");
        let answer = send.await.unwrap();
        assert!(taken_never_flushed(&answer), "{answer:?}");
        assert!(started.elapsed() <= limits.send_timeout);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_with_a_healthy_upstream_is_not_mistaken_for_a_dead_one() {
        let mut socket = start(SocketLimits { max_queue_bytes: 4, ping_interval: Duration::from_secs(10), ..limits() });
        socket.frame(Frame::Text(Bytes::from_static(b"abcd")));
        // The upstream answers every ping at once, but its pongs wait
        // unread behind the full queue for a minute.
        let pongs = socket.upstream.clone();
        let mut pings = std::mem::replace(&mut socket.received, mpsc::unbounded_channel().1);
        let answering = tokio::spawn(async move {
            while let Some(message) = pings.recv().await {
                if let Message::Ping(payload) = message {
                    let _ = pongs.send(Ok(Frame::Pong(payload)));
                }
            }
        });
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(socket.messages(Some(0)).await, vec![text(1, "abcd")]);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(socket.handle.send(send("still here", None)).await, Ok(()));
        match socket.handle.poll(Duration::from_secs(1), Some(1)).await {
            PollOutcome::Messages(messages) => assert_eq!(messages, vec![ClientMessage::Heartbeat]),
            other => panic!("expected a heartbeat, got {other:?}"),
        }
        answering.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_socket_on_a_wedged_upstream_ends_in_bounded_time() {
        let (socket, limits) = wedged();
        let Harness { handle, owner, upstream: _upstream, received: _received, .. } = socket;
        let started = Instant::now();
        drop(handle);
        assert_eq!(owner.await.unwrap(), End::Abandoned);
        assert!(started.elapsed() <= limits.send_timeout, "ended after {:?}", started.elapsed());
    }

    #[tokio::test(start_paused = true)]
    async fn sends_beyond_those_a_socket_holds_are_refused_at_once() {
        let (socket, _) = wedged();
        let mut waiting = Vec::new();
        for seq in 1..=WAITING_SENDS as u64 {
            let sender = socket.handle.clone();
            waiting.push(tokio::spawn(async move { sender.send(send("x", Some(seq))).await }));
        }
        tokio::task::yield_now().await;
        let started = Instant::now();
        let one_too_many = send("one too many", Some(WAITING_SENDS as u64 + 1));
        assert_eq!(socket.handle.send(one_too_many).await, rejected(SendFailure::Busy, 0));
        assert_eq!(started.elapsed(), Duration::ZERO);
        for send in waiting {
            let answer = send.await.unwrap();
            assert!(taken_never_flushed(&answer), "{answer:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_pings_holds_one_pong() {
        let mut socket = start(limits());
        *socket.room.lock().unwrap() = Room::Full(0);
        for i in 0..1000u32 {
            socket.frame(Frame::Ping(Bytes::from(i.to_string())));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        *socket.room.lock().unwrap() = Room::Unlimited;
        // The send wakes the owner to write again: the one pong first.
        assert_eq!(socket.handle.send(send("x", None)).await, Ok(()));
        assert_eq!(socket.next_sent().await, Message::Pong(Bytes::from_static(b"999")));
        socket.sent_texts(&["x"]).await;
    }

    #[tokio::test(start_paused = true)]
    async fn past_the_daemon_wide_budget_only_sockets_over_their_floor_stop_reading() {
        let metrics = Arc::new(DaemonMetrics::new(&Registry::new(), 1));
        let limits = SocketLimits { max_daemon_queue_bytes: 100 * 1024, ..limits() };
        let hoarder = start_sharing(limits.clone(), metrics.clone());
        let light = start_sharing(limits, metrics.clone());
        let big = Bytes::from(vec![b'x'; 100 * 1024]);
        hoarder.frame(Frame::Binary(big.clone()));
        hoarder.frame(Frame::Binary(big));
        light.frame(Frame::Text(Bytes::from_static(b"a")));
        light.frame(Frame::Text(Bytes::from_static(b"b")));
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(light.messages(Some(0)).await, vec![text(1, "a"), text(2, "b")], "under its floor: reads on");
        assert_eq!(hoarder.messages(Some(0)).await.len(), 1, "over its floor and the budget: stopped");
        assert_eq!(metrics.queued_bytes.get(), 100 * 1024 + 2);
        assert_eq!(hoarder.messages(Some(1)).await.len(), 1, "its client caught up: the next is read");
        drop(light);
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(metrics.queued_bytes.get(), 100 * 1024, "an ended socket gives its bytes back");
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_empty_messages_fills_the_queue_too() {
        let socket = start(SocketLimits { max_queue_bytes: 64 * 1024, ..limits() });
        for _ in 0..10_000 {
            socket.frame(Frame::Text(Bytes::new()));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
        let read = socket.messages(Some(0)).await.len();
        assert_eq!(read, 64 * 1024 / crate::socket::delivery::MESSAGE_COST, "reading stopped at the bound");
    }
}
