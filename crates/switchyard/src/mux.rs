//! The Mux actor: owns the write half of one connection and writes what the
//! scheduler chooses.
//!
//! The write loop takes chunks from the proto [`Scheduler`](switchyard_proto::scheduler::Scheduler)
//! in priority order into one batch until the queues run dry or the batch passes
//! `write_batch_bytes`, then writes it (a single `write` for many small messages, no
//! fixed delay). Small packets are copied together; large payloads are written from
//! the queued `Bytes` by a vectored write, without a copy. The socket's own backpressure holds the loop, the queues fill, and
//! `send` waits: no buffer on this path is unbounded. The Mux runs in its own actor
//! context so that a Peer waiting on a slow service never delays pongs or queued
//! messages.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use switchyard_proto::codec::{put_msg_header, TYPE_PING, TYPE_PONG};
use switchyard_proto::rate::TokenBucket;
use switchyard_proto::scheduler::Chunk;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;

use crate::outbound::Outbound;
use crate::peer::{MuxDone, Peer};

pub(crate) struct Mux {
    out: Arc<Outbound>,
    io: Option<OwnedWriteHalf>,
    peer: Addr<Peer>,
    batch: usize,
    send_rate: Option<u64>,
    linger: Duration,
    task: Option<SpawnHandle>,
    lingering: bool,
}

impl Mux {
    pub(crate) fn new(
        io: OwnedWriteHalf,
        out: Arc<Outbound>,
        peer: Addr<Peer>,
        batch: usize,
        send_rate: Option<u64>,
        linger: Duration,
    ) -> Self {
        Mux {
            out,
            io: Some(io),
            peer,
            batch,
            send_rate,
            linger,
            task: None,
            lingering: false,
        }
    }
}

impl Actor for Mux {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let Some(io) = self.io.take() else {
            return;
        };
        let rate = self
            .send_rate
            .map(|r| TokenBucket::new(Instant::now(), r, (r / 10).max(self.batch as u64)));
        let fut = write_loop(self.out.clone(), io, self.batch, rate);
        self.task = Some(ctx.spawn(fut.into_actor(self).map(|res, act, ctx| {
            act.task = None;
            act.peer.do_send(MuxDone(res.map_err(|e| e.to_string())));
            ctx.stop();
        })));
    }
}

/// The connection is closing: cut the write loop if it has not finished after
/// `linger` (a remote that stopped reading cannot hold a closing connection open).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Linger;

impl Handler<Linger> for Mux {
    type Result = ();

    fn handle(&mut self, _: Linger, ctx: &mut Self::Context) {
        if std::mem::replace(&mut self.lingering, true) {
            return;
        }
        ctx.run_later(self.linger, |act, ctx| {
            if let Some(task) = act.task.take() {
                ctx.cancel_future(task);
                act.peer.do_send(MuxDone(Err(
                    "linger expired before the queue was written".into()
                )));
            }
            ctx.stop();
        });
    }
}

/// Payloads at least this long are written from where they were queued (a vectored
/// write) instead of being copied into the batch buffer.
const COPY_THRESHOLD: usize = 4 << 10;

/// Most slices handed to one vectored write (Linux allows 1024).
const MAX_IOVECS: usize = 64;

/// One write's worth of packets: small packets copied together into `buf`, large
/// payloads kept as the queued `Bytes` between them, in wire order.
struct Batch {
    buf: BytesMut,
    parts: VecDeque<Bytes>,
    len: usize,
}

impl Batch {
    fn new() -> Self {
        Batch {
            buf: BytesMut::new(),
            parts: VecDeque::new(),
            len: 0,
        }
    }

    fn put_u8(&mut self, byte: u8) {
        self.buf.put_u8(byte);
        self.len += 1;
    }

    fn put_slice(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.len += bytes.len();
    }

    fn push_chunk(&mut self, chunk: Chunk) {
        self.len += chunk.encoded_len();
        if chunk.payload.len() < COPY_THRESHOLD {
            chunk.encode(&mut self.buf);
            return;
        }
        put_msg_header(
            &mut self.buf,
            chunk.channel,
            chunk.eof,
            chunk.kind,
            chunk.payload.len(),
        );
        self.seal();
        self.parts.push_back(chunk.payload);
    }

    /// Moves the copied bytes so far into `parts` (no copy: a split of `buf`).
    fn seal(&mut self) {
        if !self.buf.is_empty() {
            self.parts.push_back(self.buf.split().freeze());
        }
    }

    /// Writes everything, in order, with as few system calls as the socket allows.
    async fn write_to(&mut self, io: &mut OwnedWriteHalf) -> std::io::Result<()> {
        self.seal();
        while !self.parts.is_empty() {
            let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
            let mut count = 0;
            for (slot, part) in slices.iter_mut().zip(self.parts.iter()) {
                *slot = IoSlice::new(part);
                count += 1;
            }
            let mut written = io.write_vectored(&slices[..count]).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while written > 0 {
                let Some(front) = self.parts.front_mut() else {
                    break;
                };
                if front.len() <= written {
                    written -= front.len();
                    self.parts.pop_front();
                } else {
                    front.advance(written);
                    written = 0;
                }
            }
        }
        self.len = 0;
        Ok(())
    }
}

