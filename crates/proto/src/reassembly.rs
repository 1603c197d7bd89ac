//! Reassembly: chunks back into whole messages, one partial message per channel.
//!
//! The receiving side of chunking. Each channel has a size limit; a message that
//! passes its channel's `max_message_size` is an error as soon as the chunk that
//! crosses the limit arrives, before anything of that chunk is buffered. A message
//! that fits in one chunk (the common case) is handed over without a copy: its payload
//! is the slice of the read buffer the codec produced.

use bytes::{Bytes, BytesMut};

use crate::codec::{Msg, MsgKind};
use crate::reason::DisconnectReason;

/// A complete message on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Channel it arrived on.
    pub channel: u8,
    /// Plain, request or response.
    pub kind: MsgKind,
    /// The whole message.
    pub payload: Bytes,
}

#[derive(Debug)]
struct Partial {
    kind: MsgKind,
    buf: BytesMut,
}

#[derive(Debug, Default)]
struct Slot {
    /// `None`: the channel is unknown to this node.
    limit: Option<usize>,
    partial: Option<Partial>,
}

/// Per-channel reassembly of chunks into messages, within a budget for all the
/// partial messages of the connection together.
#[derive(Debug)]
pub struct Reassembler {
    slots: Vec<Slot>,
    /// Most bytes allocated for partial messages at once (all channels).
    budget: usize,
    /// Bytes allocated for partial messages now (their buffers' capacities).
    allocated: usize,
}

impl Default for Reassembler {
    fn default() -> Self {
        Self::new()
    }
}

impl Reassembler {
    /// A reassembler that knows no channel yet (every chunk is `UnknownChannel`),
    /// with no budget beyond each channel's own limit.
    #[must_use]
    pub fn new() -> Self {
        Self::with_budget(usize::MAX)
    }

    /// Like [`new`](Self::new), with at most `budget` bytes allocated for the partial
    /// messages of all channels together.
    #[must_use]
    pub fn with_budget(budget: usize) -> Self {
        Reassembler {
            slots: (0..=u8::MAX).map(|_| Slot::default()).collect(),
            budget,
            allocated: 0,
        }
    }

    /// Bytes allocated for partial messages now.
    #[must_use]
    pub fn allocated(&self) -> usize {
        self.allocated
    }

    /// Accounts `extra` more bytes of buffers, or says the budget does not have them.
    fn charge(&mut self, extra: usize) -> Result<(), DisconnectReason> {
        let want = self.allocated.saturating_add(extra);
        if want > self.budget {
            return Err(DisconnectReason::ReassemblyBudget {
                size: want,
                max: self.budget,
            });
        }
        self.allocated = want;
        Ok(())
    }

    /// Accepts messages on `channel` up to `max_message_size` bytes.
    pub fn add_channel(&mut self, channel: u8, max_message_size: usize) {
        if let Some(slot) = self.slots.get_mut(usize::from(channel)) {
            slot.limit = Some(max_message_size);
        }
    }

