//! The send-side scheduler: per-channel bounded queues, send credit, chunking, and
//! the priority-weighted choice of the next chunk.
//!
//! Each channel queues whole messages (bounded in messages and in bytes). The writer
//! asks for one chunk at a time with [`Scheduler::poll_chunk`]; messages larger than
//! `max_packet_payload` are cut into chunks (zero-copy slices), and chunks of
//! different channels interleave.
//!
//! **Credit.** A flow-controlled channel sends only within the credit its receiver
//! granted (see [`flow`](super::flow) for how credit is counted: a chunk costs its
//! payload bytes, and the last chunk of a message [`MESSAGE_COST`] more). Credit
//! never cuts a chunk short: a message that fits in one packet goes whole (so its
//! receiver gets it as one slice of its read buffer, without copying), a larger one in
//! full-size chunks and its remainder; a chunk waits until the credit covers it. The
//! receiver's window always holds one full packet and its message cost (the config
//! checks it), so the credit always comes. A channel without credit waits, and the
//! others go on. Channel 0 (control) is added with
//! [`Scheduler::add_control_channel`] and needs no credit.
//!
//! **Choice.** The next chunk comes from the channel with the lowest
//! `recent_sent / priority` among channels that can send (ties: higher priority, then
//! lower id). Counters are halved together whenever one passes a threshold (decay that
//! keeps numbers bounded and proportions intact). A channel that becomes able to send
//! again (new data, or new credit) **rejoins at the current virtual time**: its counter
//! is raised to the lowest active ratio times its priority, so it gets no burst
//! credit for having waited and no penalty for its past. That is what bounds
//! head-of-line blocking: a message on a newly busy channel waits for at most one
//! chunk per other busy channel.
//!
//! **Batches.** When the chosen channel's next messages are small (below
//! [`BATCHED_BELOW`] bytes each) and plain, [`Scheduler::poll_next`] hands out as many
//! of them as fit one packet's payload and the credit, to go out as one `Batch`
//! packet ([`codec`](crate::wire::codec)): one header, one choice and one credit
//! check for the lot instead of per message. A batch counts like one chunk in the
//! choice above (its payload is at most a full chunk's), so it holds an urgent message
//! back no longer than a chunk does. A lone small message still goes as a `Msg`.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};

use super::flow::MESSAGE_COST;
use crate::config::ChannelConfig;
use crate::wire::codec::{
    put_batch_entry, put_batch_header, put_msg_header, MsgKind, BATCH_ENTRY_HEADER_LEN,
    BATCH_ENTRY_MAX, BATCH_HEADER_LEN,
};

/// Plain messages shorter than this go out in `Batch` packets when several wait on
/// their channel (see the [module docs](self)).
pub const BATCHED_BELOW: usize = 4 << 10;
const _: () = assert!(BATCHED_BELOW <= BATCH_ENTRY_MAX + 1);

/// Counters are halved when one passes this many bytes.
const DECAY_THRESHOLD: f64 = (64u64 << 20) as f64;

/// Why a message was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PushError {
    /// The channel's queue is at its message or byte budget; retry when it drains.
    #[error("send queue full")]
    Full,
    /// No such channel was added.
    #[error("unknown channel {0:#04x}")]
    UnknownChannel(u8),
    /// The remote granted no credit for this channel at the handshake: it does not
    /// receive on it, and the message could never be sent.
    #[error("the remote does not accept channel {0:#04x}")]
    NotAccepted(u8),
    /// The channel's service is not up on this connection: the remote does not run
    /// it (or not yet, or no longer). Nothing reaches the wire.
    #[error("the service of channel {0:#04x} is not up on this connection")]
    ServiceNotUp(u8),
    /// A response to a request our service does not hold (answered already, or
    /// never received).
    #[error("no request {0} to answer")]
    NoSuchRequest(u32),
    /// The message is above the channel's `max_message_size`.
    #[error("message of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Size of the message.
        size: usize,
        /// The channel's limit.
        max: usize,
    },
    /// The connection is closing or closed.
    #[error("the connection is closed")]
    Closed,
}

/// One chunk to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Channel.
    pub channel: u8,
    /// Last chunk of its message.
    pub eof: bool,
    /// Kind of the message (carried on every chunk).
    pub kind: MsgKind,
    /// The whole message's length, on the first chunk of a message of several.
    pub total: Option<u32>,
    /// The bytes (a slice of the queued message).
    pub payload: Bytes,
}

impl Chunk {
    /// Length of the header on the wire.
    #[must_use]
    pub fn header_len(&self) -> usize {
        self.kind.header_len() + if self.total.is_some() { 4 } else { 0 }
    }

    /// Header plus payload length on the wire.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        self.header_len() + self.payload.len()
    }

    /// Writes the header only (the payload follows in a vectored write).
    pub fn encode_header(&self, dst: &mut BytesMut) {
        put_msg_header(
            dst,
            self.channel,
            self.eof,
            self.kind,
            self.total,
            self.payload.len(),
        );
    }

    /// Appends the packet (header and a copy of the payload) to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        self.encode_header(dst);
        dst.extend_from_slice(&self.payload);
    }
}

/// What [`Scheduler::poll_next`] hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// One chunk of one message.
    Chunk(Chunk),
    /// Whole small plain messages of `channel`, written as one `Batch` packet to the
    /// end of the caller's buffer.
    Batch {
        /// The channel.
        channel: u8,
        /// How many messages.
        messages: usize,
        /// Payload bytes over all of them.
        bytes: usize,
    },
}

