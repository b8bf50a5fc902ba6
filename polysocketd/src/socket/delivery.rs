//! A socket's way to its client: messages numbered 1, 2, 3, ... kept until
//! the client acknowledges them, and at most one long poll waiting for them.
//!
//! A poll answer can be lost in flight (a dropped connection, a proxy that
//! gave up), so nothing is released when it is handed to a poll: the next
//! poll's `ack` releases it, or returns it again when `ack` shows it never
//! arrived. That is what makes delivery lossless without duplicates.
//!
//! A streaming receive is a run of polls on one response: each asks only for
//! messages `after` the last it wrote, and keeps acknowledging what the client
//! confirmed when the stream began, so a stream cut mid-way loses nothing:
//! its client reconnects with the last `seq` it read.

use polysocket_common::wire::ClientMessage;
use std::collections::VecDeque;
use std::num::NonZeroU64;
use tokio::sync::oneshot;
use tokio::time::Instant;

/// What a poll gets.
#[derive(Debug, PartialEq, Eq)]
pub enum PollOutcome {
    Messages(Vec<ClientMessage>),
    /// A newer poll on the same socket took over.
    Superseded,
    /// The socket has ended and its close was acknowledged.
    Gone,
}

struct WaitingPoll {
    reply: oneshot::Sender<PollOutcome>,
    deadline: Instant,
    /// Answer only messages after this `seq`.
    after: u64,
}

/// Which messages a poll releases and which it asks for, and for a
/// stream's polls, which stream asks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PollRange {
    /// Release messages up to this `seq`; `None`: up to what earlier polls returned.
    pub ack: Option<u64>,
    /// Answer only messages after this `seq` (a stream's last written one);
    /// `None`: everything not released.
    pub after: Option<NonZeroU64>,
    /// The stream this poll belongs to, if any. A stream's later polls
    /// (those with `after`) never take over from a newer poll or stream: a
    /// stream whose client has gone may still be running when its client's
    /// reconnection arrives, and must not take the socket back.
    pub stream: Option<NonZeroU64>,
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
    next_seq: u64,
    /// Highest `seq` handed to a poll whose client was still there, so a poll
    /// without `ack` knows what it acknowledges.
    returned_upto: u64,
    waiting: Option<WaitingPoll>,
    /// The close code, once the close (always the last message) is queued.
    close_code: Option<u16>,
    /// When the last poll ended: a socket nobody polls goes idle from then.
    last_poll_end: Instant,
    /// The stream that last started, while no plain poll has come since.
    current_stream: Option<NonZeroU64>,
}

