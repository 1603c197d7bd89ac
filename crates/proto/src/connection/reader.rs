//! [`Reader`]: the receive side of one connection between the socket and its
//! [`PeerCore`]: where each read goes, how large the read buffer is, and, on an
//! encrypted connection, where each frame is decrypted.
//!
//! It performs no I/O: the runtime asks it for a [`ReadTarget`], reads from the socket
//! into [`Reader::buffer`], and reports what the read did with [`Reader::complete`]
//! (a read that would block included).
//! The choices it makes are these.
//!
//! * **Straight into the message.** When the next bytes of the stream are the payload
//!   of a large message being put together, the core lends that message's buffer and
//!   the read goes into it ([`PeerCore::take_read_buffer`]); the read after such a
//!   payload takes no more than the core's hint (the next packet header), so the next
//!   payload is not copied through the read buffer either.
//! * **Encrypted frames.** Ciphertext is read into its own buffer and each whole frame
//!   is decrypted in turn. A frame that holds nothing but payload of the message being
//!   put together (the sender gives large payloads frames of their own, see
//!   [`Sealer::seal`](crate::secure::Sealer::seal)) is decrypted straight into that
//!   message's buffer; any other into the read buffer, which the core parses at once,
//!   so that it knows what the next frame carries.
//! * **Adaptive reads.** Reads that fill the buffer double the next read's size (up to
//!   [`MAX_READ`]); a short read brings it back down, and an idle connection gives a
//!   large buffer back, so a quiet peer holds little memory.
//! * **Buffers reused.** A read buffer whose earlier slices are still with the
//!   services cannot be reused in place; it is kept aside (a few of them) and taken
//!   again once every slice of it is dropped, since a fresh large allocation per read
//!   costs page faults.

use std::io;
use std::time::Instant;

use bytes::BytesMut;

use super::writer::Writer;
use super::PeerCore;
use crate::secure::{Opener, SecureError, Session};

/// Smallest read into the read buffer.
pub const MIN_READ: usize = 2 * 1024;
/// Largest read into the read buffer.
pub const MAX_READ: usize = 256 * 1024;
/// Earlier read buffers kept for reuse while their slices are with the services
/// (4 MiB of 256 KiB reads, on a connection busy enough to read that much at once).
const SPARE_BUFFERS: usize = 16;

/// Where the next read from the socket goes (from [`Reader::target`]).
#[derive(Debug)]
pub enum ReadTarget {
    /// The read buffer, as much as it has room for, or at most `limit` bytes.
    Buffer {
        /// Most bytes to read (the core's hint), if any.
        limit: Option<usize>,
    },
    /// The buffer of a message the core lent: at most `most` bytes of its payload.
    Message {
        /// The message's buffer (it goes back to the core in [`Reader::complete`]).
        buf: BytesMut,
        /// Most bytes to read into it.
        most: usize,
    },
    /// The ciphertext buffer of an encrypted connection.
    Cipher,
}

/// The receive side of one connection (see the [module docs](self)).
#[derive(Default)]
pub struct Reader {
    rbuf: BytesMut,
    spares: Vec<BytesMut>,
    next_read: usize,
    /// Decrypts what is read (`None` in plaintext); ciphertext waits in `cbuf`.
    opener: Option<Opener>,
    cbuf: BytesMut,
    /// Bytes read with the transport handshake, not fed to the core yet.
    leftover: bool,
    /// Data was read since the socket was last found empty.
    got_data: bool,
    /// The stream ended or failed: nothing more is read.
    done: bool,
    /// Payload bytes that went straight into their messages.
    direct: u64,
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("buffered", &self.rbuf.len())
            .field("ciphertext", &self.cbuf.len())
            .field("next_read", &self.next_read)
            .field("encrypted", &self.opener.is_some())
            .field("done", &self.done)
            .finish()
    }
}

impl Reader {
    /// A reader decrypting with `opener` when there is one; `rest` holds what was read
    /// past the transport handshake (ciphertext when encrypted).
    #[must_use]
    pub fn new(opener: Option<Opener>, rest: BytesMut) -> Self {
        let leftover = !rest.is_empty();
        let (rbuf, cbuf) = if opener.is_some() {
            (BytesMut::new(), rest)
        } else {
            (rest, BytesMut::new())
        };
        Reader {
            rbuf,
            cbuf,
            opener,
            leftover,
            next_read: MIN_READ,
            ..Reader::default()
        }
    }