/// Counters of one channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChannelStats {
    /// Messages waiting (including one partly sent).
    pub queued_messages: usize,
    /// Payload bytes waiting.
    pub queued_bytes: usize,
    /// Messages fully handed out.
    pub sent_messages: u64,
    /// Payload bytes handed out.
    pub sent_bytes: u64,
    /// Credit left to send (`u64::MAX` on channel 0, which needs none).
    pub credit: u64,
}

#[derive(Debug)]
struct Channel {
    id: u8,
    cfg: ChannelConfig,
    queue: VecDeque<(MsgKind, Bytes)>,
    /// Bytes of the front message already handed out.
    offset: usize,
    queued_bytes: usize,
    recent: f64,
    /// Credit left; ignored on the control channel.
    credit: u64,
    /// No credit needed (channel 0).
    exempt: bool,
    /// The remote granted credit at least once (it receives on this channel).
    accepted: bool,
    /// A push was refused as `Full` since the queue last had room.
    full: bool,
    stats: ChannelStats,
}

impl Channel {
    fn ratio(&self) -> f64 {
        self.recent / f64::from(self.cfg.priority.max(1))
    }

    /// Length and EOF of the next chunk, if the credit allows one now.
    fn next_chunk(&self, max_chunk: usize) -> Option<(usize, bool)> {
        let (_, msg) = self.queue.front()?;
        let remaining = msg.len() - self.offset;
        let whole = remaining.min(max_chunk);
        if self.exempt {
            return Some((whole, whole == remaining));
        }
        let credit = usize::try_from(self.credit).unwrap_or(usize::MAX);
        let eof = whole == remaining;
        let cost = whole.saturating_add(if eof { MESSAGE_COST as usize } else { 0 });
        (credit >= cost).then_some((whole, eof))
    }

    fn can_send(&self, max_chunk: usize) -> bool {
        self.next_chunk(max_chunk).is_some()
    }

    /// Whether one more message of `len` bytes fits its limit and the queue's
    /// budgets (an empty queue takes any message within the limit).
    fn admits(&self, len: usize) -> Result<(), PushError> {
        if len > self.cfg.max_message_size {
            return Err(PushError::TooLarge {
                size: len,
                max: self.cfg.max_message_size,
            });
        }
        if !self.queue.is_empty()
            && (self.queue.len() + 1 > self.cfg.send_queue_messages
                || self.queued_bytes + len > self.cfg.send_queue_bytes)
        {
            return Err(PushError::Full);
        }
        Ok(())
    }

    /// Whether the queue drained to its low-water mark (half its budget): a sender
    /// that found it full is told of room only then, so it wakes to queue a batch
    /// rather than one message at a time.
    fn drained(&self) -> bool {
        self.queue.len() <= self.cfg.send_queue_messages / 2
            && self.queued_bytes <= self.cfg.send_queue_bytes / 2
    }
}

/// Per-channel queues and the choice of the next chunk (see the [module docs](self)).
#[derive(Debug)]
pub struct Scheduler {
    max_chunk: usize,
    channels: Vec<Channel>,
    index: [u8; 256],
    queued_bytes: usize,
    /// Channels whose queue went from full to having room, not yet reported.
    room: Vec<u8>,
}

const NONE: u8 = u8::MAX;

impl Scheduler {
    /// A scheduler that cuts chunks at `max_packet_payload` bytes (at least 1).
    #[must_use]
    pub fn new(max_packet_payload: usize) -> Self {
        Scheduler {
            max_chunk: max_packet_payload.max(1),
            channels: Vec::new(),
            index: [NONE; 256],
            queued_bytes: 0,
            room: Vec::new(),
        }
    }

    fn slot(&self, id: u8) -> Option<usize> {
        let i = self.index[usize::from(id)];
        (i != NONE).then_some(usize::from(i))
    }

    /// Adds a flow-controlled channel (no credit until [`add_credit`](Self::add_credit)),
    /// or replaces the budgets and priority of an existing one. (At most 255
    /// channels; further ones are ignored.)
    pub fn add_channel(&mut self, id: u8, cfg: &ChannelConfig) {
        self.insert(id, cfg, false);
    }

    /// Adds the control channel: no credit needed, accepted by every remote.
    pub fn add_control_channel(&mut self, id: u8, cfg: &ChannelConfig) {
        self.insert(id, cfg, true);
    }

    fn insert(&mut self, id: u8, cfg: &ChannelConfig, exempt: bool) {
        if let Some(i) = self.slot(id) {
            if let Some(c) = self.channels.get_mut(i) {
                c.cfg = *cfg;
            }
            return;
        }
        let Ok(pos) = u8::try_from(self.channels.len()) else {
            return;
        };
        if pos == NONE {
            return;
        }
        self.index[usize::from(id)] = pos;
        self.channels.push(Channel {
            id,
            cfg: *cfg,
            queue: VecDeque::new(),
            offset: 0,
            queued_bytes: 0,
            recent: 0.0,
            credit: 0,
            exempt,
            accepted: exempt,
            full: false,
            stats: ChannelStats::default(),
        });
    }

    /// Whether `id` was added.
    #[must_use]
    pub fn has_channel(&self, id: u8) -> bool {
        self.slot(id).is_some()
    }

    /// The lowest ratio among channels that can send now, but `except`.
    fn min_active_ratio(&self, except: usize) -> Option<f64> {
        self.channels
            .iter()
            .enumerate()
            .filter(|(i, c)| *i != except && c.can_send(self.max_chunk))
            .map(|(_, c)| c.ratio())
            .min_by(f64::total_cmp)
    }

