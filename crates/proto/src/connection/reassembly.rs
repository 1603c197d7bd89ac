//! Reassembly: chunks back into whole messages, one partial message per channel.
//!
//! The receiving side of chunking. Each channel has a size limit; a message that
//! passes its channel's `max_message_size` is an error as soon as the chunk that
//! crosses the limit arrives, before anything of that chunk is buffered. A message
//! that fits in one chunk (the common case) is handed over without a copy: its payload
//! is the slice of the read buffer the codec produced.
//!
//! The first chunk of a message of several declares the whole message's size
//! (`total`), which is checked against the channel's limit before anything is
//! allocated; the buffer is then allocated once, exactly, and charged to the
//! connection's budget. A chunk that arrived whole in the read buffer is copied in
//! once; the payload of a chunk still arriving goes straight into the buffer, which
//! the core [lends](Reassembler::lend) to the runtime for the read and takes
//! [back](Reassembler::give_back) with the same checks (see
//! [`PeerCore::take_read_buffer`](super::PeerCore::take_read_buffer)). Chunks that do
//! not add up to the declared size (too many bytes, too few at the end, a second
//! `total`) are [`DisconnectReason::InconsistentChunks`].

use bytes::{Bytes, BytesMut};

use super::recycle::BufferPool;

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
    /// The declared size.
    total: usize,
    /// What it counts against the budget: its buffer's capacity.
    charged: usize,
    buf: BytesMut,
    /// While the buffer is lent out for a read straight into it
    /// ([`lend`](Reassembler::lend)): its length when it left.
    lent: Option<usize>,
}

