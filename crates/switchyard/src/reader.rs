//! The read side of a connection as a stream of packet batches: one batch per socket
//! read, so a Peer can hand everything one read produced to a service at once.
//!
//! The read buffer adapts to traffic: it starts small (an idle peer costs little
//! memory) and grows to large reads under load.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use futures_util::Stream;
use switchyard_proto::codec::{CodecError, Packet, PacketCodec};
use tokio::io::AsyncRead;
use tokio::net::tcp::OwnedReadHalf;
use tokio_util::codec::Decoder;
use tokio_util::io::poll_read_buf;

const MIN_READ: usize = 2 * 1024;
const MAX_READ: usize = 256 * 1024;

/// Every packet decoded from one read, and how many bytes the read brought.
pub(crate) struct ReadBatch {
    pub(crate) packets: Vec<Packet>,
    pub(crate) bytes: usize,
}

pub(crate) struct PacketReader<R = OwnedReadHalf> {
    io: R,
    buf: BytesMut,
    codec: PacketCodec,
    next_read: usize,
    done: bool,
}

impl<R: AsyncRead + Unpin> PacketReader<R> {
    pub(crate) fn new(io: R, codec: PacketCodec) -> Self {
        PacketReader {
            io,
            buf: BytesMut::new(),
            codec,
            next_read: MIN_READ,
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
        let mut bytes = 0;
        loop {
            if this.buf.capacity() - this.buf.len() < this.next_read / 2 {
                this.buf.reserve(this.next_read);
            }
            let n = match poll_read_buf(Pin::new(&mut this.io), cx, &mut this.buf) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => {
                    this.done = true;
                    return Poll::Ready(Some(Err(e.into())));
                }
                Poll::Ready(Ok(n)) => n,
            };
            if n == 0 {
                this.done = true;
                return match this.codec.decode_eof(&mut this.buf) {
                    Ok(None) => Poll::Ready(None),
                    Ok(Some(p)) => {
                        // A whole packet was left without a read to carry it (cannot
                        // happen: packets are decoded after every read), hand it over.
                        this.done = false;
                        Poll::Ready(Some(Ok(ReadBatch {
                            packets: vec![p],
                            bytes,
                        })))
                    }
                    Err(e) => Poll::Ready(Some(Err(e))),
                };
            }
            bytes += n;
            // Grow reads that fill the buffer; shrink back when traffic is light.
            this.next_read = if n >= this.next_read {
                (this.next_read * 2).min(MAX_READ)
            } else {
                (n * 2).clamp(MIN_READ, MAX_READ)
            };
            let mut packets = Vec::new();
            loop {
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
                return Poll::Ready(Some(Ok(ReadBatch { packets, bytes })));
            }
        }
    }
}