    /// Bytes currently buffered in partial messages (for memory accounting).
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.slots
            .iter()
            .filter_map(|s| s.partial.as_ref())
            .map(|p| p.buf.len())
            .sum()
    }

    /// Takes one chunk. Returns the message when this chunk completes one.
    ///
    /// Errors (the caller closes the peer with the returned reason):
    /// [`DisconnectReason::UnknownChannel`], [`DisconnectReason::MessageTooLarge`],
    /// [`DisconnectReason::InconsistentChunks`] (a chunk's kind differs from the first
    /// chunk of its message), [`DisconnectReason::ReassemblyBudget`] (a buffer would
    /// take the connection's partial messages over its budget; checked before it is
    /// allocated).
    pub fn push(&mut self, chunk: Msg) -> Result<Option<Message>, DisconnectReason> {
        let result = self.push_inner(chunk);
        if result.is_err() {
            // The connection is closed on any error: forget what it had buffered.
            self.clear();
        }
        result
    }

    /// Drops every partial message.
    fn clear(&mut self) {
        for slot in &mut self.slots {
            slot.partial = None;
        }
        self.allocated = 0;
    }

    fn push_inner(&mut self, chunk: Msg) -> Result<Option<Message>, DisconnectReason> {
        let channel = chunk.channel;
        let slot = self
            .slots
            .get(usize::from(channel))
            .ok_or(DisconnectReason::UnknownChannel(channel))?;
        let Some(max) = slot.limit else {
            return Err(DisconnectReason::UnknownChannel(channel));
        };
        let have = slot.partial.as_ref().map_or(0, |p| p.buf.len());
        let capacity = slot.partial.as_ref().map_or(0, |p| p.buf.capacity());
        let size = have.saturating_add(chunk.payload.len());
        if size > max {
            return Err(DisconnectReason::MessageTooLarge { channel, size, max });
        }
        if slot.partial.is_none() && chunk.eof {
            // A whole message in one chunk: handed over as it is, nothing buffered.
            return Ok(Some(Message {
                channel,
                kind: chunk.kind,
                payload: chunk.payload,
            }));
        }
        if let Some(p) = &slot.partial {
            if p.kind != chunk.kind {
                return Err(DisconnectReason::InconsistentChunks(channel));
            }
        }
        // Room for this chunk, allocated (and charged to the budget) before copying.
        let target = if have == 0 {
            // First of several chunks: reserve for a few chunks, not for `max`.
            chunk.payload.len().saturating_mul(4).min(max)
        } else if capacity - have < chunk.payload.len() {
            // Grow fourfold, never past `max` (checked above): a large message is
            // copied once or twice on its way up instead of at every doubling.
            have.saturating_mul(4).clamp(size, max)
        } else {
            capacity
        };
        if target > capacity {
            self.charge(target - capacity)?;
        }
        let slot = self
            .slots
            .get_mut(usize::from(channel))
            .ok_or(DisconnectReason::UnknownChannel(channel))?;
        let partial = slot.partial.get_or_insert_with(|| Partial {
            kind: chunk.kind,
            buf: BytesMut::new(),
        });
        if target > partial.buf.capacity() {
            // A fresh exact allocation: `reserve` may double past what was asked.
            let mut grown = BytesMut::with_capacity(target);
            grown.extend_from_slice(&partial.buf);
            partial.buf = grown;
        }
        partial.buf.extend_from_slice(&chunk.payload);
        if !chunk.eof {
            return Ok(None);
        }
        let Some(done) = slot.partial.take() else {
            return Ok(None);
        };
        self.allocated = self.allocated.saturating_sub(done.buf.capacity());
        Ok(Some(Message {
            channel,
            kind: done.kind,
            payload: done.buf.freeze(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunk(channel: u8, eof: bool, kind: MsgKind, p: &[u8]) -> Msg {
        Msg {
            channel,
            eof,
            kind,
            payload: Bytes::copy_from_slice(p),
        }
    }

    #[test]
    fn single_chunk_is_handed_over_without_copy() {
        let mut r = Reassembler::new();
        r.add_channel(1, 100);
        let payload = Bytes::from_static(b"hello");
        let ptr = payload.as_ptr();
        let m = r
            .push(Msg {
                channel: 1,
                eof: true,
                kind: MsgKind::Plain,
                payload,
            })
            .unwrap()
            .unwrap();
        assert_eq!(m.payload.as_ptr(), ptr);
    }

    #[test]
    fn chunks_of_channels_interleave() {
        let mut r = Reassembler::new();
        r.add_channel(1, 100);
        r.add_channel(2, 100);
        assert_eq!(r.push(chunk(1, false, MsgKind::Plain, b"ab")), Ok(None));
        assert_eq!(
            r.push(chunk(2, false, MsgKind::Request(5), b"xy")),
            Ok(None)
        );
        assert_eq!(r.buffered(), 4);
        let m1 = r
            .push(chunk(1, true, MsgKind::Plain, b"c"))
            .unwrap()
            .unwrap();
        assert_eq!(&m1.payload[..], b"abc");
        let m2 = r
            .push(chunk(2, true, MsgKind::Request(5), b"z"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (m2.kind, &m2.payload[..]),
            (MsgKind::Request(5), &b"xyz"[..])
        );
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn too_large_is_an_error_before_buffering_the_crossing_chunk() {
        let mut r = Reassembler::new();
        r.add_channel(1, 5);
        assert_eq!(r.push(chunk(1, false, MsgKind::Plain, b"abcd")), Ok(None));
        assert_eq!(
            r.push(chunk(1, false, MsgKind::Plain, b"ef")),
            Err(DisconnectReason::MessageTooLarge {
                channel: 1,
                size: 6,
                max: 5
            })
        );
        assert_eq!(r.buffered(), 0, "the partial message was dropped");
        assert!(matches!(
            r.push(chunk(1, true, MsgKind::Plain, b"123456")),
            Err(DisconnectReason::MessageTooLarge { size: 6, .. })
        ));
        assert_eq!(
            r.push(chunk(1, true, MsgKind::Plain, b"12345"))
                .unwrap()
                .unwrap()
                .payload
                .len(),
            5
        );
    }

    #[test]
    fn growth_stays_within_the_limit_and_a_message_of_exactly_max_completes() {
        let mut r = Reassembler::new();
        r.add_channel(1, 5000);
        let part = [7u8; 1000];
        for _ in 0..4 {
            assert_eq!(r.push(chunk(1, false, MsgKind::Plain, &part)), Ok(None));
        }
        assert!(r.slots[1].partial.as_ref().unwrap().buf.capacity() <= 5000);
        // 4000 buffered: growing fourfold would pass the limit; it stops at 5000.
        let msg = r
            .push(chunk(1, true, MsgKind::Plain, &part))
            .unwrap()
            .unwrap();
        assert_eq!(msg.payload.len(), 5000);
        assert!(msg.payload.iter().all(|b| *b == 7));
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn partial_messages_of_all_channels_share_one_budget() {
        let mut r = Reassembler::with_budget(10_000);
        r.add_channel(1, 8000);
        r.add_channel(2, 8000);
        let kb = [1u8; 1000];
        assert_eq!(r.push(chunk(1, false, MsgKind::Plain, &kb)), Ok(None));
        assert_eq!(r.push(chunk(2, false, MsgKind::Plain, &kb)), Ok(None));
        assert_eq!(r.allocated(), 8000, "4x the first chunk, per channel");
        // Completing a message gives its buffer back to the budget.
        let done = r
            .push(chunk(2, true, MsgKind::Plain, &kb))
            .unwrap()
            .unwrap();
        assert_eq!(done.payload.len(), 2000);
        assert_eq!(r.allocated(), 4000);
        assert_eq!(r.push(chunk(2, false, MsgKind::Plain, &kb)), Ok(None));
        // Channel 1 must grow to 8000: 4000 + 4000 + 4000 is over the budget, and
        // that is known before anything is allocated.
        assert_eq!(r.push(chunk(1, false, MsgKind::Plain, &kb)), Ok(None));
        assert_eq!(
            r.push(chunk(1, false, MsgKind::Plain, &[1u8; 3000])),
            Err(DisconnectReason::ReassemblyBudget {
                size: 12_000,
                max: 10_000
            })
        );
        assert_eq!(r.allocated(), 0, "the connection closes: nothing is kept");
        assert_eq!(r.buffered(), 0);
    }

    #[test]
    fn unknown_channel_and_inconsistent_kind() {
        let mut r = Reassembler::new();
        r.add_channel(1, 50);
        assert_eq!(
            r.push(chunk(9, true, MsgKind::Plain, b"a")),
            Err(DisconnectReason::UnknownChannel(9))
        );
        assert_eq!(r.push(chunk(1, false, MsgKind::Request(1), b"a")), Ok(None));
        assert_eq!(
            r.push(chunk(1, true, MsgKind::Request(2), b"a")),
            Err(DisconnectReason::InconsistentChunks(1))
        );
    }

    proptest! {
        #[test]
        fn any_chunking_gives_back_the_message(msg in proptest::collection::vec(any::<u8>(), 0..2000), cut in 1usize..300) {
            let mut r = Reassembler::new();
            r.add_channel(3, 2000);
            let pieces: Vec<&[u8]> = if msg.is_empty() { vec![&msg[..]] } else { msg.chunks(cut).collect() };
            let n = pieces.len();
            let mut out = None;
            for (i, p) in pieces.into_iter().enumerate() {
                out = r.push(chunk(3, i + 1 == n, MsgKind::Response(7), p)).unwrap();
                prop_assert_eq!(out.is_some(), i + 1 == n);
            }
            let m = out.unwrap();
            prop_assert_eq!(&m.payload[..], &msg[..]);
            prop_assert_eq!(m.kind, MsgKind::Response(7));
        }
    }
}