    /// The reader of a connection whose transport is secured at `now`: `session`'s
    /// sealer goes to `writer` and its opener to the reader (plaintext without one),
    /// and the core is fed at once what was read past the transport handshake
    /// (`rest`).
    pub fn start(
        session: Option<Session>,
        rest: BytesMut,
        writer: &mut Writer,
        core: &mut PeerCore,
        now: Instant,
    ) -> Self {
        let opener = session.map(|s| {
            writer.set_sealer(s.sealer);
            s.opener
        });
        let mut reader = Reader::new(opener, rest);
        let _ = reader.feed_leftover(core, now);
        reader
    }

    /// Whether the stream ended or failed (nothing more is to be read).
    #[must_use]
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Payload bytes read or decrypted straight into their messages so far (the rest
    /// went through the read buffer).
    #[must_use]
    pub fn direct_bytes(&self) -> u64 {
        self.direct
    }

    /// Feeds the core what was read with the transport handshake, once: the bytes, or
    /// `None` when there were none.
    pub fn feed_leftover(&mut self, core: &mut PeerCore, now: Instant) -> Option<usize> {
        if !std::mem::take(&mut self.leftover) {
            return None;
        }
        let n = if self.opener.is_some() {
            self.cbuf.len()
        } else {
            self.rbuf.len()
        };
        self.complete(core, now, self.fed_target(), Ok(n.max(1)))
    }

    fn fed_target(&self) -> ReadTarget {
        if self.opener.is_some() {
            ReadTarget::Cipher
        } else {
            ReadTarget::Buffer { limit: None }
        }
    }

    /// Where the next read goes, with room made for it.
    pub fn target(&mut self, core: &mut PeerCore) -> ReadTarget {
        if self.opener.is_some() {
            if self.cbuf.capacity() - self.cbuf.len() < self.next_read / 2 {
                // Reclaims the space of frames already opened (nothing else holds
                // this buffer).
                self.cbuf.reserve(self.next_read);
            }
            return ReadTarget::Cipher;
        }
        if self.rbuf.is_empty() {
            if let Some((buf, most)) = core.take_read_buffer() {
                return ReadTarget::Message { buf, most };
            }
        }
        let limit = if self.rbuf.is_empty() {
            core.read_hint()
        } else {
            None
        };
        // Room for the rest of the packet at the front, and for a read of the usual size.
        let short = core
            .frame_len(&self.rbuf)
            .map_or(0, |n| n.saturating_sub(self.rbuf.len()));
        let room = self.rbuf.capacity() - self.rbuf.len();
        if room < short || room < self.next_read / 2 {
            self.grow(short.max(self.next_read));
        }
        ReadTarget::Buffer { limit }
    }

    /// The buffer a read into `target` fills, and the most bytes it may take.
    pub fn buffer<'a>(&'a mut self, target: &'a mut ReadTarget) -> (&'a mut BytesMut, usize) {
        match target {
            ReadTarget::Buffer { limit } => (&mut self.rbuf, limit.unwrap_or(usize::MAX)),
            ReadTarget::Message { buf, most } => (buf, *most),
            ReadTarget::Cipher => (&mut self.cbuf, usize::MAX),
        }
    }

    /// A read into `target` found nothing to read after all: a lent buffer goes back.
    fn abandon(&mut self, core: &mut PeerCore, now: Instant, target: ReadTarget) {
        if let ReadTarget::Message { buf, .. } = target {
            core.handle_direct_read(now, buf);
        }
    }

    /// The socket has nothing more to read now: the core's windows learn that this
    /// receiver keeps up (once per streak of reads).
    pub fn drained(&mut self, core: &mut PeerCore, now: Instant) {
        if std::mem::take(&mut self.got_data) {
            core.handle_drained(now);
        }
    }

    /// The socket failed before a read (its readiness reported an error): nothing
    /// more is read, and the connection is over. Returns 0 (bytes read).
    pub fn fail(&mut self, core: &mut PeerCore, now: Instant, e: &io::Error) -> usize {
        self.done = true;
        core.handle_io_error(now, &e.to_string());
        0
    }

