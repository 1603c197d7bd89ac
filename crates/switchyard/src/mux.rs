//! The Mux actor: owns the write half of one connection and writes what the
//! scheduler chooses.
//!
//! The write loop takes chunks from the proto [`Scheduler`](switchyard_proto::scheduler::Scheduler)
//! in priority order into one buffer until the queues run dry or the buffer passes
//! `write_batch_bytes`, then writes it (a single `write` for many small messages, no
//! fixed delay). The socket's own backpressure holds the loop, the queues fill, and
//! `send` waits: no buffer on this path is unbounded. The Mux runs in its own actor
//! context so that a Peer waiting on a slow service never delays pongs or queued
//! messages.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytes::{BufMut, BytesMut};
use switchyard_proto::codec::{TYPE_PING, TYPE_PONG};
use switchyard_proto::rate::TokenBucket;
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

async fn write_loop(
    out: Arc<Outbound>,
    mut io: OwnedWriteHalf,
    batch: usize,
    mut rate: Option<TokenBucket>,
) -> std::io::Result<()> {
    let mut buf = BytesMut::new();
    let mut touched: Vec<u8> = Vec::new();
    loop {
        let mut finish = false;
        {
            let mut st = out.lock();
            if std::mem::take(&mut st.pong_due) {
                buf.put_u8(TYPE_PONG);
            }
            if std::mem::take(&mut st.ping_due) {
                buf.put_u8(TYPE_PING);
            }
            while buf.len() < batch {
                let Some(chunk) = st.sched.poll_chunk() else {
                    break;
                };
                if !touched.contains(&chunk.channel) {
                    touched.push(chunk.channel);
                }
                chunk.encode(&mut buf);
            }
            if buf.is_empty() {
                if st.closed && st.sched.is_empty() {
                    if let Some(goodbye) = st.goodbye.take() {
                        buf.extend_from_slice(&goodbye);
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
        if buf.is_empty() && !finish {
            if buf.capacity() > 4 * 1024 {
                buf = BytesMut::new();
            }
            out.writer.notified().await;
            continue;
        }
        if !buf.is_empty() {
            io.write_all(&buf).await?;
            if let Some(until) = rate
                .as_mut()
                .and_then(|r| r.consume(Instant::now(), buf.len() as u64))
            {
                tokio::time::sleep_until(until.into()).await;
            }
            buf.clear();
        }
        if finish {
            io.shutdown().await?;
            return Ok(());
        }
    }
}