    /// Raises channel `i`'s counter to the current virtual time (see module docs).
    fn rejoin(&mut self, i: usize) {
        if let Some(min_ratio) = self.min_active_ratio(i) {
            if let Some(c) = self.channels.get_mut(i) {
                c.recent = c.recent.max(min_ratio * f64::from(c.cfg.priority.max(1)));
            }
        }
    }

    /// The remote granted `bytes` more credit on `id` (ignored for unknown channels:
    /// the remote may receive on channels we never send on).
    pub fn add_credit(&mut self, id: u8, bytes: u64) {
        let Some(i) = self.slot(id) else {
            return;
        };
        let max_chunk = self.max_chunk;
        let Some(c) = self.channels.get_mut(i) else {
            return;
        };
        let could = c.can_send(max_chunk);
        c.credit = c.credit.saturating_add(bytes);
        c.accepted = true;
        c.stats.credit = c.credit;
        if !could && c.can_send(max_chunk) {
            self.rejoin(i);
        }
    }

    /// The remote asks up to `bytes` of unused credit back on `id`: gives back what
    /// is left of it, up to that, and returns how much.
    pub fn reclaim(&mut self, id: u8, bytes: u64) -> u64 {
        let Some(c) = self.slot(id).and_then(|i| self.channels.get_mut(i)) else {
            return 0;
        };
        if c.exempt {
            return 0;
        }
        let given = c.credit.min(bytes);
        c.credit -= given;
        c.stats.credit = c.credit;
        given
    }

    /// Whether a message of `len` bytes would be accepted on `channel` now.
    pub fn check(&self, channel: u8, len: usize) -> Result<(), PushError> {
        let c = self
            .slot(channel)
            .and_then(|i| self.channels.get(i))
            .ok_or(PushError::UnknownChannel(channel))?;
        if !c.accepted {
            return Err(PushError::NotAccepted(channel));
        }
        c.admits(len)
    }

    /// Notes that a sender found `channel` full and waits: the next drain that leaves
    /// room reports it through [`poll_room`](Self::poll_room).
    pub fn mark_full(&mut self, channel: u8) {
        if let Some(c) = self.slot(channel).and_then(|i| self.channels.get_mut(i)) {
            c.full = true;
        }
    }

    /// Queues a whole message on `channel`, or says why not (nothing is queued then).
    pub fn push(&mut self, channel: u8, kind: MsgKind, payload: Bytes) -> Result<(), PushError> {
        self.push_inner(channel, kind, payload, true)
    }

    /// Queues an answer to a request even when the queue is at its budget: answers
    /// are bounded by the requests the remote may have in hand, and one must never be
    /// lost to a full queue.
    pub fn push_answer(
        &mut self,
        channel: u8,
        kind: MsgKind,
        payload: Bytes,
    ) -> Result<(), PushError> {
        self.push_inner(channel, kind, payload, false)
    }

    fn push_inner(
        &mut self,
        channel: u8,
        kind: MsgKind,
        payload: Bytes,
        budget: bool,
    ) -> Result<(), PushError> {
        match self.check(channel, payload.len()) {
            Err(PushError::Full) if !budget => {}
            Err(e) => {
                if e == PushError::Full {
                    self.mark_full(channel);
                }
                return Err(e);
            }
            Ok(()) => {}
        }
        let i = self
            .slot(channel)
            .ok_or(PushError::UnknownChannel(channel))?;
        let len = payload.len();
        let Some(c) = self.channels.get_mut(i) else {
            return Err(PushError::UnknownChannel(channel));
        };
        let was_empty = c.queue.is_empty();
        c.queue.push_back((kind, payload));
        c.queued_bytes += len;
        c.stats.queued_messages = c.queue.len();
        c.stats.queued_bytes = c.queued_bytes;
        self.queued_bytes += len;
        self.queued(i, was_empty);
        Ok(())
    }

    /// Channel `i` got messages: when they are the first in its queue and it can
    /// send them, it rejoins the choice (behind a message already queued, whether it
    /// can send does not change).
    fn queued(&mut self, i: usize, was_empty: bool) {
        let max_chunk = self.max_chunk;
        if was_empty && self.channels.get(i).is_some_and(|c| c.can_send(max_chunk)) {
            self.rejoin(i);
        }
    }

    /// Queues plain messages from the front of `run` on `channel`, in order, while
    /// they fit (as [`push`](Self::push) would, one by one, but looking the channel up
    /// once); returns how many, and why it stopped before the end of the run.
    pub fn push_run(
        &mut self,
        channel: u8,
        run: &mut VecDeque<Bytes>,
    ) -> (usize, Option<PushError>) {
        let Some(i) = self.slot(channel) else {
            return (0, Some(PushError::UnknownChannel(channel)));
        };
        let Some(c) = self.channels.get_mut(i) else {
            return (0, Some(PushError::UnknownChannel(channel)));
        };
        if !c.accepted {
            return (0, Some(PushError::NotAccepted(channel)));
        }
        let was_empty = c.queue.is_empty();
        let (mut count, mut bytes, mut stopped) = (0, 0, None);
        while let Some(len) = run.front().map(Bytes::len) {
            if let Err(e) = c.admits(len) {
                c.full |= e == PushError::Full;
                stopped = Some(e);
                break;
            }
            let Some(payload) = run.pop_front() else {
                break;
            };
            c.queue.push_back((MsgKind::Plain, payload));
            count += 1;
            bytes += len;
        }
        c.queued_bytes += bytes;
        c.stats.queued_messages = c.queue.len();
        c.stats.queued_bytes = c.queued_bytes;
        self.queued_bytes += bytes;
        self.queued(i, was_empty);
        (count, stopped)
    }

