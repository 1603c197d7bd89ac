//! The read side of a connection as a stream of packet batches: one batch per socket
//! read, so a Peer can hand everything one read produced to a service at once.
//!
//! The read buffer adapts to traffic: it starts small (an idle peer costs little
//! memory) and grows to large reads under load. A batch holds at most
//! `MAX_BATCH_PACKETS` packets; a read that brings more is handed over in several.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures_util::task::AtomicWaker;
use futures_util::Stream;
use switchyard_proto::codec::{CodecError, Packet, PacketCodec};
use tokio::io::AsyncRead;
use tokio::net::tcp::OwnedReadHalf;
use tokio_util::codec::Decoder;
use tokio_util::io::poll_read_buf;

const MIN_READ: usize = 2 * 1024;
const MAX_READ: usize = 256 * 1024;

/// Most packets in one batch: a read of 256 KiB of one-byte packets would otherwise
/// become a 12 MiB vector of decoded packets. The rest stay in the buffer (as bytes)
/// for the next batch.
const MAX_BATCH_PACKETS: usize = 4096;

/// Bytes read in a row (the socket never empty) after which the reader lets the
/// arbiter run its other actors once. Without it, a connection under bulk load keeps
/// its thread for 16 batches at a time (actix's per-stream limit), and the Muxes and
/// Peers sharing the thread wait behind several megabytes.
const STREAK_LIMIT: usize = 1 << 20;

/// Every packet decoded from one read, and how many bytes the read brought.
pub(crate) struct ReadBatch {
    pub(crate) packets: Vec<Packet>,
    pub(crate) bytes: usize,
}

/// Stops and restarts a [`PacketReader`] from its Peer: while paused the reader
/// yields nothing (the socket fills and TCP pushes back), and the Peer's actor stays
/// free for its mailbox and timers.
#[derive(Default)]
pub(crate) struct ReadGate {
    paused: AtomicBool,
    waker: AtomicWaker,
}

impl ReadGate {
    pub(crate) fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
    }

    pub(crate) fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        self.waker.wake();
    }

    /// Whether the reader must wait; registers `cx` to be woken on resume.
    fn must_wait(&self, cx: &Context<'_>) -> bool {
        if !self.paused.load(Ordering::SeqCst) {
            return false;
        }
        self.waker.register(cx.waker());
        // Resumed in between: go on (the wake may have gone to the old waker).
        self.paused.load(Ordering::SeqCst)
    }
}

pub(crate) struct PacketReader<R = OwnedReadHalf> {
    io: R,
    gate: Arc<ReadGate>,
    buf: BytesMut,
    codec: PacketCodec,
    next_read: usize,
    /// Bytes read since the socket last had nothing to read.
    streak: usize,
    /// Bytes read and not yet reported in a batch (for the receive rate).
    unreported: usize,
    done: bool,
}

impl<R: AsyncRead + Unpin> PacketReader<R> {
    pub(crate) fn new(io: R, codec: PacketCodec, gate: Arc<ReadGate>) -> Self {
        PacketReader {
            io,
            gate,
            buf: BytesMut::new(),
            codec,
            next_read: MIN_READ,
            streak: 0,
            unreported: 0,
            done: false,
        }
    }
}