impl DeliveryQueue {
    pub fn new(now: Instant) -> Self {
        DeliveryQueue {
            queue: VecDeque::new(),
            queued_bytes: 0,
            next_seq: 1,
            returned_upto: 0,
            waiting: None,
            close_code: None,
            last_poll_end: now,
            current_stream: None,
        }
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
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

    /// Takes a new poll, answering the one it replaces. `ack` releases
    /// messages up to that `seq`; without it, everything earlier polls
    /// returned is released. Whatever is left (after `after`, for a stream
    /// that wrote up to it) is answered at once.
    pub fn poll(&mut self, reply: oneshot::Sender<PollOutcome>, range: PollRange, deadline: Instant, now: Instant) {
        let PollRange { ack, after, stream } = range;
        if after.is_some() && stream != self.current_stream {
            let _ = reply.send(PollOutcome::Superseded);
            return;
        }
        self.current_stream = stream;
        self.answer_waiting(PollOutcome::Superseded, now);
        // Nothing beyond what was returned can be acknowledged; an `ack`
        // below it means answers were lost, and they are returned again.
        let ack = ack.map_or(self.returned_upto, |ack| ack.min(self.returned_upto));
        while self.queue.front().is_some_and(|m| m.seq <= ack) {
            let released = self.queue.pop_front().expect("checked non-empty");
            self.queued_bytes -= released.size;
        }
        // A stream cannot have written what was never returned; what it
        // wrote stays returned, while a poll's `ack` below what was returned
        // says the rest was lost.
        let after = after.map_or(ack, |after| after.get().clamp(ack, self.returned_upto));
        self.returned_upto = after;
        if self.queue.is_empty() && self.is_closed() {
            self.last_poll_end = now;
            let _ = reply.send(PollOutcome::Gone);
            return;
        }
        self.waiting = Some(WaitingPoll { reply, deadline, after });
        self.flush(now);
    }

    /// Queues a message for the client; `build` gets its `seq`.
    pub fn push(&mut self, size: usize, build: impl FnOnce(u64) -> ClientMessage, now: Instant) {
        debug_assert!(!self.is_closed(), "nothing follows the close");
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.push_back(QueuedMessage { seq, size, message: build(seq) });
        self.queued_bytes += size;
        self.flush(now);
    }

    /// Queues the close, the socket's last message.
    pub fn push_close(&mut self, code: u16, reason: String, now: Instant) {
        self.push(0, |seq| ClientMessage::Close { seq, code, reason }, now);
        self.close_code = Some(code);
    }

    /// Answers the waiting poll with a heartbeat (its ttl ran out).
    pub fn heartbeat(&mut self, now: Instant) {
        self.answer_waiting(PollOutcome::Messages(vec![ClientMessage::Heartbeat]), now);
    }

    /// Hands everything queued to the waiting poll, if there is one.
    fn flush(&mut self, now: Instant) {
        let Some(after) = self.waiting.as_ref().map(|w| w.after) else { return };
        let Some(last_seq) = self.queue.back().map(|m| m.seq).filter(|&last| last > after) else { return };
        let messages = self.queue.iter().skip_while(|m| m.seq <= after).map(|m| m.message.clone()).collect();
        if self.answer_waiting(PollOutcome::Messages(messages), now) {
            self.returned_upto = last_seq;
        }
    }

    /// Answers the waiting poll; `true` if its client was still there.
    fn answer_waiting(&mut self, outcome: PollOutcome, now: Instant) -> bool {
        let Some(waiting) = self.waiting.take() else { return false };
        self.last_poll_end = now;
        waiting.reply.send(outcome).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const TTL: Duration = Duration::from_secs(25);

    fn text(seq: u64, data: &str) -> ClientMessage {
        ClientMessage::Text { seq, data: data.into() }
    }

    fn push_text(queue: &mut DeliveryQueue, data: &str) {
        let data = data.to_owned();
        queue.push(data.len(), |seq| ClientMessage::Text { seq, data }, Instant::now());
    }

    /// Starts a poll and returns what it was answered with at once, if anything.
    fn poll(queue: &mut DeliveryQueue, ack: Option<u64>) -> (oneshot::Receiver<PollOutcome>, Option<PollOutcome>) {
        poll_range(queue, PollRange { ack, ..PollRange::default() })
    }

    fn poll_range(
        queue: &mut DeliveryQueue,
        range: PollRange,
    ) -> (oneshot::Receiver<PollOutcome>, Option<PollOutcome>) {
        let (reply, mut answer) = oneshot::channel();
        queue.poll(reply, range, Instant::now() + TTL, Instant::now());
        let now = answer.try_recv().ok();
        (answer, now)
    }

    #[tokio::test(start_paused = true)]
    async fn messages_are_numbered_and_kept_until_acknowledged() {
        let mut queue = DeliveryQueue::new(Instant::now());
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
    async fn a_lost_answer_is_returned_again_by_ack() {
        let mut queue = DeliveryQueue::new(Instant::now());
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
        let mut queue = DeliveryQueue::new(Instant::now());
        let (answer, _) = poll(&mut queue, None);
        drop(answer);
        push_text(&mut queue, "a");
        // The poll's client had gone: seq 1 must come with the next poll.
        let (_, next) = poll(&mut queue, None);
        assert_eq!(next, Some(PollOutcome::Messages(vec![text(1, "a")])));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_gets_each_message_once_and_keeps_them_until_its_client_acknowledges() {
        let mut queue = DeliveryQueue::new(Instant::now());
        push_text(&mut queue, "a");
        push_text(&mut queue, "b");
        // The stream starts from ack 0 and writes 1 and 2.
        let stream = NonZeroU64::new(7);
        let (_, first) = poll_range(&mut queue, PollRange { ack: Some(0), after: None, stream });
        assert_eq!(first, Some(PollOutcome::Messages(vec![text(1, "a"), text(2, "b")])));
        // Its next turn asks for what follows 2: nothing yet, so it waits.
        let (mut next, now) = poll_range(&mut queue, PollRange { ack: Some(0), after: NonZeroU64::new(2), stream });
        assert_eq!(now, None);
        // A heartbeat ends that turn; the next still starts after 2.
        queue.heartbeat(Instant::now());
        assert_eq!(next.try_recv(), Ok(PollOutcome::Messages(vec![ClientMessage::Heartbeat])));
        let (mut next, _) = poll_range(&mut queue, PollRange { ack: Some(0), after: NonZeroU64::new(2), stream });
        push_text(&mut queue, "c");
        assert_eq!(next.try_recv(), Ok(PollOutcome::Messages(vec![text(3, "c")])));
        assert_eq!(queue.queued_bytes(), 3, "nothing is released while the client has confirmed nothing");
        // The stream broke after the client read seq 1: it resumes from there.
        let stream = NonZeroU64::new(8);
        let (_, resumed) = poll_range(&mut queue, PollRange { ack: Some(1), after: None, stream });
        assert_eq!(resumed, Some(PollOutcome::Messages(vec![text(2, "b"), text(3, "c")])));
        assert_eq!(queue.queued_bytes(), 2);
        // `after` beyond what was returned cannot skip messages.
        push_text(&mut queue, "d");
        let (_, clamped) = poll_range(&mut queue, PollRange { ack: Some(1), after: NonZeroU64::new(99), stream });
        assert_eq!(clamped, Some(PollOutcome::Messages(vec![text(4, "d")])));
    }

    #[tokio::test(start_paused = true)]
    async fn an_abandoned_stream_never_takes_the_socket_back() {
        let mut queue = DeliveryQueue::new(Instant::now());
        let (old, new) = (NonZeroU64::new(1), NonZeroU64::new(2));
        push_text(&mut queue, "a");
        let _ = poll_range(&mut queue, PollRange { ack: Some(0), after: None, stream: old });
        // The client reconnected: a new stream waits for what follows seq 1.
        let (mut waiting, _) = poll_range(&mut queue, PollRange { ack: Some(1), after: None, stream: new });
        // The old stream, not yet aware its client left, asks for more.
        let (_, refused) = poll_range(&mut queue, PollRange { ack: Some(0), after: NonZeroU64::new(1), stream: old });
        assert_eq!(refused, Some(PollOutcome::Superseded));
        push_text(&mut queue, "b");
        assert_eq!(waiting.try_recv(), Ok(PollOutcome::Messages(vec![text(2, "b")])), "the new stream keeps it");
        // A plain poll takes over from any stream.
        let _ = poll(&mut queue, None);
        let (_, refused) = poll_range(&mut queue, PollRange { ack: Some(1), after: NonZeroU64::new(2), stream: new });
        assert_eq!(refused, Some(PollOutcome::Superseded));
    }

    #[tokio::test(start_paused = true)]
    async fn a_newer_poll_supersedes_the_waiting_one() {
        let mut queue = DeliveryQueue::new(Instant::now());
        let (mut older, _) = poll(&mut queue, None);
        let (_newer, _) = poll(&mut queue, None);
        assert_eq!(older.try_recv(), Ok(PollOutcome::Superseded));
    }

    #[tokio::test(start_paused = true)]
    async fn heartbeats_and_idleness() {
        let start = Instant::now();
        let mut queue = DeliveryQueue::new(start);
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
        let mut queue = DeliveryQueue::new(Instant::now());
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