async fn write_loop(
    out: Arc<Outbound>,
    mut io: OwnedWriteHalf,
    batch_limit: usize,
    mut rate: Option<TokenBucket>,
) -> std::io::Result<()> {
    let mut batch = Batch::new();
    let mut touched: Vec<u8> = Vec::new();
    loop {
        let mut finish = false;
        let mut ping = false;
        {
            let mut st = out.lock();
            if std::mem::take(&mut st.pong_due) {
                batch.put_u8(TYPE_PONG);
            }
            if std::mem::take(&mut st.ping_due) {
                batch.put_u8(TYPE_PING);
                ping = true;
            }
            while batch.len < batch_limit {
                let Some(chunk) = st.sched.poll_chunk() else {
                    break;
                };
                if !touched.contains(&chunk.channel) {
                    touched.push(chunk.channel);
                }
                batch.push_chunk(chunk);
            }
            if batch.len == 0 {
                if st.closed && st.sched.is_empty() {
                    if let Some(goodbye) = st.goodbye.take() {
                        batch.put_slice(&goodbye);
                    }
                    finish = true;
                } else {
                    st.writer_idle = true;
                }
            }
        }
        for channel in touched.drain(..) {
            out.room_freed(channel);
        }
        if batch.len == 0 && !finish {
            // An idle connection keeps no large buffer (memory per idle peer).
            if batch.buf.capacity() > 4 * 1024 {
                batch.buf = BytesMut::new();
            }
            out.writer.notified().await;
            continue;
        }
        if batch.len > 0 {
            let len = batch.len as u64;
            batch.write_to(&mut io).await?;
            if ping {
                let mut st = out.lock();
                st.pings_written = st.pings_written.saturating_add(1);
            }
            if let Some(until) = rate.as_mut().and_then(|r| r.consume(Instant::now(), len)) {
                tokio::time::sleep_until(until.into()).await;
            } else if len >= batch_limit as u64 {
                // A streak of full batches into a socket with room never returns
                // Pending, and tokio's cooperative budget would let this loop run for
                // 128 writes (tens of MB) before the arbiter's other actors, such as
                // the Peer reading a pong on the same thread, get a turn.
                tokio::task::yield_now().await;
            }
        }
        if finish {
            io.shutdown().await?;
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use switchyard_proto::codec::{Msg, MsgKind, Packet, PacketCodec};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_util::codec::FramedRead;

    /// Small and large chunks mixed, written through small socket buffers so that
    /// vectored writes end part-way through slices, arrive byte-exact and in order.
    #[tokio::test]
    async fn batch_writes_copied_and_borrowed_chunks_in_order() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        // Small kernel buffers: the writes cannot take a batch at once.
        socket2::SockRef::from(&client)
            .set_send_buffer_size(32 << 10)
            .unwrap();
        socket2::SockRef::from(&server)
            .set_recv_buffer_size(32 << 10)
            .unwrap();
        let (_, mut wr) = client.into_split();

        let chunks: Vec<Chunk> = (0..200u32)
            .map(|i| {
                let len = if i % 3 == 0 {
                    20_000 + i as usize
                } else {
                    1 + i as usize
                };
                Chunk {
                    channel: (i % 5 + 1) as u8,
                    eof: i % 2 == 0,
                    kind: MsgKind::Plain,
                    payload: Bytes::from(vec![i as u8; len]),
                }
            })
            .collect();
        let expected: Vec<Packet> = chunks
            .iter()
            .map(|c| {
                Packet::Msg(Msg {
                    channel: c.channel,
                    eof: c.eof,
                    kind: c.kind,
                    payload: c.payload.clone(),
                })
            })
            .collect();

        let reader = tokio::spawn(async move {
            let mut frames = FramedRead::new(server, PacketCodec::new(64 << 10));
            let mut got: Vec<Packet> = Vec::new();
            while let Some(p) = frames.next().await {
                got.push(p.unwrap());
            }
            got
        });
        let mut batch = Batch::new();
        batch.put_u8(TYPE_PING);
        for chunk in chunks {
            batch.push_chunk(chunk);
        }
        let total = batch.len;
        assert!(
            batch.parts.len() > 1,
            "large payloads are kept as their own slices"
        );
        batch.write_to(&mut wr).await.unwrap();
        assert_eq!(batch.len, 0);
        assert!(batch.parts.is_empty());
        assert!(total > 1_000_000);
        wr.shutdown().await.unwrap();
        drop(wr);

        let got = reader.await.unwrap();
        assert_eq!(got.first(), Some(&Packet::Ping));
        assert_eq!(&got[1..], &expected[..]);
    }
}
