//! The actix ceiling: how many `Addr::send` messages per second one actor can hand to
//! another on a different arbiter, with a bounded number in flight — the most any
//! per-message delivery on actix can reach on this machine.

use std::time::Instant;

use actix::prelude::*;
use futures_util::stream::{FuturesUnordered, StreamExt};

use super::BenchOptions;

/// Messages in flight, like a service mailbox of this capacity.
const IN_FLIGHT: usize = 64;

#[derive(Message)]
#[rtype(result = "()")]
struct Item(#[allow(dead_code)] u64);

struct Sink;

impl Actor for Sink {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(IN_FLIGHT);
    }
}

impl Handler<Item> for Sink {
    type Result = ();
    fn handle(&mut self, _: Item, _: &mut Self::Context) {}
}

/// Messages per second through `Addr::send` between two arbiters.
pub async fn actix_ceiling(opts: &BenchOptions) -> f64 {
    let n = opts.scale(2_000_000);
    let arbiter = Arbiter::new();
    let sink = Sink::start_in_arbiter(&arbiter.handle(), |_| Sink);
    let t0 = Instant::now();
    let mut inflight = FuturesUnordered::new();
    for i in 0..n {
        if inflight.len() >= IN_FLIGHT {
            let _ = inflight.next().await;
        }
        inflight.push(sink.send(Item(i)));
    }
    while inflight.next().await.is_some() {}
    let rate = n as f64 / t0.elapsed().as_secs_f64();
    arbiter.stop();
    rate
}
