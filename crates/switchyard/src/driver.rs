//! The driver: one connection's I/O, polled inside its Peer's actor context.
//!
//! It moves bytes and time between the socket and the [`PeerCore`](switchyard_proto::PeerCore)
//! and does nothing else: reads into an adaptive buffer and feeds `handle_read`,
//! writes what `poll_transmit` hands out with vectored writes and reports
//! `handle_written`, shuts the write half when `poll_shutdown` says so, and arms one
//! timer at `poll_timeout`. After each pass the Peer drains the core's events. Reading
//! never waits for a service: flow control bounds what a remote may send.
//!
//! Reads and writes are polled in the same pass, so a blocked write never stops the
//! reader (and the credit and pongs it brings). After a streak of bytes in a row the
//! driver gives its thread back once, so other connections on the arbiter get a turn.
//! The socket is shared with the connection's senders, which write inline while the
//! driver has nothing to write (see [`conn`](crate::conn)); one writer at a time, in
//! order, through the shared transmit.

use std::future::Future;
use std::io::ErrorKind;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix::prelude::*;
use bytes::{BufMut, BytesMut};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use switchyard_proto::secure::{Opener, Session};

use crate::conn::{write_now, SharedConn, Wrote};
use crate::peer::Peer;

const MIN_READ: usize = 2 * 1024;
const MAX_READ: usize = 256 * 1024;
/// Bytes moved in a row after which the driver lets the arbiter run other work and
/// poll its sockets (at a few GB/s, every ~100 µs).
const STREAK_LIMIT: usize = 256 << 10;
/// Earlier read buffers kept for reuse while their slices are with the services.
const SPARE_BUFFERS: usize = 4;

/// Where a read went.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReadInto {
    /// The read buffer, as much as it had room for.
    ReadBuffer,
    /// The read buffer, no more than the core's hint.
    Hinted,
    /// Straight into a message the core lent (already handed back).
    Message,
    /// The ciphertext buffer of an encrypted connection.
    Cipher,
}

pub(crate) struct Driver {
    conn: SharedConn,
    io: Arc<TcpStream>,
    rbuf: BytesMut,
    /// Earlier read buffers, reused once every message sliced from them is dropped
    /// (fresh allocations cost page faults).
    spares: Vec<BytesMut>,
    next_read: usize,
    batch: usize,
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
    read_done: bool,
    /// Data was read since the socket was last found empty.
    got_data: bool,
    shut: bool,
    /// Decrypts what is read (`None` in plaintext); ciphertext waits in `cbuf`.
    opener: Option<Opener>,
    cbuf: BytesMut,
    /// Bytes read during the transport handshake wait to be fed to the core.
    leftover: bool,
}

impl Driver {
    /// A driver for `io`, encrypting and decrypting with `session` when there is one;
    /// `rest` holds what was read past the transport handshake.
    pub(crate) fn new(
        conn: SharedConn,
        io: TcpStream,
        batch: usize,
        session: Option<Session>,
        rest: BytesMut,
    ) -> Self {
        let io = Arc::new(io);
        conn.set_io(io.clone());
        let leftover = !rest.is_empty();
        let (opener, rbuf, cbuf) = match session {
            Some(s) => {
                conn.lock().sealer = Some(s.sealer);
                (Some(s.opener), BytesMut::new(), rest)
            }
            None => (None, rest, BytesMut::new()),
        };
        Driver {
            conn,
            io,
            opener,
            cbuf,
            leftover,
            rbuf,
            spares: Vec::new(),
            next_read: MIN_READ,
            batch,
            timer: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            timer_at: None,
            read_done: false,
            got_data: false,
            shut: false,
        }
    }

