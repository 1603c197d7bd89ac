//! Complete messages waiting for their service, one queue per channel.
//!
//! A message that arrived whole in one packet is a slice of the reader's buffer, and
//! keeping the slice keeps the whole buffer (up to a read's worth) allocated. When a
//! channel's consumer has been paused for [`COMPACT_AFTER`], its queue may hold
//! messages for as long as the service takes, so they are **compacted**: copied into
//! their own allocation unless they already own theirs (and so is every message
//! queued while the pause lasts). Then the memory a stalled channel holds is its
//! messages' bytes, which its window bounds, not the read buffers they came in. A
//! consumer that is only briefly behind (a full mailbox for a moment) costs no copy.
//!
//! The messages of a `Batch` packet wait as one entry, the batch's bytes, and are
//! cut out one by one as the service takes them: queuing a batch of a thousand small
//! messages is one push, not a thousand.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// How long a channel's consumer stays paused before its queue is compacted.
pub const COMPACT_AFTER: Duration = Duration::from_millis(20);

use super::flow::MESSAGE_COST;
use super::reassembly::Message;
use crate::wire::codec::{batch_entry, Batch, MsgKind};

/// What waits in a queue: one message, or what is left of a batch.
#[derive(Debug)]
enum Entry {
    One(Message),
    /// Whole plain messages as a `Batch` carries them: `left` entries from byte `at`
    /// of `body`.
    Run {
        body: Bytes,
        at: usize,
        left: usize,
    },
}

#[derive(Debug)]
struct Inbox {
    channel: u8,
    queue: VecDeque<Entry>,
    /// Messages waiting, and their payload bytes.
    messages: usize,
    bytes: usize,
    /// Cost of the messages popped for the service and not yet reported taken.
    handed: u64,
    /// Of `handed`, the cost of a hand-over waiting for room in the service's mailbox.
    waiting: u64,
    /// Paused since then (not yet compacting).
    paused_since: Option<Instant>,
    /// Paused long enough: what it holds is compacted.
    compacting: bool,
}

impl Inbox {
    fn push_back(&mut self, mut entry: Entry) {
        if self.compacting {
            compact(&mut entry);
        }
        self.queue.push_back(entry);
    }

    /// The next message, counted as handed to the service.
    fn pop(&mut self) -> Option<Message> {
        let msg = match self.queue.front_mut()? {
            Entry::One(_) => match self.queue.pop_front() {
                Some(Entry::One(m)) => m,
                _ => return None,
            },
            Entry::Run { body, at, left } => {
                let next = batch_entry(body, *at);
                *left -= 1;
                let done = *left == 0 || next.is_none();
                if let Some((_, end)) = &next {
                    *at = *end;
                }
                if done {
                    self.queue.pop_front();
                }
                Message {
                    channel: self.channel,
                    kind: MsgKind::Plain,
                    payload: next?.0,
                }
            }
        };
        self.messages -= 1;
        self.bytes -= msg.payload.len();
        self.handed = self.handed.saturating_add(msg.cost());
        Some(msg)
    }
}

/// The per-channel queues of one connection.
#[derive(Debug, Default)]
pub(crate) struct Inboxes {
    index: Vec<Inbox>,
}

fn compact(entry: &mut Entry) {
    match entry {
        Entry::One(msg) => {
            if !msg.payload.is_empty() && !msg.payload.is_unique() {
                msg.payload = Bytes::copy_from_slice(&msg.payload);
            }
        }
        Entry::Run { body, at, .. } => {
            if *at > 0 || !body.is_unique() {
                *body = Bytes::copy_from_slice(body.get(*at..).unwrap_or_default());
                *at = 0;
            }
        }
    }
}

impl Inboxes {
    pub(crate) fn add_channel(&mut self, channel: u8) {
        if self.get(channel).is_none() {
            self.index.push(Inbox {
                channel,
                queue: VecDeque::new(),
                messages: 0,
                bytes: 0,
                handed: 0,
                waiting: 0,
                paused_since: None,
                compacting: false,
            });
        }
    }

    fn get(&self, channel: u8) -> Option<&Inbox> {
        self.index.iter().find(|b| b.channel == channel)
    }

    fn get_mut(&mut self, channel: u8) -> Option<&mut Inbox> {
        self.index.iter_mut().find(|b| b.channel == channel)
    }

