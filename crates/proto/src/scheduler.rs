//! The send-side scheduler: per-channel bounded queues, chunking, and the
//! priority-weighted choice of the next chunk.
//!
//! Each channel queues whole messages (bounded in messages and in bytes). The writer
//! asks for one chunk at a time with [`Scheduler::poll_chunk`]; messages larger than
//! `max_packet_payload` are cut into chunks (zero-copy slices), and chunks of
//! different channels interleave.
//!
//! The next chunk comes from the channel with the lowest `recent_sent / priority`
//! among channels with data (ties: higher priority, then lower id). Counters are
//! halved together whenever one passes a threshold (decay that keeps numbers bounded
//! and proportions intact). A channel that becomes busy again **rejoins at the
//! current virtual time**: its counter is set to the lowest active ratio times its
//! priority, so it gets no burst credit for having been idle and no penalty for its
//! past. That is what bounds head-of-line blocking: a message on a newly busy channel
//! waits for at most one chunk per other busy channel.

use bytes::{Bytes, BytesMut};

use crate::codec::{put_msg_header, MsgKind};
use crate::config::ChannelConfig;

/// Counters are halved when one passes this many bytes.
const DECAY_THRESHOLD: f64 = (64u64 << 20) as f64;

/// Why a message was not queued.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// The channel's queue is at its message or byte budget; retry when it drains.
    #[error("send queue full")]
    Full,
    /// No such channel was added.
    #[error("unknown channel {0:#04x}")]
    UnknownChannel(u8),
    /// The message is above the channel's `max_message_size`.
    #[error("message of {size} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Size of the message.
        size: usize,
        /// The channel's limit.
        max: usize,
    },
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
    /// The bytes (a slice of the queued message).
    pub payload: Bytes,
}

impl Chunk {
    /// Header plus payload length on the wire.
    #[must_use]
    pub fn encoded_len(&self) -> usize {
        self.kind.header_len() + self.payload.len()
    }

    /// Appends the packet (header and a copy of the payload) to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        put_msg_header(dst, self.channel, self.eof, self.kind, self.payload.len());
        dst.extend_from_slice(&self.payload);
    }
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
}

#[derive(Debug)]
struct Channel {
    id: u8,
    cfg: ChannelConfig,
    queue: std::collections::VecDeque<(MsgKind, Bytes)>,
    /// Bytes of the front message already handed out.
    offset: usize,
    queued_bytes: usize,
    recent: f64,
    stats: ChannelStats,
}

impl Channel {
    fn ratio(&self) -> f64 {
        self.recent / f64::from(self.cfg.priority.max(1))
    }
}

/// Per-channel queues and the choice of the next chunk (see the [module docs](self)).
#[derive(Debug)]
pub struct Scheduler {
    max_chunk: usize,
    channels: Vec<Channel>,
    index: [u8; 256],
    queued_bytes: usize,
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
        }
    }

    fn slot(&self, id: u8) -> Option<usize> {
        let i = self.index[usize::from(id)];
        (i != NONE).then_some(usize::from(i))
    }

    /// Adds a channel, or replaces the budgets and priority of an existing one.
    /// (At most 255 channels; further ones are ignored.)
    pub fn add_channel(&mut self, id: u8, cfg: &ChannelConfig) {
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
            queue: std::collections::VecDeque::new(),
            offset: 0,
            queued_bytes: 0,
            recent: 0.0,
            stats: ChannelStats::default(),
        });
    }

    /// Whether `id` was added.
    #[must_use]
    pub fn has_channel(&self, id: u8) -> bool {
        self.slot(id).is_some()
    }

    /// Whether a message of `len` bytes would be accepted on `channel` now.
    pub fn check(&self, channel: u8, len: usize) -> Result<(), PushError> {
        let c = self
            .slot(channel)
            .and_then(|i| self.channels.get(i))
            .ok_or(PushError::UnknownChannel(channel))?;
        if len > c.cfg.max_message_size {
            return Err(PushError::TooLarge {
                size: len,
                max: c.cfg.max_message_size,
            });
        }
        if c.queue.is_empty() {
            return Ok(());
        }
        if c.queue.len() + 1 > c.cfg.send_queue_messages
            || c.queued_bytes + len > c.cfg.send_queue_bytes
        {
            return Err(PushError::Full);
        }
        Ok(())
    }

    /// Queues a whole message on `channel`, or says why not (nothing is queued then).
    pub fn push(&mut self, channel: u8, kind: MsgKind, payload: Bytes) -> Result<(), PushError> {
        self.check(channel, payload.len())?;
        let i = self
            .slot(channel)
            .ok_or(PushError::UnknownChannel(channel))?;
        let rejoin = if self.channels.get(i).is_some_and(|c| c.queue.is_empty()) {
            self.channels
                .iter()
                .filter(|c| !c.queue.is_empty())
                .map(Channel::ratio)
                .min_by(f64::total_cmp)
        } else {
            None
        };
        let len = payload.len();
        let Some(c) = self.channels.get_mut(i) else {
            return Err(PushError::UnknownChannel(channel));
        };
        if let Some(min_ratio) = rejoin {
            c.recent = min_ratio * f64::from(c.cfg.priority.max(1));
        }
        c.queue.push_back((kind, payload));
        c.queued_bytes += len;
        c.stats.queued_messages = c.queue.len();
        c.stats.queued_bytes = c.queued_bytes;
        self.queued_bytes += len;
        Ok(())
    }

    /// Whether every queue is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.channels.iter().all(|c| c.queue.is_empty())
    }

    /// Payload bytes still queued, over all channels.
    #[must_use]
    pub fn queued_bytes(&self) -> usize {
        self.queued_bytes
    }

    /// Counters of `channel`.
    #[must_use]
    pub fn stats(&self, channel: u8) -> Option<ChannelStats> {
        self.slot(channel)
            .and_then(|i| self.channels.get(i))
            .map(|c| c.stats)
    }

    /// The next chunk to write, by priority; `None` when every queue is empty.
    #[must_use]
    pub fn poll_chunk(&mut self) -> Option<Chunk> {
        let mut best: Option<usize> = None;
        for (i, c) in self.channels.iter().enumerate() {
            if c.queue.is_empty() {
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
        let c = self.channels.get_mut(best?)?;
        let (kind, msg) = c.queue.front()?.clone();
        let start = c.offset;
        let end = (start + self.max_chunk).min(msg.len());
        let eof = end == msg.len();
        let payload = msg.slice(start..end);
        let n = end - start;
        if eof {
            c.queue.pop_front();
            c.offset = 0;
            c.stats.sent_messages += 1;
        } else {
            c.offset = end;
        }
        c.queued_bytes -= n;
        c.stats.queued_bytes = c.queued_bytes;
        c.stats.queued_messages = c.queue.len();
        c.stats.sent_bytes += n as u64;
        c.recent += n.max(1) as f64;
        let decay = c.recent > DECAY_THRESHOLD;
        let channel = c.id;
        self.queued_bytes -= n;
        if decay {
            for c in &mut self.channels {
                c.recent /= 2.0;
            }
        }
        Some(Chunk {
            channel,
            eof,
            kind,
            payload,
        })
    }
}
