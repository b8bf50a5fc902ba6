//! A socket's way to its client: messages numbered 1, 2, 3, ... kept until
//! the client acknowledges them, and at most one receiver waiting for them:
//! a long poll, answered once, or a stream, fed for as long as it lives.
//!
//! A poll answer can be lost in flight (a dropped connection, a proxy that
//! gave up), so nothing is released when it is handed to a poll: the next
//! poll's `ack` releases it, or returns it again when `ack` shows it never
//! arrived. That is what makes delivery lossless without duplicates.
//!
//! A stream gets each message once, as it is queued, but releases only what
//! its client confirmed when the stream began: a stream cut mid-way loses
//! nothing, as its client reconnects from the last `seq` it read. Nor does
//! what a stream wrote count as returned for a poll without `ack`: a stream
//! whose client has gone takes messages until the daemon notices, and the
//! next poll must still get them. (A stream without `ack` is a live view,
//! as `tail -f` is: it starts after whatever was handed over before.)

use polysocket_common::wire::ClientMessage;
use prometheus::IntGauge;
use std::collections::VecDeque;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// What a queued message costs beyond its payload (its entry, its JSON
/// framing), as the queue's bounds count it.
pub const MESSAGE_COST: usize = 64;

/// Bytes (as [`DeliveryQueue::held_bytes`] counts them) one poll answer
/// carries at most (a larger message goes alone).
pub const POLL_BYTES: usize = 256 * 1024;

/// Where a stream's messages go, a batch at a time.
pub type StreamSink = mpsc::UnboundedSender<Vec<ClientMessage>>;

/// What a poll gets.
#[derive(Debug, PartialEq, Eq)]
pub enum PollOutcome {
    Messages(Vec<ClientMessage>),
    /// A newer poll on the same socket took over.
    Superseded,
    /// The socket has ended and its close was acknowledged.
    Gone,
}

enum Receiver {
    Poll(oneshot::Sender<PollOutcome>),
    /// Dropping the sink ends the stream.
    Stream {
        sink: StreamSink,
        heartbeat: Duration,
    },
}

struct Waiting {
    receiver: Receiver,
    /// When a heartbeat is due: a poll's ttl, a stream's heartbeat interval.
    deadline: Instant,
    /// What the receiver already has: messages after this `seq` are new to it.
    after: u64,
}

struct QueuedMessage {
    seq: u64,
    /// Payload bytes, what `--max-queue-bytes` bounds.
    size: usize,
    message: ClientMessage,
}

pub struct DeliveryQueue {
    /// Messages not yet acknowledged by the client, oldest first.
    queue: VecDeque<QueuedMessage>,
    /// Payload bytes in `queue`.
    queued_bytes: usize,
    /// Payload bytes in every socket's queue, which this one adds to.
    daemon_queued: IntGauge,
    next_seq: u64,
    /// Highest `seq` handed to a receiver whose client was still there: no
    /// `ack` can acknowledge more, and a stream without `ack` starts here.
    handed_upto: u64,
    /// Highest `seq` handed to a poll whose client was still there: what a
    /// poll without `ack` acknowledges.
    polled_upto: u64,
    waiting: Option<Waiting>,
    /// The close code, once the close (always the last message) is queued.
    close_code: Option<u16>,
    /// When the last poll ended: a socket nobody polls goes idle from then.
    last_poll_end: Instant,
}

