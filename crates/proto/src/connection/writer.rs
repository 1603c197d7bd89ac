//! [`Writer`]: the send side of one connection between its [`PeerCore`] and the
//! socket: what is written next, who writes it, and what the core is told afterwards.
//!
//! It performs no I/O. The runtime asks it what to do ([`Writer::poll`]), takes the
//! bytes out ([`Writer::take`]) to write them without holding anything, and reports
//! what the socket took ([`Writer::complete`]). The choices it makes are these.
//!
//! * **One writer at a time, in wire order.** The bytes the core handed out and the
//!   socket has not taken yet wait here, and are written before the core is asked for
//!   more. While they are out with a writer, nobody else writes.
//! * **Written means all of it.** The core hears
//!   [`handle_written`](PeerCore::handle_written) once a transmit it handed out is
//!   wholly in the socket (a ping's round trip and a request's stall timer start then).
//! * **Sealing.** On an encrypted connection the core's bytes are sealed into frames
//!   (see [`Sealer::seal`]) in one buffer that is reused once the socket took its last
//!   frames: a fresh large allocation per write costs page faults. A sealing failure
//!   closes the connection with its reason.
//! * **Idle.** When the core has nothing to send, the writer sleeps and gives large
//!   buffers back, so a quiet connection holds little memory. Or the core says to shut
//!   the write half: once, and nothing more is written after it (nor after a failed
//!   write).
//! * **Inline writes.** While the writer sleeps, a sender that queued a message may
//!   write it itself, from its own thread, if the runtime allows it
//!   ([`Writer::after_push`]); else the runtime wakes its writer. After an inline
//!   write, the runtime's writer is woken only if there is work for it: bytes the
//!   socket did not take, more than one batch, an event, or a deadline earlier than
//!   the one its timer is armed for ([`Writer::complete_inline`]; the runtime says
//!   when it re-arms it, [`Writer::set_armed`]).

use std::io;
use std::time::Instant;

use bytes::BytesMut;

use super::transmit::Transmit;
use super::PeerCore;
use crate::secure::Sealer;

/// A frames buffer larger than this is given back while the writer is idle.
const KEEP_FRAMES: usize = 64 << 10;

/// What the runtime's writer does next (from [`Writer::poll`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteStep {
    /// Write: [`take`](Writer::take) the bytes once the socket is writable.
    Write,
    /// Nothing to write: sleep until a sender wakes the writer.
    Idle,
    /// Shut the socket's write half now (the writer is done after it).
    Shutdown,
    /// Another thread is writing; it wakes the writer if it leaves work.
    Busy,
    /// Nothing more is ever written (the write half is shut, or a write failed).
    Done,
}

/// What a sender does after queuing a message (from [`Writer::after_push`]).
#[derive(Debug)]
pub enum AfterPush {
    /// Nothing: the runtime's writer is awake and will take the message.
    Nothing,
    /// Wake the runtime's writer.
    Wake,
    /// Write these bytes inline, then report with [`Writer::complete_inline`].
    Write(Transmit),
}

/// The send side of one connection (see the [module docs](self)).
#[derive(Default)]
pub struct Writer {
    /// Bytes the core handed out and nobody has written yet (in wire order).
    transmit: Transmit,
    /// Encrypts what the core hands out (`None` in plaintext).
    sealer: Option<Sealer>,
    /// The core's bytes before they are sealed (empty between calls).
    plain: Transmit,
    /// Where frames are sealed.
    frames: BytesMut,
    /// A write is under way: `transmit` is out with a writer.
    writing: bool,
    /// The transmit out with the writer had bytes in it.
    had_bytes: bool,
    /// The transmit out with an inline writer reached its batch (more may be ready).
    full: bool,
    /// The runtime's writer sleeps for lack of work: the next push must wake it.
    idle: bool,
    /// The runtime's writer found an inline write under way and left: whatever it came
    /// to write (a pong, credit, a goodbye the core queued meanwhile) is carried out
    /// when that write completes.
    missed: bool,
    /// The write half is shut or a write failed.
    done: bool,
    /// The deadline the runtime's timer is armed for.
    armed: Option<Instant>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("pending", &self.transmit.len())
            .field("encrypted", &self.sealer.is_some())
            .field("writing", &self.writing)
            .field("idle", &self.idle)
            .field("done", &self.done)
            .finish()
    }
}

impl Writer {
    /// A writer for a plaintext connection (see [`set_sealer`](Self::set_sealer)).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Encrypts everything handed out from now on with `sealer`.
    pub fn set_sealer(&mut self, sealer: Sealer) {
        self.sealer = Some(sealer);
    }

    /// The runtime armed its one timer for `at` (the core's
    /// [`poll_timeout`](PeerCore::poll_timeout)): a deadline the core sets earlier than
    /// that needs the runtime's writer awake.
    pub fn set_armed(&mut self, at: Option<Instant>) {
        self.armed = at;
    }

    /// Bytes waiting to be written (not counting bytes out with a writer).
    #[must_use]
    pub fn pending(&self) -> usize {
        self.transmit.len()
    }

    /// Whether the runtime's writer sleeps for lack of work.
    #[must_use]
    pub fn is_idle(&self) -> bool {
        self.idle
    }

