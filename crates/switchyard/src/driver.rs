//! The driver: one connection's I/O, polled inside its Peer's actor context.
//!
//! It moves bytes and time between the socket and the [`PeerCore`](switchyard_proto::PeerCore)
//! and does nothing else: it performs the reads its `Reader` asks for, the writes and
//! the write-half shutdown its `Writer` asks for, and arms one timer where its `Drive`
//! says (all in `switchyard_proto`, which make every choice, giving the thread back
//! after a streak included). After each pass the Peer drains the core's events.
//!
//! Reads and writes are polled in the same pass, so a blocked write never stops the
//! reader (and the credit and pongs it brings); reading never waits for a service.
//! The socket is shared with the connection's senders, which write inline while the
//! driver has nothing to write (see [`conn`](crate::conn)); one writer at a time, in
//! order, through the shared `Writer`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix::prelude::*;
use bytes::{BufMut, BytesMut};
use tokio::net::TcpStream;
use tokio::time::Sleep;

use switchyard_proto::connection::drive::{AfterPass, Drive};
use switchyard_proto::connection::reader::Reader;
use switchyard_proto::connection::writer::WriteStep;
use switchyard_proto::secure::Session;

use crate::conn::SharedConn;
use crate::peer::Peer;

pub(crate) struct Driver {
    conn: SharedConn,
    io: Arc<TcpStream>,
    /// Where reads go, and what they feed the core.
    reader: Reader,
    timer: Pin<Box<Sleep>>,
    /// When to re-arm the timer, when to give the thread back.
    drive: Drive,
}

impl Driver {
    /// A driver for `io`, encrypting and decrypting with `session` when there is one;
    /// `rest` holds what was read past the transport handshake.
    pub(crate) fn new(
        conn: SharedConn,
        io: TcpStream,
        session: Option<Session>,
        rest: BytesMut,
    ) -> Self {
        let io = Arc::new(io);
        conn.set_io(io.clone());
        let (mut guard, now) = (conn.lock(), Instant::now());
        let inner = &mut *guard;
        let reader = Reader::start(session, rest, &mut inner.writer, &mut inner.core, now);
        drop(guard);
        Driver {
            conn,
            io,
            reader,
            timer: Box::pin(tokio::time::sleep_until(tokio::time::Instant::now())),
            drive: Drive::new(),
        }
    }

    /// One read, fed to the core (where it goes is the [`Reader`]'s choice). `Some(bytes)`
    /// when something happened.
    fn read(&mut self, cx: &mut Context<'_>) -> Option<usize> {
        while !self.reader.is_done() {
            let ready = self.io.poll_read_ready(cx);
            if ready.is_pending() {
                self.reader
                    .drained(&mut self.conn.lock().core, Instant::now());
                return None;
            }
            let mut target = self.reader.target(&mut self.conn.lock().core);
            let (buf, most) = self.reader.buffer(&mut target);
            // (A socket that failed: the reader gives the target back and ends.)
            let result = match ready {
                Poll::Ready(Err(e)) => Err(e),
                _ => self.io.try_read_buf(&mut buf.limit(most)),
            };
            let core = &mut self.conn.lock().core;
            let read = self.reader.complete(core, Instant::now(), target, result);
            if read.is_some() {
                return read;
            }
        }
        None
    }

    /// Writes what the core hands out (what and when is the
    /// [`Writer`](switchyard_proto::connection::writer::Writer)'s choice).
    /// `Some(bytes)` when something happened.
    fn write(&mut self, cx: &mut Context<'_>) -> Option<usize> {
        let now = Instant::now();
        let mut guard = self.conn.lock();
        let inner = &mut *guard;
        let batch = inner.core.limits().write_batch_bytes;
        match inner.writer.poll(&mut inner.core, now, batch) {
            WriteStep::Write => {}
            WriteStep::Idle | WriteStep::Busy | WriteStep::Done => return None,
            WriteStep::Shutdown => {
                // A shutdown that fails changes nothing we would do: the linger
                // deadline ends the connection either way.
                let _ = socket2::SockRef::from(&*self.io).shutdown(std::net::Shutdown::Write);
                return Some(0);
            }
        }
        match self.io.poll_write_ready(cx) {
            Poll::Pending => return None,
            Poll::Ready(Err(e)) => return Some(inner.writer.fail(&mut inner.core, now, &e)),
            Poll::Ready(Ok(())) => {}
        }
        let mut t = inner.writer.take();
        drop(guard);
        let wrote = crate::socket::write_now(&self.io, &mut t);
        let mut guard = self.conn.lock();
        let inner = &mut *guard;
        inner
            .writer
            .complete(&mut inner.core, Instant::now(), t, wrote)
    }

    /// Fires the core's timer when due; re-arms it at the core's next deadline (when
    /// is the [`Drive`]'s choice).
    fn timer(&mut self, cx: &mut Context<'_>) -> bool {
        let rearm = {
            let mut guard = self.conn.lock();
            let inner = &mut *guard;
            self.drive.arm(&inner.core, &mut inner.writer)
        };
        if let Some(at) = rearm {
            self.timer.as_mut().reset(at.into());
        }
        if !self.drive.is_armed() || self.timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        self.drive.fire(&mut self.conn.lock().core, Instant::now());
        true
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
        this.drive.begin();
        loop {
            let (read, wrote, fired) = (this.read(task), this.write(task), this.timer(task));
            if act.on_core_events(ctx) {
                return Poll::Ready(());
            }
            match this.drive.after_pass(read, wrote, fired) {
                AfterPass::Again => {}
                AfterPass::Sleep => return Poll::Pending,
                AfterPass::Yield => {
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
}