impl DeliveryQueue {
    pub fn new(now: Instant, daemon_queued: IntGauge) -> Self {
        DeliveryQueue {
            queue: VecDeque::new(),
            queued_bytes: 0,
            daemon_queued,
            next_seq: 1,
            handed_upto: 0,
            polled_upto: 0,
            waiting: None,
            close_code: None,
            last_poll_end: now,
        }
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// What the queue holds for its bounds: payload, and [`MESSAGE_COST`]
    /// per message, so that a flood of empty messages fills it too.
    pub fn held_bytes(&self) -> usize {
        self.queued_bytes + self.queue.len() * MESSAGE_COST
    }

    /// Whether the close has been queued: nothing may follow it.
    pub fn is_closed(&self) -> bool {
        self.close_code.is_some()
    }

    /// When the waiting poll must be answered with a heartbeat, if one waits.
    pub fn poll_deadline(&self) -> Option<Instant> {
        self.waiting.as_ref().map(|w| w.deadline)
    }

    /// When the client was last seen polling; `None` while a poll waits,
    /// as a socket with a poll waiting is in use.
    pub fn idle_since(&self) -> Option<Instant> {
        self.waiting.is_none().then_some(self.last_poll_end)
    }

    /// The close code once the close has reached the client and no poll is
    /// left waiting: the socket's work is done.
    pub fn finished(&self) -> Option<u16> {
        self.close_code.filter(|_| self.queue.is_empty() && self.waiting.is_none())
    }

    /// Takes a new poll, answering the poll (or ending the stream) it
    /// replaces. `ack` releases messages up to that `seq`; without it,
    /// everything earlier polls returned is released (not what a stream
    /// wrote: its client may have gone before reading it). Whatever is left
    /// is answered at once.
    pub fn poll(&mut self, reply: oneshot::Sender<PollOutcome>, ack: Option<u64>, deadline: Instant, now: Instant) {
        let after = self.take_over(ack.unwrap_or(self.polled_upto), now);
        if self.queue.is_empty() && self.is_closed() {
            let _ = reply.send(PollOutcome::Gone);
            return;
        }
        self.waiting = Some(Waiting { receiver: Receiver::Poll(reply), deadline, after });
        self.flush(now);
    }

    /// Takes a new stream, as [`DeliveryQueue::poll`] takes a poll: `sink`
    /// gets what is left at once, then each message as it is queued, and a
    /// heartbeat after each `heartbeat` without one, until a newer poll or
    /// stream takes over or the stream's end drops the other side. Without
    /// `ack` it starts after everything already handed over, as `tail -f`
    /// would: a `curl -N` run again without `ack` moves on rather than
    /// replaying the same messages.
    pub fn stream(&mut self, sink: StreamSink, ack: Option<u64>, heartbeat: Duration, now: Instant) {
        let after = self.take_over(ack.unwrap_or(self.handed_upto), now);
        if self.queue.is_empty() && self.is_closed() {
            return; // dropping the sink ends the stream: nothing is left
        }
        self.waiting =
            Some(Waiting { receiver: Receiver::Stream { sink, heartbeat }, deadline: now + heartbeat, after });
        self.flush(now);
    }

    /// Supersedes whoever waits, releases what `ack` acknowledges, and
    /// returns what the new receiver has.
    fn take_over(&mut self, ack: u64, now: Instant) -> u64 {
        self.deliver(PollOutcome::Superseded, now);
        self.last_poll_end = now;
        // Nothing beyond what was handed over can be acknowledged; an `ack`
        // below it means answers were lost, and they are returned again.
        let ack = ack.min(self.handed_upto);
        while self.queue.front().is_some_and(|m| m.seq <= ack) {
            let released = self.queue.pop_front().expect("checked non-empty");
            self.queued_bytes -= released.size;
            self.daemon_queued.sub(released.size as i64);
        }
        self.handed_upto = ack;
        self.polled_upto = ack;
        ack
    }

    /// Queues a message for the client; `build` gets its `seq`.
    pub fn push(&mut self, size: usize, build: impl FnOnce(u64) -> ClientMessage, now: Instant) {
        debug_assert!(!self.is_closed(), "nothing follows the close");
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push_back(QueuedMessage { seq, size, message: build(seq) });
        self.queued_bytes += size;
        self.daemon_queued.add(size as i64);
        self.flush(now);
    }

    /// Queues the close, the socket's last message.
    pub fn push_close(&mut self, code: u16, reason: String, now: Instant) {
        self.push(0, |seq| ClientMessage::Close { seq, code, reason }, now);
        self.close_code = Some(code);
    }

    /// Sends the waiting receiver a heartbeat (its ttl or interval ran out).
    pub fn heartbeat(&mut self, now: Instant) {
        self.deliver(PollOutcome::Messages(vec![ClientMessage::Heartbeat]), now);
    }

    /// Hands what the waiting receiver does not have yet to it.
    fn flush(&mut self, now: Instant) {
        let Some((after, to_poll)) = self.waiting.as_ref().map(|w| (w.after, matches!(w.receiver, Receiver::Poll(_))))
        else {
            return;
        };
        if self.queue.back().is_none_or(|m| m.seq <= after) {
            return;
        }
        // A stream keeps what it sent queued until its client acknowledges
        // it (up to --max-stream-bytes), so the unsent tail is found by its
        // seq (the queue is in seq order), not by walking what was sent.
        let unsent = self.queue.partition_point(|m| m.seq <= after);
        // A poll takes at most POLL_BYTES (and at least one message): its
        // client asks again for the rest, so a full queue polled over and
        // over from the same `ack` costs a bounded copy and encoding each
        // time, not the whole queue. A stream gets everything: it has one
        // reader, which acknowledges as it goes.
        let (mut taken, mut bytes) = (0, 0);
        for message in self.queue.range(unsent..) {
            let cost = message.size + MESSAGE_COST;
            if to_poll && taken > 0 && bytes + cost > POLL_BYTES {
                break;
            }
            bytes += cost;
            taken += 1;
        }
        let last_seq = self.queue[unsent + taken - 1].seq;
        let messages = self.queue.range(unsent..unsent + taken).map(|m| m.message.clone()).collect();
        if self.deliver(PollOutcome::Messages(messages), now) {
            self.handed_upto = last_seq;
            if to_poll {
                self.polled_upto = last_seq;
            }
            if let Some(stream) = &mut self.waiting {
                stream.after = last_seq;
            }
        }
    }

    /// Hands `outcome` to the waiting receiver; `true` if its client was
    /// still there. A poll is answered and gone. A stream is fed and stays
    /// (its next heartbeat a full interval away), or, for anything but
    /// messages, or once its client has gone, is let go.
    fn deliver(&mut self, outcome: PollOutcome, now: Instant) -> bool {
        let Some(waiting) = self.waiting.take() else { return false };
        let delivered = match (waiting.receiver, outcome) {
            (Receiver::Poll(reply), outcome) => reply.send(outcome).is_ok(),
            (Receiver::Stream { sink, heartbeat }, PollOutcome::Messages(messages)) => {
                let fed = sink.send(messages).is_ok();
                if fed {
                    let receiver = Receiver::Stream { sink, heartbeat };
                    self.waiting = Some(Waiting { receiver, deadline: now + heartbeat, after: waiting.after });
                }
                fed
            }
            (Receiver::Stream { .. }, _) => false,
        };
        if self.waiting.is_none() {
            self.last_poll_end = now;
        }
        delivered
    }
}

impl Drop for DeliveryQueue {
    fn drop(&mut self) {
        self.daemon_queued.sub(self.queued_bytes as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(25);

    fn gauge() -> IntGauge {
        IntGauge::new("queued", "queued").unwrap()
    }

    fn text(seq: u64, data: &str) -> ClientMessage {
        ClientMessage::Text { seq, data: data.into() }
    }

    fn push_text(queue: &mut DeliveryQueue, data: &str) {
        let data = data.to_owned();
        queue.push(data.len(), |seq| ClientMessage::Text { seq, data }, Instant::now());
    }

    /// Starts a poll and returns what it was answered with at once, if anything.
    fn poll(queue: &mut DeliveryQueue, ack: Option<u64>) -> (oneshot::Receiver<PollOutcome>, Option<PollOutcome>) {
        let (reply, mut answer) = oneshot::channel();
        queue.poll(reply, ack, Instant::now() + TTL, Instant::now());
        let now = answer.try_recv().ok();
        (answer, now)
    }

    /// Starts a stream; its batches arrive on the receiver.
    fn stream(queue: &mut DeliveryQueue, ack: Option<u64>) -> mpsc::UnboundedReceiver<Vec<ClientMessage>> {
        let (sink, batches) = mpsc::unbounded_channel();
        queue.stream(sink, ack, TTL, Instant::now());
        batches
    }

    #[tokio::test(start_paused = true)]
    async fn messages_are_numbered_and_kept_until_acknowledged() {
        let mut queue = DeliveryQueue::new(Instant::now(), gauge());
        push_text(&mut queue, "a");
        push_text(&mut queue, "bc");
        assert_eq!(queue.queued_bytes(), 3);
        let (_, answer) = poll(&mut queue, None);
        assert_eq!(answer, Some(PollOutcome::Messages(vec![text(1, "a"), text(2, "bc")])));
        assert_eq!(queue.queued_bytes(), 3, "returned is not acknowledged");
        // The next poll acknowledges what the last one returned.
        let (mut waiting, answer) = poll(&mut queue, None);
        assert_eq!(answer, None, "nothing new: the poll waits");
        assert_eq!(queue.queued_bytes(), 0);
        push_text(&mut queue, "d");
        assert_eq!(waiting.try_recv(), Ok(PollOutcome::Messages(vec![text(3, "d")])));
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_answers_at_most_its_byte_budget_and_the_next_one_the_rest() {
        let mut queue = DeliveryQueue::new(Instant::now(), gauge());
        let big = "x".repeat(POLL_BYTES / 2 - MESSAGE_COST);
        for _ in 0..3 {
            push_text(&mut queue, &big);
        }
        let huge = "y".repeat(POLL_BYTES * 2);
        push_text(&mut queue, &huge);
        let seqs = |answer: Option<PollOutcome>| match answer {
            Some(PollOutcome::Messages(messages)) => messages
                .iter()
                .map(|m| match m {
                    ClientMessage::Text { seq, .. } => *seq,
                    other => panic!("expected text, got {other:?}"),
                })
                .collect::<Vec<_>>(),
            other => panic!("expected messages, got {other:?}"),
        };
        // Polled again and again from the same ack: the same bounded answer.
        for _ in 0..3 {
            assert_eq!(seqs(poll(&mut queue, Some(0)).1), vec![1, 2]);
        }
        assert_eq!(seqs(poll(&mut queue, Some(2)).1), vec![3]);
        assert_eq!(seqs(poll(&mut queue, Some(3)).1), vec![4], "a message over the budget goes alone");
    }

    #[tokio::test(start_paused = true)]
    async fn a_lost_answer_is_returned_again_by_ack() {
        let mut queue = DeliveryQueue::new(Instant::now(), gauge());
        push_text(&mut queue, "a");
        let (_, first) = poll(&mut queue, Some(0));
        assert_eq!(first, Some(PollOutcome::Messages(vec![text(1, "a")])));
        push_text(&mut queue, "b");
        // The client never saw seq 1: its ack says 0, and both come back.
        let (_, again) = poll(&mut queue, Some(0));
        assert_eq!(again, Some(PollOutcome::Messages(vec![text(1, "a"), text(2, "b")])));
        // An ack beyond what was returned releases only what was returned.
        push_text(&mut queue, "c");
        let (_, clamped) = poll(&mut queue, Some(99));
        assert_eq!(clamped, Some(PollOutcome::Messages(vec![text(3, "c")])));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_nobody_received_is_not_counted_as_returned() {
        let mut queue = DeliveryQueue::new(Instant::now(), gauge());
        let (answer, _) = poll(&mut queue, None);
        drop(answer);
        push_text(&mut queue, "a");
        // The poll's client had gone: seq 1 must come with the next poll.
        let (_, next) = poll(&mut queue, None);
        assert_eq!(next, Some(PollOutcome::Messages(vec![text(1, "a")])));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_gets_each_message_once_and_keeps_them_until_its_client_acknowledges() {
        let mut queue = DeliveryQueue::new(Instant::now(), gauge());
        push_text(&mut queue, "a");
        push_text(&mut queue, "b");
        let mut batches = stream(&mut queue, Some(0));
        assert_eq!(batches.try_recv(), Ok(vec![text(1, "a"), text(2, "b")]), "what is queued, at once");
        assert_eq!(queue.idle_since(), None, "a stream is activity");
        push_text(&mut queue, "c");
        assert_eq!(batches.try_recv(), Ok(vec![text(3, "c")]), "then each message once");
        // Quiet for a heartbeat interval: a heartbeat, and the stream stays.
        tokio::time::advance(TTL).await;
        assert_eq!(queue.poll_deadline(), Some(Instant::now()));
        queue.heartbeat(Instant::now());
        assert_eq!(batches.try_recv(), Ok(vec![ClientMessage::Heartbeat]));
        assert_eq!(queue.poll_deadline(), Some(Instant::now() + TTL));
        assert_eq!(queue.queued_bytes(), 3, "nothing is released while the client has confirmed nothing");
        // The stream broke after the client read seq 1: the next resumes there.
        let mut resumed = stream(&mut queue, Some(1));
        assert!(batches.try_recv().is_err(), "the older stream is let go");
        assert_eq!(resumed.try_recv(), Ok(vec![text(2, "b"), text(3, "c")]));
        assert_eq!(queue.queued_bytes(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_whose_client_left_is_let_go_and_a_poll_takes_over() {
        let mut queue = DeliveryQueue::new(Instant::now(), gauge());
        let batches = stream(&mut queue, None);
        drop(batches);
        push_text(&mut queue, "a");
        assert_eq!(queue.idle_since(), Some(Instant::now()), "nobody waits any more");
        // What the stream could not deliver comes with the next poll.
        let (_, answer) = poll(&mut queue, None);
        assert_eq!(answer, Some(PollOutcome::Messages(vec![text(1, "a")])));
        // A poll supersedes a stream, which simply ends.
        let mut batches = stream(&mut queue, Some(1));
        let _ = poll(&mut queue, Some(1));
        assert_eq!(batches.try_recv(), Err(mpsc::error::TryRecvError::Disconnected));
    }

    #[tokio::test(start_paused = true)]
    async fn what_a_stream_wrote_is_not_acknowledged_by_a_poll_without_ack() {
        let mut queue = DeliveryQueue::new(Instant::now(), gauge());
        let (_, answer) = poll(&mut queue, None);
        assert_eq!(answer, None);
        push_text(&mut queue, "a");
        // A stream whose client has gone without the daemon noticing yet:
        // its receiver still takes what is queued, the close included.
        let mut unread = stream(&mut queue, None);
        push_text(&mut queue, "b");
        queue.push_close(1000, "bye".into(), Instant::now());
        let close = ClientMessage::Close { seq: 3, code: 1000, reason: "bye".into() };
        assert_eq!(unread.try_recv(), Ok(vec![text(1, "a")]));
        assert_eq!(unread.try_recv(), Ok(vec![text(2, "b")]));
        assert_eq!(unread.try_recv(), Ok(vec![close.clone()]));
        assert_eq!(queue.finished(), None, "the stream did not acknowledge the close");
        // A poll without `ack` acknowledges what polls returned (nothing),
        // not what the stream wrote: everything comes again.
        let (_, answer) = poll(&mut queue, None);
        assert_eq!(answer, Some(PollOutcome::Messages(vec![text(1, "a"), text(2, "b"), close])));
        let (_, gone) = poll(&mut queue, None);
        assert_eq!(gone, Some(PollOutcome::Gone));
        assert_eq!(queue.finished(), Some(1000));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_without_ack_starts_after_what_was_handed_over() {
        let mut queue = DeliveryQueue::new(Instant::now(), gauge());
        push_text(&mut queue, "a");
        let mut first = stream(&mut queue, None);
        assert_eq!(first.try_recv(), Ok(vec![text(1, "a")]));
        push_text(&mut queue, "b");
        // `curl -N` run again without `ack`: it moves on, as `tail -f` does.
        let mut again = stream(&mut queue, None);
        assert!(again.try_recv().is_err(), "nothing new yet");
        push_text(&mut queue, "c");
        assert_eq!(again.try_recv(), Ok(vec![text(3, "c")]));
        // It acknowledged what the first stream wrote (a and b); what it
        // wrote itself stays until a client acknowledges it.
        assert_eq!(queue.queued_bytes(), 1);
        let mut resumed = stream(&mut queue, Some(2));
        assert_eq!(resumed.try_recv(), Ok(vec![text(3, "c")]));
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_poll_supersedes_the_waiting_one() {
        let mut queue = DeliveryQueue::new(Instant::now(), gauge());
        let (mut older, _) = poll(&mut queue, None);
        let (_newer, _) = poll(&mut queue, None);
        assert_eq!(older.try_recv(), Ok(PollOutcome::Superseded));
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_and_idleness() {
        let start = Instant::now();
        let mut queue = DeliveryQueue::new(start, gauge());
        assert_eq!(queue.idle_since(), Some(start));
        let (mut waiting, _) = poll(&mut queue, None);
        assert_eq!(queue.poll_deadline(), Some(start + TTL));
        assert_eq!(queue.idle_since(), None, "a waiting poll is activity");
        tokio::time::advance(TTL).await;
        queue.heartbeat(Instant::now());
        assert_eq!(waiting.try_recv(), Ok(PollOutcome::Messages(vec![ClientMessage::Heartbeat])));
        assert_eq!(queue.idle_since(), Some(start + TTL), "idle from the end of the last poll");
        assert_eq!(queue.poll_deadline(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_close_is_last_and_finishes_the_socket_once_acknowledged() {
        let mut queue = DeliveryQueue::new(Instant::now(), gauge());
        push_text(&mut queue, "a");
        queue.push_close(1000, "bye".into(), Instant::now());
        assert!(queue.is_closed());
        assert_eq!(queue.finished(), None, "the client has not read it");
        let (_, answer) = poll(&mut queue, None);
        let close = ClientMessage::Close { seq: 2, code: 1000, reason: "bye".into() };
        assert_eq!(answer, Some(PollOutcome::Messages(vec![text(1, "a"), close])));
        assert_eq!(queue.finished(), None, "returned, not yet acknowledged");
        let (_, gone) = poll(&mut queue, None);
        assert_eq!(gone, Some(PollOutcome::Gone));
        assert_eq!(queue.finished(), Some(1000));
    }
}