    /// Whether every queue is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.channels.iter().all(|c| c.queue.is_empty())
    }

    /// Whether some channel has a chunk it may send now.
    #[must_use]
    pub fn can_send(&self) -> bool {
        self.channels.iter().any(|c| c.can_send(self.max_chunk))
    }

    /// Payload bytes still queued, over all channels.
    #[must_use]
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Stops sending on `id`: its queue is dropped and its credit forgotten, until it
    /// is added and granted credit again (the service on it went away). Waiting
    /// senders are the caller's to wake.
    pub fn reset_channel(&mut self, id: u8) {
        let Some(c) = self.slot(id).and_then(|i| self.channels.get_mut(i)) else {
            return;
        };
        if c.exempt {
            return;
        }
        self.queued_bytes = self.queued_bytes.saturating_sub(c.queued_bytes);
        c.queue.clear();
        c.offset = 0;
        c.queued_bytes = 0;
        c.credit = 0;
        c.accepted = false;
        c.stats.queued_messages = 0;
        c.stats.queued_bytes = 0;
        c.stats.credit = 0;
        c.full = false;
        self.room.retain(|r| *r != id);
    }

    /// Drops every queued message (a connection closing without flushing).
    pub fn clear(&mut self) {
        for c in &mut self.channels {
            c.queue.clear();
            c.offset = 0;
            c.queued_bytes = 0;
            c.stats.queued_messages = 0;
            c.stats.queued_bytes = 0;
        }
        self.queued_bytes = 0;
    }

    /// Counters of `channel`.
    #[must_use]
    pub fn stats(&self, channel: u8) -> Option<ChannelStats> {
        self.slot(channel)
            .and_then(|i| self.channels.get(i))
            .map(|c| ChannelStats {
                credit: if c.exempt { u64::MAX } else { c.credit },
                ..c.stats
            })
    }

    /// A channel whose queue had refused a push as full and has drained to half its
    /// budget since (each such change once).
    pub fn poll_room(&mut self) -> Option<u8> {
        self.room.pop()
    }

    /// The next chunk to write, by priority among channels with data and credit;
    /// `None` when no channel can send. Never a batch (see [`poll_next`](Self::poll_next)).
    #[must_use]
    pub fn poll_chunk(&mut self) -> Option<Chunk> {
        let i = self.pick()?;
        self.take_chunk(i)
    }

    /// The next thing to write, by priority among channels with data and credit: a
    /// batch of the chosen channel's next small messages when several wait (written
    /// as a `Batch` packet to the end of `batch`, their bytes copied: each is small),
    /// else one chunk. `None` when no channel can send.
    pub fn poll_next(&mut self, batch: &mut BytesMut) -> Option<Next> {
        let i = self.pick()?;
        if let Some(next) = self.take_batch(i, batch) {
            return Some(next);
        }
        self.take_chunk(i).map(Next::Chunk)
    }

    /// The channel whose turn it is (see the module docs).
    fn pick(&self) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, c) in self.channels.iter().enumerate() {
            if !c.can_send(self.max_chunk) {
                continue;
            }
            best = match best.and_then(|b| self.channels.get(b)) {
                None => Some(i),
                Some(b) => {
                    let (rc, rb) = (c.ratio(), b.ratio());
                    let better = rc < rb
                        || (rc == rb
                            && (c.cfg.priority > b.cfg.priority
                                || (c.cfg.priority == b.cfg.priority && c.id < b.id)));
                    if better {
                        Some(i)
                    } else {
                        best
                    }
                }
            };
        }
        best
    }

    /// Writes the run of small plain messages at the front of channel `i` as a
    /// `Batch` to `out`, as many as one packet and the credit allow, when there are at
    /// least two of them.
    fn take_batch(&mut self, i: usize, out: &mut BytesMut) -> Option<Next> {
        let max_chunk = self.max_chunk;
        let c = self.channels.get_mut(i)?;
        if c.exempt || c.offset != 0 {
            return None;
        }
        let (mut count, mut body, mut cost) = (0usize, 0usize, 0u64);
        for (kind, msg) in &c.queue {
            let entry = BATCH_ENTRY_HEADER_LEN + msg.len();
            let msg_cost = msg.len() as u64 + MESSAGE_COST;
            if *kind != MsgKind::Plain
                || msg.len() >= BATCHED_BELOW
                || body + entry > max_chunk
                || cost + msg_cost > c.credit
            {
                break;
            }
            count += 1;
            body += entry;
            cost += msg_cost;
        }
        if count < 2 {
            return None;
        }
        let channel = c.id;
        out.reserve(BATCH_HEADER_LEN + body);
        put_batch_header(out, channel, body);
        for (_, msg) in c.queue.drain(..count) {
            put_batch_entry(out, &msg);
        }
        let len = body - BATCH_ENTRY_HEADER_LEN * count;
        c.credit -= cost;
        c.stats.credit = c.credit;
        c.stats.sent_messages += count as u64;
        self.account(i, len);
        Some(Next::Batch {
            channel,
            messages: count,
            bytes: len,
        })
    }

    /// Counts `len` payload bytes handed out from channel `i` (its queue already
    /// popped): queue sizes, the choice's counters, room for waiting senders.
    fn account(&mut self, i: usize, len: usize) {
        let Some(c) = self.channels.get_mut(i) else {
            return;
        };
        c.queued_bytes -= len;
        c.stats.queued_bytes = c.queued_bytes;
        c.stats.queued_messages = c.queue.len();
        c.stats.sent_bytes += len as u64;
        c.recent += len.max(1) as f64;
        let decay = c.recent > DECAY_THRESHOLD;
        let channel = c.id;
        if c.full && c.drained() {
            c.full = false;
            self.room.push(channel);
        }
        self.queued_bytes -= len;
        if decay {
            for c in &mut self.channels {
                c.recent /= 2.0;
            }
        }
    }

    /// One chunk of channel `i`'s front message.
    fn take_chunk(&mut self, i: usize) -> Option<Chunk> {
        let max_chunk = self.max_chunk;
        let c = self.channels.get_mut(i)?;
        let (len, eof) = c.next_chunk(max_chunk)?;
        let start = c.offset;
        let (kind, payload, total) = if eof {
            // The message's last chunk: the queued bytes themselves (a whole message
            // goes out without a clone and a drop of its buffer's count).
            let (kind, msg) = c.queue.pop_front()?;
            c.offset = 0;
            c.stats.sent_messages += 1;
            let payload = if start == 0 { msg } else { msg.slice(start..) };
            (kind, payload, None)
        } else {
            let (kind, msg) = c.queue.front()?;
            let end = start + len;
            // A message that does not fit one chunk says its size up front.
            let total = (start == 0).then(|| u32::try_from(msg.len()).unwrap_or(u32::MAX));
            c.offset = end;
            (*kind, msg.slice(start..end), total)
        };
        if !c.exempt {
            let cost = len as u64 + if eof { MESSAGE_COST } else { 0 };
            c.credit = c.credit.saturating_sub(cost);
            c.stats.credit = c.credit;
        }
        let channel = c.id;
        self.account(i, len);
        Some(Chunk {
            channel,
            eof,
            kind,
            total,
            payload,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn cfg(priority: u16) -> ChannelConfig {
        ChannelConfig {
            priority,
            max_message_size: 1 << 24,
            send_queue_messages: 1 << 20,
            send_queue_bytes: 1 << 30,
            recv_capacity: 1,
            recv_window: 64 << 10,
            max_recv_window: 1 << 20,
            requests_in_flight: 1,
            inbound_requests: 1,
            close_on_stall: true,
        }
    }

    fn bytes(n: usize) -> Bytes {
        Bytes::from(vec![0xab; n])
    }

    /// A scheduler whose channels have all the credit they could use, so that these
    /// tests are about queues and priorities.
    struct Unlimited(Scheduler);

    impl Unlimited {
        fn add_channel(&mut self, id: u8, cfg: &ChannelConfig) {
            self.0.add_channel(id, cfg);
            self.0.add_credit(id, u64::MAX);
        }
    }

    impl std::ops::Deref for Unlimited {
        type Target = Scheduler;
        fn deref(&self) -> &Scheduler {
            &self.0
        }
    }

    impl std::ops::DerefMut for Unlimited {
        fn deref_mut(&mut self) -> &mut Scheduler {
            &mut self.0
        }
    }

    fn sched(chunk: usize) -> Unlimited {
        Unlimited(Scheduler::new(chunk))
    }

    /// The next thing out, and the messages of a batch (decoded from what was
    /// written).
    fn next(s: &mut Scheduler) -> (Option<Next>, Vec<Bytes>) {
        let mut out = BytesMut::new();
        let n = s.poll_next(&mut out);
        (n, batch_messages(&mut out))
    }

    fn batch_messages(out: &mut BytesMut) -> Vec<Bytes> {
        use tokio_util::codec::Decoder;
        match crate::wire::codec::PacketCodec::new(1 << 20).decode(out) {
            Ok(Some(crate::wire::codec::Packet::Batch(b))) => b.messages().collect(),
            Ok(None) => Vec::new(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_run_of_small_plain_messages_goes_as_one_batch_within_a_chunk() {
        let mut s = sched(1000);
        s.add_channel(1, &cfg(1));
        // A lone small message is a chunk of its own.
        s.push(1, MsgKind::Plain, bytes(10)).unwrap();
        assert!(
            matches!(next(&mut s), (Some(Next::Chunk(c)), _) if c.eof && c.payload.len() == 10)
        );
        // 30 messages of 98 bytes: 10 fit 1000 bytes with their size prefixes.
        for _ in 0..30 {
            s.push(1, MsgKind::Plain, bytes(98)).unwrap();
        }
        for _ in 0..3 {
            let (n, batch) = next(&mut s);
            assert_eq!(
                n,
                Some(Next::Batch {
                    channel: 1,
                    messages: 10,
                    bytes: 980
                })
            );
            assert_eq!(batch, vec![bytes(98); 10]);
        }
        assert_eq!(next(&mut s).0, None);
        let st = s.stats(1).unwrap();
        assert_eq!(
            (st.sent_messages, st.sent_bytes, st.queued_messages),
            (31, 10 + 30 * 98, 0)
        );
    }

    #[test]
    fn a_batch_stops_at_a_request_a_large_message_and_the_credit() {
        let mut s = Scheduler::new(10_000);
        s.add_channel(1, &cfg(1));
        // Credit for exactly three messages of 10 bytes.
        s.add_credit(1, 3 * (10 + MESSAGE_COST));
        for _ in 0..5 {
            s.push(1, MsgKind::Plain, bytes(10)).unwrap();
        }
        let (n, batch) = next(&mut s);
        assert_eq!(
            n,
            Some(Next::Batch {
                channel: 1,
                messages: 3,
                bytes: 30
            })
        );
        assert_eq!(batch.len(), 3);
        assert_eq!(s.stats(1).unwrap().credit, 0);
        assert_eq!(next(&mut s).0, None, "no credit left");
        s.add_credit(1, 1 << 20);
        // Two small ones, then a request: the batch stops before it.
        s.push(1, MsgKind::Request(7), bytes(10)).unwrap();
        let (n, batch) = next(&mut s);
        assert!(matches!(n, Some(Next::Batch { .. })));
        assert_eq!(batch.len(), 2);
        assert!(matches!(next(&mut s).0, Some(Next::Chunk(c)) if c.kind == MsgKind::Request(7)));
        // Small, large, small: no batch (a batch needs two in a row).
        s.push(1, MsgKind::Plain, bytes(10)).unwrap();
        s.push(1, MsgKind::Plain, bytes(BATCHED_BELOW)).unwrap();
        s.push(1, MsgKind::Plain, bytes(10)).unwrap();
        for len in [10, BATCHED_BELOW, 10] {
            assert!(matches!(next(&mut s).0, Some(Next::Chunk(c)) if c.payload.len() == len));
        }
    }

    #[test]
    fn the_control_channel_is_never_batched() {
        let mut s = sched(1000);
        s.add_control_channel(0, &cfg(1));
        s.push(0, MsgKind::Plain, bytes(5)).unwrap();
        s.push(0, MsgKind::Plain, bytes(5)).unwrap();
        assert!(matches!(next(&mut s).0, Some(Next::Chunk(_))));
        assert!(matches!(next(&mut s).0, Some(Next::Chunk(_))));
    }

    #[test]
    fn push_run_queues_until_the_budget_and_marks_the_channel_full() {
        let mut s = sched(100);
        s.add_channel(1, &cfg(1).send_queue(3, 1000).max_message_size(50));
        let mut run: VecDeque<Bytes> = (0..5).map(|_| bytes(10)).collect();
        assert_eq!(s.push_run(1, &mut run), (3, Some(PushError::Full)));
        assert_eq!(run.len(), 2, "what did not fit stays in the run");
        while s.poll_chunk().is_some() {}
        assert_eq!(s.poll_room(), Some(1), "the waiting sender hears of room");
        let mut run: VecDeque<Bytes> = [bytes(10), bytes(51)].into_iter().collect();
        assert_eq!(
            s.push_run(1, &mut run),
            (1, Some(PushError::TooLarge { size: 51, max: 50 }))
        );
        assert_eq!(
            s.push_run(9, &mut run),
            (0, Some(PushError::UnknownChannel(9)))
        );
    }

    #[test]
    fn budgets_in_messages_and_bytes() {
        let mut s = sched(100);
        s.add_channel(1, &cfg(1).send_queue(2, 50).max_message_size(1000));
        assert_eq!(
            s.push(9, MsgKind::Plain, bytes(1)),
            Err(PushError::UnknownChannel(9))
        );
        assert_eq!(
            s.push(1, MsgKind::Plain, bytes(1001)),
            Err(PushError::TooLarge {
                size: 1001,
                max: 1000
            })
        );
        // A message above the byte budget still enters an empty queue.
        s.push(1, MsgKind::Plain, bytes(80)).unwrap();
        assert_eq!(s.push(1, MsgKind::Plain, bytes(1)), Err(PushError::Full));
        let c = s.poll_chunk().unwrap();
        assert_eq!((c.payload.len(), c.eof), (80, true));
        s.push(1, MsgKind::Plain, bytes(30)).unwrap();
        s.push(1, MsgKind::Plain, bytes(20)).unwrap();
        assert_eq!(s.check(1, 1), Err(PushError::Full), "message budget");
        assert_eq!(s.queued_bytes(), 50);
        let st = s.stats(1).unwrap();
        assert_eq!(
            (
                st.queued_messages,
                st.queued_bytes,
                st.sent_messages,
                st.sent_bytes
            ),
            (2, 50, 1, 80)
        );
    }

    #[test]
    fn credit_holds_whole_chunks_back_never_cuts_them() {
        let mut s = Scheduler::new(4000);
        s.add_channel(1, &cfg(1));
        s.add_channel(2, &cfg(1));
        assert_eq!(
            s.push(1, MsgKind::Plain, bytes(1)),
            Err(PushError::NotAccepted(1)),
            "no credit was ever granted: the remote lacks the channel"
        );
        s.add_credit(1, 3999);
        s.add_credit(2, 100);
        s.push(1, MsgKind::Plain, bytes(5000)).unwrap();
        s.push(2, MsgKind::Plain, bytes(60)).unwrap();
        s.push(2, MsgKind::Plain, bytes(60)).unwrap();
        let mut got = Vec::new();
        while let Some(c) = s.poll_chunk() {
            got.push((c.channel, c.payload.len(), c.eof));
        }
        // Channel 1's first chunk (4000 bytes) needs one more byte of credit; channel 2
        // fits one whole message (60 + 32 of its 100) and the second needs 92 more.
        assert_eq!(got, vec![(2, 60, true)]);
        assert_eq!(s.stats(2).unwrap().credit, 8);
        s.add_credit(1, 1);
        let c = s.poll_chunk().unwrap();
        assert_eq!(
            (c.channel, c.payload.len(), c.eof, c.total),
            (1, 4000, false, Some(5000))
        );
        s.add_credit(1, 1031);
        assert!(
            !s.can_send(),
            "the last 1000 bytes and their message cost need 1032"
        );
        s.add_credit(1, 1);
        let c = s.poll_chunk().unwrap();
        assert_eq!((c.channel, c.payload.len(), c.eof), (1, 1000, true));
        assert_eq!(s.stats(1).unwrap().credit, 0);
        s.add_credit(1, 500);
        assert_eq!(s.reclaim(1, 100), 100);
        assert_eq!(s.reclaim(1, 10_000), 400);
        assert_eq!(s.stats(1).unwrap().credit, 0);
    }

    #[test]
    fn empty_messages_cost_the_message_cost_and_control_needs_no_credit() {
        let mut s = Scheduler::new(100);
        s.add_control_channel(0, &cfg(1000));
        s.add_channel(3, &cfg(1));
        s.add_credit(3, MESSAGE_COST - 1);
        s.push(3, MsgKind::Plain, Bytes::new()).unwrap();
        s.push(0, MsgKind::Plain, bytes(250)).unwrap();
        let shape: Vec<(u8, usize, bool)> = std::iter::from_fn(|| s.poll_chunk())
            .map(|c| (c.channel, c.payload.len(), c.eof))
            .collect();
        assert_eq!(shape, vec![(0, 100, false), (0, 100, false), (0, 50, true)]);
        s.add_credit(3, 1);
        assert_eq!(s.poll_chunk().map(|c| (c.channel, c.eof)), Some((3, true)));
    }

    #[test]
    fn a_full_queue_reports_room_once_it_drained_to_half() {
        let mut s = sched(10);
        s.add_channel(1, &cfg(1).send_queue(4, 100));
        for _ in 0..4 {
            s.push(1, MsgKind::Plain, bytes(5)).unwrap();
        }
        assert_eq!(s.push(1, MsgKind::Plain, bytes(5)), Err(PushError::Full));
        let _ = s.poll_chunk();
        assert_eq!(
            s.poll_room(),
            None,
            "one free slot is not yet the low-water mark"
        );
        let _ = s.poll_chunk();
        assert_eq!(s.poll_room(), Some(1));
        assert_eq!(s.poll_room(), None);
    }

    #[test]
    fn chunks_carry_kind_and_eof_only_on_the_last() {
        let mut s = sched(10);
        s.add_channel(4, &cfg(1));
        s.push(
            4,
            MsgKind::Request(7),
            Bytes::from((0u8..25).collect::<Vec<_>>()),
        )
        .unwrap();
        s.push(4, MsgKind::Plain, Bytes::new()).unwrap();
        let chunks: Vec<Chunk> = std::iter::from_fn(|| s.poll_chunk()).collect();
        let shape: Vec<(usize, bool, MsgKind)> = chunks
            .iter()
            .map(|c| (c.payload.len(), c.eof, c.kind))
            .collect();
        assert_eq!(
            shape,
            vec![
                (10, false, MsgKind::Request(7)),
                (10, false, MsgKind::Request(7)),
                (5, true, MsgKind::Request(7)),
                (0, true, MsgKind::Plain),
            ]
        );
        assert_eq!(chunks[1].payload[0], 10, "chunks are consecutive slices");
        assert!(s.is_empty());
        let mut wire = BytesMut::new();
        chunks[2].encode(&mut wire);
        assert_eq!(wire.len(), chunks[2].encoded_len());
        assert_eq!(&wire[..11], &[3, 4, 0x03, 0, 0, 0, 7, 0, 0, 0, 5]);
        let mut first = BytesMut::new();
        chunks[0].encode(&mut first);
        assert_eq!(
            chunks[0].total,
            Some(25),
            "the first of several chunks has the size"
        );
        assert_eq!(
            &first[..15],
            &[3, 4, 0x0a, 0, 0, 0, 7, 0, 0, 0, 25, 0, 0, 0, 10]
        );
        assert!(chunks[1..].iter().all(|c| c.total.is_none()));
    }

    #[test]
    fn a_rejoining_channel_waits_at_most_one_chunk() {
        let mut s = sched(10);
        s.add_channel(1, &cfg(1));
        s.add_channel(2, &cfg(1));
        s.push(2, MsgKind::Plain, bytes(10)).unwrap();
        let _ = s.poll_chunk();
        // Channel 2 has history; channel 1 is a bulk backlog.
        s.push(1, MsgKind::Plain, bytes(10_000)).unwrap();
        for _ in 0..50 {
            let _ = s.poll_chunk();
        }
        s.push(2, MsgKind::Plain, bytes(3)).unwrap();
        // It rejoins at the bulk channel's virtual time: no burst credit, no penalty
        // for its history, so it ties and goes within one chunk.
        let next: Vec<u8> = (0..2).map(|_| s.poll_chunk().unwrap().channel).collect();
        assert!(next.contains(&2), "{next:?}");
    }

    /// Polls chunks while keeping every channel backlogged, until `min_bytes` have
    /// been sent. (A byte count, not a poll count: with tiny messages, a fixed number
    /// of polls moves so few bytes that one chunk of a bulk channel is several percent
    /// of the total.)
    fn run_backlogged(s: &mut Scheduler, ids: &[u8], sizes: &[usize], min_bytes: u64) -> Vec<u64> {
        let mut sent = vec![0u64; ids.len()];
        for (k, &id) in ids.iter().enumerate() {
            for _ in 0..2 {
                s.push(id, MsgKind::Plain, bytes(sizes[k])).unwrap();
            }
        }
        let mut total = 0;
        while total < min_bytes {
            let c = s.poll_chunk().unwrap();
            let k = ids.iter().position(|&id| id == c.channel).unwrap();
            sent[k] += c.payload.len() as u64;
            total += c.payload.len() as u64;
            if s.stats(c.channel).unwrap().queued_messages < 2 {
                s.push(c.channel, MsgKind::Plain, bytes(sizes[k])).unwrap();
            }
        }
        sent
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// With every channel backlogged, each gets its priority's share of bytes.
        #[test]
        fn shares_follow_priorities(
            prios in proptest::collection::vec(1u16..=20, 2..=6),
            sizes in proptest::collection::vec(1usize..3000, 6),
            chunk in 64usize..1024,
        ) {
            let mut s = sched(chunk);
            let ids: Vec<u8> = (0..prios.len() as u8).map(|i| i * 7 + 1).collect();
            for (id, p) in ids.iter().zip(&prios) {
                s.add_channel(*id, &cfg(*p));
            }
            // Each channel may be up to one chunk ahead of its share at any moment;
            // the smallest share is 1/120 here, so 5% needs over 2,400 chunks' worth.
            let sent = run_backlogged(&mut s, &ids, &sizes, 4_000 * chunk as u64);
            let total: u64 = sent.iter().sum();
            let psum: u64 = prios.iter().map(|&p| u64::from(p)).sum();
            for (k, &p) in prios.iter().enumerate() {
                let share = sent[k] as f64 / total as f64;
                let expected = f64::from(p) / psum as f64;
                prop_assert!((share - expected).abs() <= 0.05 * expected,
                    "channel {k} priority {p}: share {share:.4}, expected {expected:.4}");
            }
        }

        /// An urgent message queued behind megabytes of bulk data waits for at most
        /// one chunk per other busy channel, whatever the urgent channel's history.
        #[test]
        fn head_of_line_is_bounded(
            bulk_prios in proptest::collection::vec(1u16..=5, 1..=3),
            urgent_prio in 1u16..=100,
            history in 0usize..50,
            before in 0usize..500,
        ) {
            let chunk = 16 * 1024;
            let mut s = sched(chunk);
            let urgent = 200u8;
            s.add_channel(urgent, &cfg(urgent_prio));
            for (i, p) in bulk_prios.iter().enumerate() {
                s.add_channel(i as u8 + 1, &cfg(*p));
                for _ in 0..32 {
                    s.push(i as u8 + 1, MsgKind::Plain, bytes(64 * 1024)).unwrap();
                }
            }
            // The urgent channel's history: some traffic, fully drained.
            for _ in 0..history {
                s.push(urgent, MsgKind::Plain, bytes(chunk)).unwrap();
            }
            while s.stats(urgent).unwrap().queued_messages > 0 {
                let _ = s.poll_chunk();
            }
            for _ in 0..before {
                let _ = s.poll_chunk();
            }
            let busy = (1..=bulk_prios.len() as u8).filter(|&c| s.stats(c).unwrap().queued_messages > 0).count();
            s.push(urgent, MsgKind::Plain, bytes(100)).unwrap();
            let mut bytes_before = 0;
            loop {
                let c = s.poll_chunk().unwrap();
                if c.channel == urgent {
                    break;
                }
                bytes_before += c.payload.len();
            }
            prop_assert!(bytes_before <= busy * chunk, "{bytes_before} bytes before the urgent message, {busy} busy channels");
        }

        /// Any sequence of pushes and polls keeps the budgets, never panics, and each
        /// channel's chunks rebuild exactly the messages pushed, in order.
        #[test]
        fn streams_rebuild_exactly(ops in proptest::collection::vec((0u8..4, 0usize..700, any::<bool>()), 1..300), chunk in 1usize..256) {
            let mut s = sched(chunk);
            for id in 0..3u8 {
                s.add_channel(id, &cfg(u16::from(id) + 1).send_queue(8, 2000).max_message_size(600));
            }
            let mut pushed: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 4];
            let mut got: Vec<Vec<Vec<u8>>> = vec![Vec::new(); 4];
            let mut partial: Vec<Vec<u8>> = vec![Vec::new(); 4];
            let mut counter = 0u8;
            let take = |s: &mut Scheduler, got: &mut Vec<Vec<Vec<u8>>>, partial: &mut Vec<Vec<u8>>| {
                let mut out = BytesMut::new();
                match s.poll_next(&mut out) {
                    Some(Next::Chunk(c)) => {
                        assert!(c.payload.len() <= chunk);
                        let p = &mut partial[usize::from(c.channel)];
                        p.extend_from_slice(&c.payload);
                        if c.eof {
                            got[usize::from(c.channel)].push(std::mem::take(p));
                        }
                    }
                    Some(Next::Batch { channel, messages, bytes }) => {
                        let body_len = out.len() - BATCH_HEADER_LEN;
                        let batch = batch_messages(&mut out);
                        assert!(body_len <= chunk && messages >= 2 && batch.len() == messages);
                        assert!(partial[usize::from(channel)].is_empty(), "a batch inside a message");
                        assert_eq!(batch.iter().map(Bytes::len).sum::<usize>(), bytes);
                        got[usize::from(channel)].extend(batch.into_iter().map(|m| m.to_vec()));
                    }
                    None => {}
                }
            };
            for (ch, len, poll) in ops {
                if poll {
                    take(&mut s, &mut got, &mut partial);
                } else {
                    counter = counter.wrapping_add(1);
                    let msg = vec![counter; len];
                    let before = s.stats(ch).map(|st| (st.queued_messages, st.queued_bytes));
                    match s.push(ch, MsgKind::Plain, Bytes::from(msg.clone())) {
                        Ok(()) => pushed[usize::from(ch)].push(msg),
                        Err(PushError::Full) => {
                            let (m, b) = before.unwrap();
                            prop_assert!(m >= 8 || b + len > 2000);
                        }
                        Err(PushError::TooLarge { .. }) => prop_assert!(len > 600),
                        Err(PushError::UnknownChannel(c)) => prop_assert_eq!(c, 3),
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                    for id in 0..3u8 {
                        let st = s.stats(id).unwrap();
                        prop_assert!(st.queued_messages <= 8);
                        prop_assert!(st.queued_messages <= 1 || st.queued_bytes <= 2000);
                    }
                }
            }
            while !s.is_empty() {
                take(&mut s, &mut got, &mut partial);
            }
            prop_assert_eq!(got, pushed);
        }
    }
}