impl Partial {
    fn len(&self) -> usize {
        self.lent.unwrap_or(self.buf.len())
    }
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
    /// Where buffers of large messages come from and go back to.
    pool: BufferPool,
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
            pool: BufferPool::default(),
        }
    }

    /// Takes the buffers of messages of several chunks from `pool`, and freezes them
    /// so that they go back to it once dropped.
    #[must_use]
    pub fn recycling(mut self, pool: BufferPool) -> Self {
        self.pool = pool;
        self
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
            .map(Partial::len)
            .sum()
    }

    /// Bytes of the partial message on `channel` (0 when none).
    #[must_use]
    pub fn partial_len(&self, channel: u8) -> usize {
        self.slot(channel)
            .and_then(|s| s.partial.as_ref())
            .map_or(0, Partial::len)
    }

    /// The partial message on `channel`: bytes held and declared size (0 and 0 when
    /// there is none).
    #[must_use]
    pub fn partial_sizes(&self, channel: u8) -> (usize, usize) {
        self.slot(channel)
            .and_then(|s| s.partial.as_ref())
            .map_or((0, 0), |p| (p.len(), p.total))
    }

    /// Checks whole messages of these sizes arriving on `channel` (a `Batch`): none
    /// may come while a message of several chunks is being put together there, and
    /// each must be within the channel's limit.
    pub fn check_whole(
        &self,
        channel: u8,
        sizes: impl IntoIterator<Item = usize>,
    ) -> Result<(), DisconnectReason> {
        let slot = self
            .slot(channel)
            .ok_or(DisconnectReason::UnknownChannel(channel))?;
        if slot.partial.is_some() {
            return Err(DisconnectReason::InconsistentChunks(channel));
        }
        let max = slot.limit;
        match sizes.into_iter().find(|&size| size > max) {
            Some(size) => Err(DisconnectReason::MessageTooLarge { channel, size, max }),
            None => Ok(()),
        }
    }

    /// Room left in the partial message on `channel` (its declared size minus what it
    /// holds), or `None` when the channel has no partial message.
    #[must_use]
    pub fn partial_room(&self, channel: u8) -> Option<(MsgKind, usize)> {
        let p = self.slot(channel)?.partial.as_ref()?;
        Some((p.kind, p.total.saturating_sub(p.len())))
    }

    /// Lends out the buffer of the partial message on `channel`, so that the next
    /// bytes of that message can be read into it without a copy. Until it comes back
    /// through [`give_back`](Self::give_back), the message keeps its length for
    /// accounting. `None` when there is no partial message or it is lent already.
    pub fn lend(&mut self, channel: u8) -> Option<BytesMut> {
        let i = usize::from(self.index[usize::from(channel)]);
        let p = self.slots.get_mut(i)?.partial.as_mut()?;
        if p.lent.is_some() {
            return None;
        }
        p.lent = Some(p.buf.len());
        Some(std::mem::take(&mut p.buf))
    }

    /// Takes back a buffer from [`lend`](Self::lend), with bytes appended to it; with
    /// `eof`, they end the message. The same checks as [`push`](Self::push): the
    /// message may not outgrow its declared size, and must be exactly that size at
    /// its end. Returns the message when complete. A buffer that comes back after
    /// the connection dropped its partial messages is dropped.
    pub fn give_back(
        &mut self,
        channel: u8,
        buf: BytesMut,
        eof: bool,
    ) -> Result<Option<Message>, DisconnectReason> {
        let i = usize::from(self.index[usize::from(channel)]);
        let Some(slot) = self.slots.get_mut(i) else {
            return Ok(None);
        };
        let Some(partial) = slot.partial.as_mut().filter(|p| p.lent.is_some()) else {
            return Ok(None);
        };
        partial.lent = None;
        partial.buf = buf;
        let size = partial.buf.len();
        if size > partial.total || (eof && size != partial.total) {
            self.clear();
            return Err(DisconnectReason::InconsistentChunks(channel));
        }
        if !eof {
            return Ok(None);
        }
        Ok(self.complete(channel))
    }

    /// Hands over the partial message of `channel` as complete.
    fn complete(&mut self, channel: u8) -> Option<Message> {
        let i = usize::from(self.index[usize::from(channel)]);
        let done = self.slots.get_mut(i)?.partial.take()?;
        self.allocated = self.allocated.saturating_sub(done.charged);
        Some(Message {
            channel,
            kind: done.kind,
            payload: self.pool.freeze(done.buf),
        })
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

    /// Drops the partial message of `channel`, if any (its service went away), and
    /// what its buffer was charged to the budget.
    pub fn discard(&mut self, channel: u8) {
        let i = usize::from(self.index[usize::from(channel)]);
        if let Some(done) = self.slots.get_mut(i).and_then(|s| s.partial.take()) {
            self.allocated = self.allocated.saturating_sub(done.charged);
        }
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
        let Some(partial) = &mut slot.partial else {
            if chunk.eof {
                // A whole message in one chunk: handed over as it is, nothing buffered.
                if chunk.payload.len() > max {
                    return Err(DisconnectReason::MessageTooLarge {
                        channel,
                        size: chunk.payload.len(),
                        max,
                    });
                }
                return Ok(Some(Message {
                    channel,
                    kind: chunk.kind,
                    payload: chunk.payload,
                }));
            }
            // The first of several chunks: it must say how large the message is.
            let Some(total) = chunk.total else {
                return Err(DisconnectReason::InconsistentChunks(channel));
            };
            let total = total as usize;
            if total > max {
                return Err(DisconnectReason::MessageTooLarge {
                    channel,
                    size: total,
                    max,
                });
            }
            if total > headroom {
                return Err(DisconnectReason::ReassemblyBudget {
                    size: self.allocated.saturating_add(total),
                    max: self.budget,
                });
            }
            // A kept buffer may be a little larger than asked (see `recycle`), never
            // beyond the budget.
            let mut buf = self.pool.take(total, headroom);
            buf.extend_from_slice(&chunk.payload);
            let charged = buf.capacity().max(total);
            slot.partial = Some(Partial {
                kind: chunk.kind,
                total,
                charged,
                buf,
                lent: None,
            });
            self.allocated += charged;
            return Ok(None);
        };
        let size = partial.buf.len().saturating_add(chunk.payload.len());
        if partial.kind != chunk.kind
            || partial.lent.is_some()
            || chunk.total.is_some()
            || size > partial.total
            || (chunk.eof && size != partial.total)
        {
            return Err(DisconnectReason::InconsistentChunks(channel));
        }
        partial.buf.extend_from_slice(&chunk.payload);
        if !chunk.eof {
            return Ok(None);
        }
        Ok(self.complete(channel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn chunk(channel: u8, eof: bool, kind: MsgKind, total: Option<u32>, p: &[u8]) -> Msg {
        Msg {
            channel,
            eof,
            kind,
            total,
            payload: Bytes::copy_from_slice(p),
        }
    }

    fn first(channel: u8, total: u32, p: &[u8]) -> Msg {
        chunk(channel, false, MsgKind::Plain, Some(total), p)
    }

    fn next(channel: u8, eof: bool, p: &[u8]) -> Msg {
        chunk(channel, eof, MsgKind::Plain, None, p)
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
                total: None,
                payload,
            })
            .unwrap()
            .unwrap();
        assert_eq!(m.payload.as_ptr(), ptr);
        assert_eq!(r.allocated(), 0);
    }

    #[test]
    fn a_large_message_buffer_is_used_again_once_its_service_drops_it() {
        let pool = BufferPool::new(4 << 20);
        let mut r = Reassembler::with_budget(4 << 20).recycling(pool.clone());
        r.add_channel(1, 1 << 20);
        let half = vec![3u8; 512 << 10];
        let total = 1 << 20;
        let message = |r: &mut Reassembler| {
            assert_eq!(r.push(first(1, total, &half)), Ok(None));
            r.push(next(1, true, &half)).unwrap().unwrap()
        };
        let m = message(&mut r);
        assert_eq!(m.payload.len(), 1 << 20);
        assert!(m.payload.iter().all(|&b| b == 3));
        let addr = m.payload.as_ptr();
        assert_eq!(pool.held_buffers(), 0);
        // The service drops it (on its own thread, say): the buffer is kept...
        std::thread::spawn(move || drop(m)).join().expect("thread");
        assert_eq!(pool.held_bytes(), 1 << 20);
        // ...and the next message of its size is put together in it.
        let again = message(&mut r);
        assert_eq!(again.payload.as_ptr(), addr);
        assert_eq!(r.allocated(), 0);
        assert_eq!(pool.held_buffers(), 0);
    }

    #[test]
    fn chunks_of_channels_interleave_into_exact_buffers() {
        let mut r = Reassembler::new();
        r.add_channel(1, 100);
        r.add_channel(2, 100);
        assert_eq!(r.push(first(1, 3, b"ab")), Ok(None));
        assert_eq!(
            r.push(chunk(2, false, MsgKind::Request(5), Some(3), b"xy")),
            Ok(None)
        );
        assert_eq!(
            (r.buffered(), r.allocated()),
            (4, 6),
            "exactly the declared sizes"
        );
        let m1 = r.push(next(1, true, b"c")).unwrap().unwrap();
        assert_eq!(&m1.payload[..], b"abc");
        let m2 = r
            .push(chunk(2, true, MsgKind::Request(5), None, b"z"))
            .unwrap()
            .unwrap();
        assert_eq!(
            (m2.kind, &m2.payload[..]),
            (MsgKind::Request(5), &b"xyz"[..])
        );
        assert_eq!((r.buffered(), r.allocated()), (0, 0));
    }

    #[test]
    fn too_large_is_known_from_the_declared_size_before_allocating() {
        let mut r = Reassembler::new();
        r.add_channel(1, 5);
        assert_eq!(
            r.push(first(1, 6, b"ab")),
            Err(DisconnectReason::MessageTooLarge {
                channel: 1,
                size: 6,
                max: 5
            })
        );
        assert_eq!(r.allocated(), 0);
        assert!(matches!(
            r.push(next(1, true, b"123456")),
            Err(DisconnectReason::MessageTooLarge { size: 6, .. })
        ));
        assert_eq!(
            r.push(next(1, true, b"12345"))
                .unwrap()
                .unwrap()
                .payload
                .len(),
            5
        );
    }

    #[test]
    fn partial_messages_of_all_channels_share_one_budget() {
        let mut r = Reassembler::with_budget(10_000);
        r.add_channel(1, 8000);
        r.add_channel(2, 8000);
        assert_eq!(r.push(first(1, 6000, &[1; 1000])), Ok(None));
        assert_eq!(
            r.push(first(2, 5000, &[1; 1000])),
            Err(DisconnectReason::ReassemblyBudget {
                size: 11_000,
                max: 10_000
            })
        );
        assert_eq!(r.allocated(), 0, "the connection closes: nothing is kept");
        let mut r = Reassembler::with_budget(10_000);
        r.add_channel(1, 8000);
        r.add_channel(2, 8000);
        assert_eq!(r.push(first(1, 6000, &[1; 1000])), Ok(None));
        assert_eq!(
            r.push(next(1, true, &[1; 5000]))
                .unwrap()
                .unwrap()
                .payload
                .len(),
            6000
        );
        assert_eq!(
            r.push(first(2, 8000, &[1; 1000])),
            Ok(None),
            "the budget came back"
        );
    }

    #[test]
    fn chunks_that_do_not_add_up_are_inconsistent() {
        let fresh = || {
            let mut r = Reassembler::new();
            r.add_channel(1, 50);
            r
        };
        let bad = Err(DisconnectReason::InconsistentChunks(1));
        assert_eq!(fresh().push(next(1, false, b"a")), bad, "no declared size");
        let mut r = fresh();
        r.push(first(1, 4, b"ab")).unwrap();
        assert_eq!(r.push(first(1, 4, b"cd")), bad, "a second size");
        let mut r = fresh();
        r.push(first(1, 4, b"ab")).unwrap();
        assert_eq!(r.push(next(1, false, b"cde")), bad, "more than declared");
        let mut r = fresh();
        r.push(first(1, 4, b"ab")).unwrap();
        assert_eq!(r.push(next(1, true, b"c")), bad, "less than declared");
        let mut r = fresh();
        r.push(chunk(1, false, MsgKind::Request(1), Some(4), b"ab"))
            .unwrap();
        assert_eq!(
            r.push(chunk(1, true, MsgKind::Request(2), None, b"cd")),
            bad,
            "kind"
        );
        assert_eq!(
            fresh().push(next(9, true, b"a")),
            Err(DisconnectReason::UnknownChannel(9))
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
                let total = (i == 0 && n > 1).then_some(msg.len() as u32);
                out = r.push(chunk(3, i + 1 == n, MsgKind::Response(7), total, p)).unwrap();
                prop_assert_eq!(out.is_some(), i + 1 == n);
            }
            let m = out.unwrap();
            prop_assert_eq!(&m.payload[..], &msg[..]);
            prop_assert_eq!(m.kind, MsgKind::Response(7));
            prop_assert_eq!(r.allocated(), 0);
        }
    }
}