    /// One read, fed to the core. `Some(bytes)` when something happened.
    ///
    /// When the next bytes of the stream are the payload of a large message being put
    /// together, the core lends that message's buffer and they are read straight into
    /// it; the read after such a payload takes no more than the core's hint (the next
    /// packet header), so the next payload is not copied through the read buffer.
    fn read(&mut self, cx: &mut Context<'_>) -> Option<usize> {
        if self.read_done {
            return None;
        }
        if std::mem::take(&mut self.leftover) {
            // Read with the transport handshake: fed as if just read.
            let (n, into) = if self.opener.is_some() {
                (self.cbuf.len(), ReadInto::Cipher)
            } else {
                (self.rbuf.len(), ReadInto::ReadBuffer)
            };
            return self.consume(Ok(n.max(1)), into);
        }
        let (result, into) = loop {
            match self.io.poll_read_ready(cx) {
                Poll::Pending => {
                    if std::mem::take(&mut self.got_data) {
                        // Everything the socket held is read: the core's windows
                        // learn that this receiver keeps up.
                        self.conn.lock().core.handle_drained(Instant::now());
                    }
                    return None;
                }
                Poll::Ready(Err(e)) => break (Err(e), ReadInto::ReadBuffer),
                Poll::Ready(Ok(())) => {}
            }
            let (lent, hint) = {
                let mut inner = self.conn.lock();
                if self.opener.is_none() && self.rbuf.is_empty() {
                    (inner.core.take_read_buffer(), inner.core.read_hint())
                } else {
                    (None, None)
                }
            };
            let (result, into) = if let Some((mut buf, most)) = lent {
                let result = self.io.try_read_buf(&mut (&mut buf).limit(most));
                // The buffer goes back whatever the read did.
                self.conn
                    .lock()
                    .core
                    .handle_direct_read(Instant::now(), buf);
                (result, ReadInto::Message)
            } else if self.opener.is_some() {
                if self.cbuf.capacity() - self.cbuf.len() < self.next_read / 2 {
                    // Reclaims the space of frames already opened (nothing else
                    // holds this buffer).
                    self.cbuf.reserve(self.next_read);
                }
                (self.io.try_read_buf(&mut self.cbuf), ReadInto::Cipher)
            } else {
                if self.rbuf.capacity() - self.rbuf.len() < self.next_read / 2 {
                    self.grow_read_buffer(self.next_read);
                }
                match hint {
                    Some(most) => (
                        self.io.try_read_buf(&mut (&mut self.rbuf).limit(most)),
                        ReadInto::Hinted,
                    ),
                    None => (self.io.try_read_buf(&mut self.rbuf), ReadInto::ReadBuffer),
                }
            };
            match result {
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                r => break (r, into),
            }
        };
        self.consume(result, into)
    }

