//! Complete messages waiting for their service, one queue per channel.
//!
//! A message that arrived whole in one packet is a slice of the reader's buffer, and
//! keeping the slice keeps the whole buffer (up to a read's worth) allocated. While a
//! channel's consumer is paused, its queue holds messages for as long as the service
//! takes, so they are **compacted**: copied into their own allocation unless they
//! already own theirs. Then the memory a stalled channel holds is its messages'
//! bytes, which its window bounds, not the read buffers they came in.

use std::collections::VecDeque;

use bytes::Bytes;

use super::reassembly::Message;

#[derive(Debug)]
struct Inbox {
    queue: VecDeque<Message>,
    paused: bool,
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
                    paused: false,
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

    /// Queues a message; `true` when its queue was empty (the channel became readable).
    pub(crate) fn push(&mut self, mut msg: Message) -> bool {
        let Some(inbox) = self.get_mut(msg.channel) else {
            return false;
        };
        if inbox.paused {
            compact(&mut msg);
        }
        inbox.queue.push_back(msg);
        inbox.queue.len() == 1
    }

    /// Puts a message back at the front of its queue.
    pub(crate) fn push_front(&mut self, channel: u8, mut msg: Message) {
        if let Some(inbox) = self.get_mut(channel) {
            if inbox.paused {
                compact(&mut msg);
            }
            inbox.queue.push_front(msg);
        }
    }

    pub(crate) fn pop(&mut self, channel: u8) -> Option<Message> {
        self.get_mut(channel)?.queue.pop_front()
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

    /// Pauses (compacting what is queued) or resumes a channel's consumer.
    pub(crate) fn set_paused(&mut self, channel: u8, paused: bool) {
        if let Some(inbox) = self.get_mut(channel) {
            if paused && !inbox.paused {
                inbox.queue.iter_mut().for_each(compact);
            }
            inbox.paused = paused;
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
        boxes.set_paused(1, true);
        boxes.set_paused(2, true);
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