    /// Drops what waits on `channel` (its service went away); returns the dropped
    /// messages' cost.
    pub(crate) fn clear(&mut self, channel: u8) -> u64 {
        let Some(inbox) = self.get_mut(channel) else {
            return 0;
        };
        let cost = inbox.bytes as u64 + inbox.messages as u64 * MESSAGE_COST;
        inbox.queue.clear();
        inbox.messages = 0;
        inbox.bytes = 0;
        inbox.paused_since = None;
        inbox.compacting = false;
        cost
    }

    /// Queues a message; `true` when its queue was empty (the channel became readable).
    pub(crate) fn push(&mut self, msg: Message) -> bool {
        let Some(inbox) = self.get_mut(msg.channel) else {
            return false;
        };
        inbox.messages += 1;
        inbox.bytes += msg.payload.len();
        inbox.push_back(Entry::One(msg));
        inbox.messages == 1
    }

    /// Queues the messages of a batch, in order; `true` when its channel's queue was
    /// empty (the channel became readable).
    pub(crate) fn push_batch(&mut self, batch: &Batch) -> bool {
        let Some(inbox) = self.get_mut(batch.channel()) else {
            return false;
        };
        let was_empty = inbox.messages == 0;
        inbox.messages += batch.count();
        inbox.bytes += batch.payload_len();
        inbox.push_back(Entry::Run {
            body: batch.body().clone(),
            at: 0,
            left: batch.count(),
        });
        was_empty
    }

    /// Moves up to `most` of `channel`'s next messages to `out`, handed to the
    /// service as [`pop`](Self::pop) does; returns how many.
    pub(crate) fn pop_many(
        &mut self,
        channel: u8,
        most: usize,
        out: &mut VecDeque<Message>,
    ) -> usize {
        let Some(inbox) = self.get_mut(channel) else {
            return 0;
        };
        let n = most.min(inbox.messages);
        out.reserve(n);
        for _ in 0..n {
            match inbox.pop() {
                Some(m) => out.push_back(m),
                None => return out.len(),
            }
        }
        n
    }

    /// Moves the payloads of up to `most` of `channel`'s next messages to `out`, as
    /// long as they are plain messages (it stops before a request or an answer),
    /// handed to the service as [`pop`](Self::pop) does; returns their cost.
    pub(crate) fn pop_payloads(&mut self, channel: u8, most: usize, out: &mut Vec<Bytes>) -> u64 {
        let Some(inbox) = self.get_mut(channel) else {
            return 0;
        };
        let (mut count, mut bytes) = (0usize, 0usize);
        while count < most {
            match inbox.queue.front_mut() {
                Some(Entry::One(m)) if m.kind == MsgKind::Plain => {
                    if let Some(Entry::One(m)) = inbox.queue.pop_front() {
                        bytes += m.payload.len();
                        count += 1;
                        out.push(m.payload);
                    }
                }
                Some(Entry::Run { body, at, left }) => {
                    let take = (*left).min(most - count);
                    let mut broken = false;
                    for _ in 0..take {
                        // Always there: a `Batch` was checked whole when decoded.
                        let Some((payload, end)) = batch_entry(body, *at) else {
                            broken = true;
                            break;
                        };
                        *at = end;
                        *left -= 1;
                        bytes += payload.len();
                        count += 1;
                        out.push(payload);
                    }
                    if *left == 0 || broken {
                        inbox.messages -= *left;
                        inbox.queue.pop_front();
                    }
                }
                _ => break,
            }
        }
        inbox.messages -= count;
        inbox.bytes -= bytes;
        let cost = bytes as u64 + count as u64 * MESSAGE_COST;
        inbox.handed = inbox.handed.saturating_add(cost);
        cost
    }

    /// Puts a message popped for the service back at the front of its queue.
    pub(crate) fn push_front(&mut self, channel: u8, msg: Message) {
        if let Some(inbox) = self.get_mut(channel) {
            inbox.handed = inbox.handed.saturating_sub(msg.cost());
            inbox.messages += 1;
            inbox.bytes += msg.payload.len();
            let mut entry = Entry::One(msg);
            if inbox.compacting {
                compact(&mut entry);
            }
            inbox.queue.push_front(entry);
        }
    }

    /// The next message of `channel`, handed to its service (counted until reported
    /// with [`settle`](Self::settle)).
    pub(crate) fn pop(&mut self, channel: u8) -> Option<Message> {
        self.get_mut(channel)?.pop()
    }

    /// Cost handed out on `channel` and not yet reported taken.
    pub(crate) fn handed(&self, channel: u8) -> u64 {
        self.get(channel).map_or(0, |b| b.handed)
    }