    /// Feeds the core what a read brought.
    fn consume(&mut self, result: std::io::Result<usize>, into: ReadInto) -> Option<usize> {
        let now = Instant::now();
        if let (Ok(n), true) = (&result, self.opener.is_some()) {
            let opened = if *n > 0 {
                self.open_frames(now)
            } else if self.cbuf.is_empty() {
                Ok(())
            } else {
                Err(switchyard_proto::secure::SecureError::TruncatedFrame)
            };
            if let Err(e) = opened {
                self.read_done = true;
                self.conn.lock().core.handle_transport_error(now, e.into());
                return Some(0);
            }
        }
        let mut inner = self.conn.lock();
        match result {
            Ok(0) => {
                self.read_done = true;
                inner.core.handle_eof(now, &mut self.rbuf);
                Some(0)
            }
            Ok(n) if into == ReadInto::Message => {
                self.got_data = true;
                Some(n)
            }
            Ok(n) => {
                log::trace!("read {n}");
                self.got_data = true;
                inner.core.handle_read(now, &mut self.rbuf);
                drop(inner);
                // Grow reads that fill the buffer; shrink back when traffic is light,
                // and give an idle connection's large buffer back. (A read cut short
                // by a hint says nothing about the traffic.)
                if matches!(into, ReadInto::ReadBuffer | ReadInto::Cipher) {
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
            Err(e) => {
                self.read_done = true;
                inner.core.handle_io_error(now, &e.to_string());
                Some(0)
            }
        }
    }

    /// Decrypts every whole frame read so far. A frame that holds nothing but payload
    /// of the large message being put together (the sender gives such payloads frames
    /// of their own) is decrypted straight into that message's buffer; any other goes
    /// into the read buffer, which the core parses at once, so that it knows what the
    /// next frame carries.
    fn open_frames(&mut self, now: Instant) -> Result<(), switchyard_proto::secure::SecureError> {
        let Some(mut opener) = self.opener.take() else {
            return Ok(());
        };
        let opened = self.open_frames_with(&mut opener, now);
        self.opener = Some(opener);
        opened
    }

    fn open_frames_with(
        &mut self,
        opener: &mut Opener,
        now: Instant,
    ) -> Result<(), switchyard_proto::secure::SecureError> {
        while let Some(len) = Opener::whole_frame(&self.cbuf)? {
            let mut inner = self.conn.lock();
            let lent = if self.rbuf.is_empty() {
                inner.core.take_read_buffer()
            } else {
                None
            };
            match lent {
                Some((mut buf, most)) if most >= len => {
                    let opened = opener.open_frame(&mut self.cbuf, &mut buf);
                    // The buffer goes back whatever the opening did.
                    inner.core.handle_direct_read(now, buf);
                    opened?;
                }
                lent => {
                    if let Some((buf, _)) = lent {
                        inner.core.handle_direct_read(now, buf);
                    }
                    drop(inner);
                    if self.rbuf.capacity() - self.rbuf.len() < len {
                        self.grow_read_buffer(len.max(self.next_read));
                    }
                    opener.open_frame(&mut self.cbuf, &mut self.rbuf)?;
                    self.conn.lock().core.handle_read(now, &mut self.rbuf);
                }
            }
        }
        Ok(())
    }

    /// Makes room for the next read: in place if every slice handed out from the
    /// buffer is gone, else in a spare buffer that is free again, else in a new one.
    fn grow_read_buffer(&mut self, want: usize) {
        if self.rbuf.try_reclaim(want) {
            return;
        }
        let keep = self.next_read == MAX_READ;
        let fresh = match self.spares.iter_mut().position(|s| s.try_reclaim(want)) {
            Some(i) => self.spares.swap_remove(i),
            None => BytesMut::with_capacity(want),
        };
        // The start of a packet not complete yet moves over (at most one packet).
        let mut old = std::mem::replace(&mut self.rbuf, fresh);
        self.rbuf.extend_from_slice(&old);
        if keep && self.spares.len() < SPARE_BUFFERS {
            old.clear();
            self.spares.push(old);
        }
        if !keep {
            self.spares.clear();
        }
    }

    /// Writes what the core hands out. `Some(bytes)` when something happened.
    fn write(&mut self, cx: &mut Context<'_>) -> Option<usize> {
        if self.shut {
            return None;
        }
        let now = Instant::now();
        let mut inner = self.conn.lock();
        if inner.writing {
            // A sender is writing inline; it wakes us if it leaves anything.
            return None;
        }
        if inner.transmit.is_empty() {
            let inner = &mut *inner;
            if !inner.fill_transmit(now, self.batch) {
                let shutdown = inner.core.poll_shutdown();
                inner.writer_idle = !shutdown;
                inner.shrink_if_idle();
                if shutdown {
                    self.shut = true;
                    // A shutdown that fails changes nothing we would do: the linger
                    // deadline ends the connection either way.
                    let _ = socket2::SockRef::from(&*self.io).shutdown(std::net::Shutdown::Write);
                    return Some(0);
                }
                return None;
            }
        }
        match self.io.poll_write_ready(cx) {
            Poll::Pending => return None,
            Poll::Ready(Err(e)) => {
                self.shut = true;
                inner.core.handle_io_error(now, &e.to_string());
                return Some(0);
            }
            Poll::Ready(Ok(())) => {}
        }
        inner.writing = true;
        let mut t = std::mem::take(&mut inner.transmit);
        drop(inner);
        let wrote = write_now(&self.io, &mut t);
        let mut inner = self.conn.lock();
        inner.writing = false;
        let done = t.is_empty();
        inner.transmit = t;
        match wrote {
            Wrote::Bytes(n) => {
                if done {
                    inner.core.handle_written(Instant::now());
                }
                Some(n)
            }
            Wrote::Failed(e) => {
                self.shut = true;
                inner.core.handle_io_error(now, &e.to_string());
                Some(0)
            }
        }
    }

    /// Fires the core's timer when due; re-arms it at the core's next deadline.
    fn timer(&mut self, cx: &mut Context<'_>) -> bool {
        let next = {
            let mut inner = self.conn.lock();
            let next = inner.core.poll_timeout();
            inner.armed = next;
            next
        };
        if next != self.timer_at {
            self.timer_at = next;
            if let Some(at) = next {
                self.timer.as_mut().reset(at.into());
            }
        }
        if self.timer_at.is_some() && self.timer.as_mut().poll(cx).is_ready() {
            self.timer_at = None;
            self.conn.lock().core.handle_timeout(Instant::now());
            return true;
        }
        false
    }
}

impl ActorFuture<Peer> for Driver {
    type Output = ();

    fn poll(
        self: Pin<&mut Self>,
        act: &mut Peer,
        ctx: &mut actix::Context<Peer>,
        task: &mut Context<'_>,
    ) -> Poll<()> {
        let this = self.get_mut();
        this.conn.register_driver(task.waker());
        let mut streak = 0;
        loop {
            let mut progress = false;
            if let Some(n) = this.read(task) {
                progress = true;
                streak += n;
            }
            if let Some(n) = this.write(task) {
                progress = true;
                streak += n;
            }
            progress |= this.timer(task);
            if act.on_core_events(ctx) {
                return Poll::Ready(());
            }
            if !progress {
                return Poll::Pending;
            }
            if streak >= STREAK_LIMIT {
                // Back after the runtime has polled its I/O driver: readiness that
                // arrived meanwhile (a pong, an urgent message from the remote) is
                // seen on the next pass. Waking ourselves at once would not let the
                // runtime look at its sockets until dozens of passes later.
                let mut later = std::pin::pin!(tokio::task::yield_now());
                let _ = later.as_mut().poll(task);
                return Poll::Pending;
            }
        }
    }
}
