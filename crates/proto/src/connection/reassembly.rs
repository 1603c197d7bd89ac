//! Reassembly: chunks back into whole messages, one partial message per channel.
//!
//! The receiving side of chunking. Each channel has a size limit; a message that
//! passes its channel's `max_message_size` is an error as soon as the chunk that
//! crosses the limit arrives, before anything of that chunk is buffered. A message
//! that fits in one chunk (the common case) is handed over without a copy: its payload
//! is the slice of the read buffer the codec produced.
//!
//! A partial message grows its buffer fourfold at a time (a large message is copied
//! once or twice on its way up, not at every doubling), never past its channel's
//! limit nor past what the connection's budget has left; the budget is charged by
//! allocated capacity, so it bounds memory, not just bytes.

use bytes::{Bytes, BytesMut};

use crate::reason::DisconnectReason;
use crate::wire::codec::{Msg, MsgKind};

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

impl Message {
    /// What this message costs in flow-control credit (see
    /// [`flow::message_cost`](super::flow::message_cost)).
    #[must_use]
    pub fn cost(&self) -> u64 {
        super::flow::message_cost(self.payload.len())
    }
}

#[derive(Debug)]
struct Partial {
    kind: MsgKind,
    buf: BytesMut,
}

#[derive(Debug)]
struct Slot {
    limit: usize,
    partial: Option<Partial>,
}

/// Per-channel reassembly of chunks into messages, within a budget for all the
/// partial messages of the connection together.
#[derive(Debug)]
pub struct Reassembler {
    index: [u8; 256],
    slots: Vec<Slot>,
    /// Most bytes allocated for partial messages at once (all channels).
    budget: usize,
    /// Bytes allocated for partial messages now (their buffers' capacities).
    allocated: usize,
}

const NONE: u8 = u8::MAX;

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
            index: [NONE; 256],
            slots: Vec::new(),
            budget,
            allocated: 0,
        }
    }

    /// Bytes allocated for partial messages now.
    #[must_use]
    pub fn allocated(&self) -> usize {
        self.allocated
    }

    /// Bytes the budget has left.
    #[must_use]
    pub fn headroom(&self) -> usize {
        self.budget.saturating_sub(self.allocated)
    }

    fn slot(&self, channel: u8) -> Option<&Slot> {
        self.slots
            .get(usize::from(self.index[usize::from(channel)]))
    }

    /// Accepts messages on `channel` up to `max_message_size` bytes (at most 255
    /// channels; further ones are ignored).
    pub fn add_channel(&mut self, channel: u8, max_message_size: usize) {
        let i = self.index[usize::from(channel)];
        if let Some(slot) = self.slots.get_mut(usize::from(i)) {
            slot.limit = max_message_size;
            return;
        }
        let Ok(pos) = u8::try_from(self.slots.len()) else {
            return;
        };
        if pos == NONE {
            return;
        }
        self.index[usize::from(channel)] = pos;
        self.slots.push(Slot {
            limit: max_message_size,
            partial: None,
        });
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

    /// Bytes of the partial message on `channel` (0 when none).
    #[must_use]
    pub fn partial_len(&self, channel: u8) -> usize {
        self.slot(channel)
            .and_then(|s| s.partial.as_ref())
            .map_or(0, |p| p.buf.len())
    }

    /// Takes one chunk. Returns the message when this chunk completes one.
    ///
    /// Errors (the caller closes the peer with the returned reason):
    /// [`DisconnectReason::UnknownChannel`], [`DisconnectReason::MessageTooLarge`],
    /// [`DisconnectReason::InconsistentChunks`] (a chunk's kind differs from the first
    /// chunk of its message), [`DisconnectReason::ReassemblyBudget`] (the bytes of the
    /// connection's partial messages would not fit its budget; checked before anything
    /// is allocated).
    pub fn push(&mut self, chunk: Msg) -> Result<Option<Message>, DisconnectReason> {
        let result = self.push_inner(chunk);
        if result.is_err() {
            // The connection is closed on any error: forget what it had buffered.
            self.clear();
        }
        result
    }

    /// Drops every partial message.
    pub fn clear(&mut self) {
        for slot in &mut self.slots {
            slot.partial = None;
        }
        self.allocated = 0;
    }

    fn push_inner(&mut self, chunk: Msg) -> Result<Option<Message>, DisconnectReason> {
        let channel = chunk.channel;
        let i = usize::from(self.index[usize::from(channel)]);
        let headroom = self.headroom();
        let slot = self
            .slots
            .get_mut(i)
            .ok_or(DisconnectReason::UnknownChannel(channel))?;
        let max = slot.limit;
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
        if size > capacity {
            // Room for this chunk, allocated (and charged) before copying: fourfold
            // the bytes so far (or four chunks for a first chunk), never past the
            // channel's limit nor the budget's headroom, and never below `size`.
            let grow_to = if have == 0 {
                chunk.payload.len().saturating_mul(4)
            } else {
                have.saturating_mul(4)
            };
            let most = capacity.saturating_add(headroom);
            if size > most {
                let total = self.allocated - capacity + size;
                return Err(DisconnectReason::ReassemblyBudget {
                    size: total,
                    max: self.budget,
                });
            }
            let target = grow_to.clamp(size, max).min(most);
            let partial = slot.partial.get_or_insert_with(|| Partial {
                kind: chunk.kind,
                buf: BytesMut::new(),
            });
            // A fresh exact allocation: `reserve` may double past what was asked.
            let mut grown = BytesMut::with_capacity(target);
            grown.extend_from_slice(&partial.buf);
            partial.buf = grown;
            self.allocated = self.allocated - capacity + target;
        }
        let slot = self
            .slots
            .get_mut(i)
            .ok_or(DisconnectReason::UnknownChannel(channel))?;
        let partial = slot.partial.get_or_insert_with(|| Partial {
            kind: chunk.kind,
            buf: BytesMut::new(),
        });
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
        assert!(r.allocated() <= 5000);
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
        // Channel 1 holds 2000 bytes in 4000 of capacity; growing fourfold would pass
        // the budget, so it grows only as far as the budget allows...
        assert_eq!(r.push(chunk(1, false, MsgKind::Plain, &kb)), Ok(None));
        assert_eq!(
            r.push(chunk(1, false, MsgKind::Plain, &[1u8; 3000])),
            Ok(None)
        );
        assert_eq!(r.allocated(), 10_000);
        // ...and fails only when the bytes themselves do not fit, before allocating.
        assert_eq!(
            r.push(chunk(1, false, MsgKind::Plain, &[1u8; 1500])),
            Err(DisconnectReason::ReassemblyBudget {
                size: 10_500,
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