    /// Notes (or clears, with 0) the cost of a hand-over waiting for room in the
    /// mailbox of `channel`'s service; returns the one noted before.
    pub(crate) fn set_waiting(&mut self, channel: u8, cost: u64) -> u64 {
        self.get_mut(channel)
            .map_or(0, |b| std::mem::replace(&mut b.waiting, cost))
    }

    /// Whether a hand-over of `channel` waits for room in its service's mailbox.
    pub(crate) fn is_waiting(&self, channel: u8) -> bool {
        self.get(channel).is_some_and(|b| b.waiting > 0)
    }

    /// Whether a hand-over of any channel waits for room.
    pub(crate) fn any_waiting(&self) -> bool {
        self.index.iter().any(|b| b.waiting > 0)
    }

    /// The service took what was handed out on `channel` but `keep` (in cost, still
    /// on its way): returns what it took.
    pub(crate) fn settle(&mut self, channel: u8, keep: u64) -> u64 {
        let Some(inbox) = self.get_mut(channel) else {
            return 0;
        };
        let taken = inbox.handed.saturating_sub(keep);
        inbox.handed -= taken;
        taken
    }

    pub(crate) fn len(&self, channel: u8) -> usize {
        self.get(channel).map_or(0, |b| b.messages)
    }

    /// Payload bytes queued on all channels.
    pub(crate) fn bytes(&self) -> usize {
        self.index.iter().map(|b| b.bytes).sum()
    }

    /// Pauses or resumes a channel's consumer.
    pub(crate) fn set_paused(&mut self, now: Instant, channel: u8, paused: bool) {
        if let Some(inbox) = self.get_mut(channel) {
            if !paused {
                inbox.paused_since = None;
                inbox.compacting = false;
            } else if inbox.paused_since.is_none() && !inbox.compacting {
                inbox.paused_since = Some(now);
            }
        }
    }