    /// Feeds the core what a read into `target` did: the bytes read (`Some(0)` once
    /// the stream ended or failed, which the core has then been told), or `None` when
    /// the socket had nothing to read after all (`WouldBlock`: a lent buffer goes
    /// back, and the runtime waits for readiness again).
    pub fn complete(
        &mut self,
        core: &mut PeerCore,
        now: Instant,
        target: ReadTarget,
        result: io::Result<usize>,
    ) -> Option<usize> {
        let n = match result {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.abandon(core, now, target);
                return None;
            }
            Err(e) => {
                self.abandon(core, now, target);
                return Some(self.fail(core, now, &e));
            }
        };
        match target {
            ReadTarget::Message { buf, .. } => {
                core.handle_direct_read(now, buf);
                if n == 0 {
                    return self.end(core, now);
                }
                self.got_data = true;
                self.direct += n as u64;
                return Some(n);
            }
            ReadTarget::Cipher if n > 0 => {
                if let Err(e) = self.open_frames(core, now) {
                    self.done = true;
                    core.handle_transport_error(now, e.into());
                    return Some(0);
                }
            }
            ReadTarget::Cipher | ReadTarget::Buffer { .. } => {}
        }
        if n == 0 {
            return self.end(core, now);
        }
        self.got_data = true;
        core.handle_read(now, &mut self.rbuf);
        // Grow reads that fill the buffer; shrink back when traffic is light, and give
        // an idle connection's large buffer back. (A read cut short by a hint says
        // nothing about the traffic.)
        if !matches!(target, ReadTarget::Buffer { limit: Some(_) }) {
            self.next_read = if n >= self.next_read {
                (self.next_read * 2).min(MAX_READ)
            } else {
                (n * 2).clamp(MIN_READ, MAX_READ)
            };
        }
        if self.rbuf.is_empty() && self.rbuf.capacity() > 2 * MAX_READ {
            self.rbuf = BytesMut::new();
        }
        Some(n)
    }

    /// The remote closed its write half.
    fn end(&mut self, core: &mut PeerCore, now: Instant) -> Option<usize> {
        self.done = true;
        if self.cbuf.is_empty() {
            core.handle_eof(now, &mut self.rbuf);
        } else {
            core.handle_transport_error(now, SecureError::TruncatedFrame.into());
        }
        Some(0)
    }

    /// Decrypts every whole frame read so far (see the [module docs](self)).
    fn open_frames(&mut self, core: &mut PeerCore, now: Instant) -> Result<(), SecureError> {
        let Some(mut opener) = self.opener.take() else {
            return Ok(());
        };
        let opened = self.open_frames_with(&mut opener, core, now);
        self.opener = Some(opener);
        opened
    }

    fn open_frames_with(
        &mut self,
        opener: &mut Opener,
        core: &mut PeerCore,
        now: Instant,
    ) -> Result<(), SecureError> {
        while let Some(len) = Opener::whole_frame(&self.cbuf)? {
            let lent = if self.rbuf.is_empty() {
                core.take_read_buffer()
            } else {
                None
            };
            match lent {
                Some((mut buf, most)) if most >= len => {
                    let opened = opener.open_frame(&mut self.cbuf, &mut buf);
                    // The buffer goes back whatever the opening did.
                    core.handle_direct_read(now, buf);
                    opened?;
                    self.direct += len as u64;
                }
                lent => {
                    if let Some((buf, _)) = lent {
                        core.handle_direct_read(now, buf);
                    }
                    if self.rbuf.capacity() - self.rbuf.len() < len {
                        self.grow(len.max(self.next_read));
                    }
                    opener.open_frame(&mut self.cbuf, &mut self.rbuf)?;
                    core.handle_read(now, &mut self.rbuf);
                }
            }
        }
        Ok(())
    }

    /// Makes room for `want` more bytes: in place if every slice handed out from the
    /// buffer is gone, else in a spare buffer that is free again, else in a new one.
    /// (This is the only place the read buffer grows: the codec makes no room.)
    fn grow(&mut self, want: usize) {
        if self.rbuf.try_reclaim(want) {
            return;
        }
        let keep = self.next_read == MAX_READ;
        // The start of a packet not complete yet moves over (at most one packet).
        let need = self.rbuf.len() + want;
        // The oldest spares first: their slices are the likeliest to be gone.
        let fresh = match self.spares.iter_mut().position(|s| s.try_reclaim(need)) {
            Some(i) => self.spares.remove(i),
            None => BytesMut::with_capacity(need),
        };
        let mut old = std::mem::replace(&mut self.rbuf, fresh);
        self.rbuf.extend_from_slice(&old);
        if keep {
            // Kept while its slices are with the services, so that its memory comes
            // back here rather than to the allocator, which would hand the next
            // buffer out as fresh pages to fault in.
            old.clear();
            if self.spares.len() == SPARE_BUFFERS {
                self.spares.remove(0);
            }
            self.spares.push(old);
        } else {
            self.spares.clear();
        }
    }
}
