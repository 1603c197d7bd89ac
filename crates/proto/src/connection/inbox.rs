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

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// How long a channel's consumer stays paused before its queue is compacted.
pub const COMPACT_AFTER: Duration = Duration::from_millis(20);

use super::reassembly::Message;

#[derive(Debug)]
struct Inbox {
    queue: VecDeque<Message>,
    /// Cost of the messages popped for the service and not yet reported taken.
    handed: u64,
    /// Of `handed`, the cost of a hand-over waiting for room in the service's mailbox.
    waiting: u64,
    /// Paused since then (not yet compacting).
    paused_since: Option<Instant>,
    /// Paused long enough: what it holds is compacted.
    compacting: bool,
}

/// The per-channel queues of one connection.
#[derive(Debug, Default)]
pub(crate) struct Inboxes {
    index: Vec<(u8, Inbox)>,
}

fn compact(msg: &mut Message) {
    if !msg.payload.is_empty() && !msg.payload.is_unique() {
        msg.payload = Bytes::copy_from_slice(&msg.payload);
    }
}

impl Inboxes {
    pub(crate) fn add_channel(&mut self, channel: u8) {
        if self.get(channel).is_none() {
            self.index.push((
                channel,
                Inbox {
                    queue: VecDeque::new(),
                    handed: 0,
                    waiting: 0,
                    paused_since: None,
                    compacting: false,
                },
            ));
        }
    }

    fn get(&self, channel: u8) -> Option<&Inbox> {
        self.index
            .iter()
            .find(|(c, _)| *c == channel)
            .map(|(_, b)| b)
    }

    fn get_mut(&mut self, channel: u8) -> Option<&mut Inbox> {
        self.index
            .iter_mut()
            .find(|(c, _)| *c == channel)
            .map(|(_, b)| b)
    }

    /// Drops what waits on `channel` (its service went away); returns the dropped
    /// messages' cost.
    pub(crate) fn clear(&mut self, channel: u8) -> u64 {
        let Some(inbox) = self.get_mut(channel) else {
            return 0;
        };
        let cost = inbox.queue.iter().map(Message::cost).sum();
        inbox.queue.clear();
        inbox.paused_since = None;
        inbox.compacting = false;
        cost
    }

    /// Queues a message; `true` when its queue was empty (the channel became readable).
    pub(crate) fn push(&mut self, mut msg: Message) -> bool {
        let Some(inbox) = self.get_mut(msg.channel) else {
            return false;
        };
        if inbox.compacting {
            compact(&mut msg);
        }
        inbox.queue.push_back(msg);
        inbox.queue.len() == 1
    }

    /// Queues messages of `channel`, in order; `true` when its queue was empty and
    /// is not any more (the channel became readable).
    pub(crate) fn push_many(&mut self, channel: u8, msgs: impl Iterator<Item = Message>) -> bool {
        let Some(inbox) = self.get_mut(channel) else {
            return false;
        };
        let was_empty = inbox.queue.is_empty();
        if inbox.compacting {
            inbox.queue.extend(msgs.map(|mut m| {
                compact(&mut m);
                m
            }));
        } else {
            inbox.queue.extend(msgs);
        }
        was_empty && !inbox.queue.is_empty()
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
        let n = most.min(inbox.queue.len());
        let mut cost = 0;
        out.extend(inbox.queue.drain(..n).inspect(|m| cost += m.cost()));
        inbox.handed = inbox.handed.saturating_add(cost);
        n
    }

    /// Puts a message popped for the service back at the front of its queue.
    pub(crate) fn push_front(&mut self, channel: u8, mut msg: Message) {
        if let Some(inbox) = self.get_mut(channel) {
            inbox.handed = inbox.handed.saturating_sub(msg.cost());
            if inbox.compacting {
                compact(&mut msg);
            }
            inbox.queue.push_front(msg);
        }
    }

    /// The next message of `channel`, handed to its service (counted until reported
    /// with [`settle`](Self::settle)).
    pub(crate) fn pop(&mut self, channel: u8) -> Option<Message> {
        let inbox = self.get_mut(channel)?;
        let msg = inbox.queue.pop_front()?;
        inbox.handed = inbox.handed.saturating_add(msg.cost());
        Some(msg)
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
        self.index.iter().any(|(_, b)| b.waiting > 0)
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
        self.get(channel).map_or(0, |b| b.queue.len())
    }

    /// Payload bytes queued on all channels.
    pub(crate) fn bytes(&self) -> usize {
        self.index
            .iter()
            .flat_map(|(_, b)| b.queue.iter())
            .map(|m| m.payload.len())
            .sum()
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
            .filter_map(|(_, b)| b.paused_since)
            .min()
            .map(|t| t + COMPACT_AFTER)
    }

    /// Compacts the queues paused for [`COMPACT_AFTER`] by `now`.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        for (_, inbox) in &mut self.index {
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
            .filter(|(_, b)| !b.queue.is_empty())
            .map(|(c, _)| *c)
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