    /// When the earliest pause becomes long enough to compact.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.index
            .iter()
            .filter_map(|b| b.paused_since)
            .min()
            .map(|t| t + COMPACT_AFTER)
    }

    /// Compacts the queues paused for [`COMPACT_AFTER`] by `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        for inbox in &mut self.index {
            if inbox.paused_since.is_some_and(|t| t + COMPACT_AFTER <= now) {
                inbox.paused_since = None;
                inbox.compacting = true;
                inbox.queue.iter_mut().for_each(compact);
            }
        }
    }

    /// Channels with messages waiting.
    pub(crate) fn readable(&self) -> impl Iterator<Item = u8> + '_ {
        self.index
            .iter()
            .filter(|b| b.messages > 0)
            .map(|b| b.channel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::codec::MsgKind;
    use bytes::BytesMut;

    fn msg(channel: u8, payload: Bytes) -> Message {
        Message {
            channel,
            kind: MsgKind::Plain,
            payload,
        }
    }

    #[test]
    fn a_batch_waits_as_one_entry_and_comes_out_message_by_message() {
        let msgs: Vec<Bytes> = (0..5u8)
            .map(|i| Bytes::from(vec![i; usize::from(i)]))
            .collect();
        let batch = Batch::new(1, &msgs).unwrap();
        let mut boxes = Inboxes::default();
        boxes.add_channel(1);
        assert!(boxes.push(msg(1, Bytes::from_static(b"one"))));
        assert!(!boxes.push_batch(&batch), "already readable");
        assert_eq!(boxes.len(1), 6);
        assert_eq!(boxes.bytes(), 3 + 10);
        assert_eq!(boxes.pop(1).unwrap().payload, Bytes::from_static(b"one"));
        let first = boxes.pop(1).unwrap();
        assert_eq!(first.payload, msgs[0]);
        // Handed back (a full mailbox), it comes out first again.
        boxes.push_front(1, first);
        let mut out = VecDeque::new();
        assert_eq!(boxes.pop_many(1, 3, &mut out), 3);
        assert_eq!(
            out.iter().map(|m| m.payload.clone()).collect::<Vec<_>>(),
            msgs[..3].to_vec()
        );
        assert_eq!(
            boxes.handed(1),
            4 * MESSAGE_COST + 3 + 3,
            "\"one\", then 0, 1 and 2"
        );
        // Compacted while paused: what is left is copied out of the batch's buffer.
        #[allow(clippy::disallowed_methods)]
        let t = Instant::now();
        boxes.set_paused(t, 1, true);
        boxes.handle_timeout(t + COMPACT_AFTER);
        assert_eq!(boxes.len(1), 2);
        let rest: Vec<Bytes> = std::iter::from_fn(|| boxes.pop(1).map(|m| m.payload)).collect();
        assert_eq!(rest, msgs[3..].to_vec());
        let body = batch.body().as_ptr_range();
        assert!(
            !body.contains(&rest[0].as_ptr()),
            "copied out of the batch's buffer"
        );
        assert_eq!(boxes.readable().count(), 0);
        assert!(boxes.push_batch(&batch));
        assert_eq!(boxes.clear(1), 10 + 5 * MESSAGE_COST, "cleared at its cost");
        assert_eq!((boxes.len(1), boxes.bytes()), (0, 0));
    }

    #[test]
    fn payloads_come_out_of_runs_and_single_messages_until_a_request() {
        let msgs: Vec<Bytes> = (1..=4u8).map(|i| Bytes::from(vec![i; 2])).collect();
        let batch = Batch::new(1, &msgs).unwrap();
        let mut boxes = Inboxes::default();
        boxes.add_channel(1);
        boxes.push(msg(1, Bytes::from_static(b"a")));
        boxes.push_batch(&batch);
        boxes.push(Message {
            channel: 1,
            kind: MsgKind::Request(9),
            payload: Bytes::from_static(b"req"),
        });
        boxes.push_batch(&batch);
        let mut out = Vec::new();
        // Three: "a" and the batch's first two.
        assert_eq!(boxes.pop_payloads(1, 3, &mut out), 3 * MESSAGE_COST + 1 + 4);
        assert_eq!(
            out,
            [Bytes::from_static(b"a"), msgs[0].clone(), msgs[1].clone()]
        );
        out.clear();
        // The rest of the batch, then the request stops it.
        assert_eq!(boxes.pop_payloads(1, 100, &mut out), 2 * MESSAGE_COST + 4);
        assert_eq!(out, msgs[2..].to_vec());
        out.clear();
        assert_eq!(boxes.pop_payloads(1, 100, &mut out), 0);
        assert!(out.is_empty());
        assert_eq!(boxes.pop(1).unwrap().kind, MsgKind::Request(9));
        assert_eq!(boxes.pop_payloads(1, 100, &mut out), 4 * MESSAGE_COST + 8);
        assert_eq!(out, msgs);
        assert_eq!((boxes.len(1), boxes.bytes()), (0, 0));
        assert_eq!(boxes.handed(1), 10 * MESSAGE_COST + 1 + 3 + 16);
    }

    #[test]
    fn paused_channels_hold_compact_copies() {
        let mut read_buffer = BytesMut::from(&[7u8; 4096][..]);
        let slice = read_buffer.split_to(16).freeze();
        let mut boxes = Inboxes::default();
        boxes.add_channel(1);
        boxes.add_channel(2);
        assert!(boxes.push(msg(1, slice.clone())));
        assert!(!boxes.push(msg(1, slice.clone())), "already readable");
        #[allow(clippy::disallowed_methods)]
        let t = Instant::now();
        boxes.set_paused(t, 1, true);
        boxes.set_paused(t, 2, true);
        assert_eq!(boxes.poll_timeout(), Some(t + COMPACT_AFTER));
        boxes.handle_timeout(t + COMPACT_AFTER - Duration::from_millis(1));
        assert_eq!(
            boxes.pop(1).unwrap().payload.as_ptr(),
            slice.as_ptr(),
            "a brief pause copies nothing"
        );
        boxes.push_front(1, msg(1, slice.clone()));
        boxes.handle_timeout(t + COMPACT_AFTER);
        assert_eq!(boxes.poll_timeout(), None);
        assert!(boxes.push(msg(2, slice.clone())));
        let owned = Bytes::from(vec![1u8; 32]);
        let ptr = owned.as_ptr();
        boxes.push(msg(2, owned));
        for ch in [1, 2] {
            let m = boxes.pop(ch).unwrap();
            assert_ne!(
                m.payload.as_ptr(),
                slice.as_ptr(),
                "copied out of the read buffer"
            );
            assert_eq!(m.payload, slice);
        }
        assert_eq!(
            boxes.pop(2).unwrap().payload.as_ptr(),
            ptr,
            "already owned: kept"
        );
        assert_eq!(boxes.readable().collect::<Vec<_>>(), vec![1]);
        assert_eq!(boxes.bytes(), 16);
        assert!(
            !boxes.push(msg(9, slice)),
            "unknown channels are not queued"
        );
    }
}