    /// Whether nothing more is ever written.
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Bytes of buffer the writer holds beyond what waits to be written (the sealing
    /// buffer; shrinks while idle).
    #[must_use]
    pub fn spare_capacity(&self) -> usize {
        self.frames.capacity()
    }

    /// What the runtime's writer does next, with at most about `batch` bytes taken from
    /// the core when nothing waits.
    pub fn poll(&mut self, core: &mut PeerCore, now: Instant, batch: usize) -> WriteStep {
        if self.done {
            return WriteStep::Done;
        }
        if self.writing {
            self.missed = true;
            return WriteStep::Busy;
        }
        if !self.transmit.is_empty() || self.fill(core, now, batch) {
            return WriteStep::Write;
        }
        let shutdown = core.poll_shutdown();
        self.idle = !shutdown;
        self.shrink_if_idle();
        if shutdown {
            self.done = true;
            return WriteStep::Shutdown;
        }
        WriteStep::Idle
    }

    /// Takes out the bytes to write (after [`WriteStep::Write`]); nobody else writes
    /// until they come back with [`complete`](Self::complete).
    pub fn take(&mut self) -> Transmit {
        self.writing = true;
        self.had_bytes = !self.transmit.is_empty();
        std::mem::take(&mut self.transmit)
    }

    /// Takes back what a write left of `t` and tells the core what it did: the bytes
    /// the socket took (`Some(0)` once it failed, which the core has then been told).
    pub fn complete(
        &mut self,
        core: &mut PeerCore,
        now: Instant,
        t: Transmit,
        result: io::Result<usize>,
    ) -> Option<usize> {
        self.writing = false;
        let written = t.is_empty() && std::mem::take(&mut self.had_bytes);
        self.transmit = t;
        match result {
            Ok(n) => {
                if written {
                    core.handle_written(now);
                }
                Some(n)
            }
            Err(e) => Some(self.fail(core, now, &e)),
        }
    }

    /// The socket failed before a write: nothing more is written. Returns 0 (bytes
    /// written).
    pub fn fail(&mut self, core: &mut PeerCore, now: Instant, e: &io::Error) -> usize {
        self.done = true;
        core.handle_io_error(now, &e.to_string());
        0
    }

    /// A sender queued a message: whether it writes inline (at most about `batch`
    /// bytes), wakes the runtime's writer, or does nothing. `may_inline` is the
    /// runtime's say (it is asked only when the writer sleeps with nothing pending).
    pub fn after_push(
        &mut self,
        core: &mut PeerCore,
        now: Instant,
        batch: usize,
        may_inline: impl FnOnce() -> bool,
    ) -> AfterPush {
        if !self.idle {
            return AfterPush::Nothing;
        }
        if self.done || self.writing || !self.transmit.is_empty() || !may_inline() {
            self.idle = false;
            return AfterPush::Wake;
        }
        if !self.fill(core, now, batch) {
            return if self.needs_writer(core) {
                AfterPush::Wake
            } else {
                AfterPush::Nothing
            };
        }
        let t = self.take();
        // The core stops at the batch limit: when it reached it, more may be ready to
        // go, and only the runtime's writer will take it.
        self.full = t.len() >= batch;
        AfterPush::Write(t)
    }

    /// Takes back what an inline write left of `t` (as [`complete`](Self::complete));
    /// returns whether the runtime's writer must wake to carry out what the write
    /// changed: bytes the socket did not take, more to send, a failure, an event, an
    /// earlier deadline than the armed one, or a pass of its own that found this write under
    /// way (what it came to write, the core may have queued since).
    pub fn complete_inline(
        &mut self,
        core: &mut PeerCore,
        now: Instant,
        t: Transmit,
        result: io::Result<usize>,
    ) -> bool {
        let left = !t.is_empty();
        let failed = result.is_err();
        self.complete(core, now, t, result);
        let more = std::mem::take(&mut self.full);
        let missed = std::mem::take(&mut self.missed);
        if left || more || failed || missed {
            self.idle = false;
            return true;
        }
        self.needs_writer(core)
    }

    /// Whether the sleeping writer must wake: the core has events for the runtime or
    /// a deadline before the one the runtime's timer is armed for.
    fn needs_writer(&mut self, core: &PeerCore) -> bool {
        let armed = self.armed;
        let wake = core.has_events()
            || core
                .poll_timeout()
                .is_some_and(|t| armed.is_none_or(|a| t < a));
        if wake {
            self.idle = false;
        }
        wake
    }

    /// Puts what the core hands out (at most about `batch` bytes) into the transmit,
    /// sealed into frames when the connection is encrypted. False when the core had
    /// nothing to send.
    fn fill(&mut self, core: &mut PeerCore, now: Instant, batch: usize) -> bool {
        let Some(sealer) = &mut self.sealer else {
            return core.poll_transmit(now, &mut self.transmit, batch);
        };
        if !core.poll_transmit(now, &mut self.plain, batch) {
            return false;
        }
        match sealer.seal(&mut self.plain, &mut self.frames) {
            Ok(()) => {
                let frames = self.frames.split().freeze();
                self.transmit.push_bytes(frames);
                true
            }
            Err(e) => {
                core.handle_transport_error(now, e.into());
                false
            }
        }
    }

    /// Gives back large buffers while the connection has nothing to write.
    fn shrink_if_idle(&mut self) {
        self.transmit.shrink_if_idle();
        if self.frames.capacity() > KEEP_FRAMES {
            self.frames = BytesMut::new();
        }
    }
}