impl<R: AsyncRead + Unpin> Stream for PacketReader<R> {
    type Item = Result<ReadBatch, CodecError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        if this.gate.must_wait(cx) {
            return Poll::Pending;
        }
        if this.streak >= STREAK_LIMIT {
            this.streak = 0;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        loop {
            // What is already buffered goes first, a bounded batch at a time.
            let mut packets = Vec::new();
            while packets.len() < MAX_BATCH_PACKETS {
                match this.codec.decode(&mut this.buf) {
                    Ok(Some(p)) => packets.push(p),
                    Ok(None) => break,
                    Err(e) => {
                        this.done = true;
                        return Poll::Ready(Some(Err(e)));
                    }
                }
            }
            if this.buf.is_empty() && this.buf.capacity() > 4 * MAX_READ {
                this.buf = BytesMut::new();
            }
            if !packets.is_empty() {
                let bytes = std::mem::take(&mut this.unreported);
                return Poll::Ready(Some(Ok(ReadBatch { packets, bytes })));
            }
            if this.buf.capacity() - this.buf.len() < this.next_read / 2 {
                this.buf.reserve(this.next_read);
            }
            let n = match poll_read_buf(Pin::new(&mut this.io), cx, &mut this.buf) {
                Poll::Pending => {
                    this.streak = 0;
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Ok(n)) => n,
            };
            if n == 0 {
                // Every complete packet was decoded above: what is left is a
                // truncated packet (an error) or nothing.
                this.done = true;
                return match this.codec.decode_eof(&mut this.buf) {
                    Ok(None) => Poll::Ready(None),
                    Ok(Some(p)) => {
                        this.done = false;
                        let bytes = std::mem::take(&mut this.unreported);
                        Poll::Ready(Some(Ok(ReadBatch {
                            packets: vec![p],
                            bytes,
                        })))
                    }
                    Err(e) => Poll::Ready(Some(Err(e))),
                };
            }
            this.unreported += n;
            this.streak += n;
            // Grow reads that fill the buffer; shrink back when traffic is light.
            this.next_read = if n >= this.next_read {
                (this.next_read * 2).min(MAX_READ)
            } else {
                (n * 2).clamp(MIN_READ, MAX_READ)
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    use switchyard_proto::codec::TYPE_PING;

    use super::*;

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A socket that always has data gives up its thread once per `STREAK_LIMIT`
    /// bytes (and asks to be polled again), and loses nothing by doing so.
    #[test]
    fn a_read_streak_yields_and_resumes() {
        let input = vec![TYPE_PING; 3 * STREAK_LIMIT + 10];
        let mut reader = PacketReader::new(&input[..], PacketCodec::new(1024), Arc::default());
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        let (mut pings, mut yields) = (0, 0);
        loop {
            match Pin::new(&mut reader).poll_next(&mut cx) {
                Poll::Ready(Some(Ok(batch))) => {
                    assert!(batch.packets.iter().all(|p| *p == Packet::Ping));
                    pings += batch.packets.len();
                }
                Poll::Ready(Some(Err(e))) => panic!("{e}"),
                Poll::Ready(None) => break,
                Poll::Pending => {
                    yields += 1;
                    assert_eq!(counter.0.load(Ordering::Relaxed), yields, "woken to resume");
                }
            }
        }
        assert_eq!(pings, input.len());
        // Reads overshoot the limit a little, so the last streak may end at EOF.
        assert!((2..=3).contains(&yields), "{yields} yields");
    }

    /// One read of many tiny packets is handed over in bounded batches, nothing lost,
    /// and the bytes are reported once for the receive rate.
    #[test]
    fn batches_are_bounded_in_packets() {
        let input = vec![TYPE_PING; 3 * MAX_BATCH_PACKETS + 7];
        let mut reader = PacketReader::new(&input[..], PacketCodec::new(1024), Arc::default());
        let waker = Waker::from(Arc::new(CountingWaker(AtomicUsize::new(0))));
        let mut cx = Context::from_waker(&waker);
        let (mut pings, mut bytes, mut largest) = (0, 0, 0);
        loop {
            match Pin::new(&mut reader).poll_next(&mut cx) {
                Poll::Ready(Some(Ok(batch))) => {
                    largest = largest.max(batch.packets.len());
                    pings += batch.packets.len();
                    bytes += batch.bytes;
                }
                Poll::Ready(Some(Err(e))) => panic!("{e}"),
                Poll::Ready(None) => break,
                Poll::Pending => {}
            }
        }
        assert_eq!(pings, input.len());
        assert_eq!(bytes, input.len());
        assert!(largest <= MAX_BATCH_PACKETS, "{largest}");
    }
}
