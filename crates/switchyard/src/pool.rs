//! The arbiter pool: threads that run the Peer actors and their connections' I/O,
//! chosen round-robin.
//!
//! One actix arbiter is one thread with its own event loop; spreading connections over
//! one arbiter per core lets a node use every core for decoding and writing.

use actix::{Arbiter, ArbiterHandle};

pub(crate) struct ArbiterPool {
    arbiters: Vec<Arbiter>,
    next: usize,
}

impl ArbiterPool {
    /// Starts `n` arbiters (at least one).
    pub(crate) fn new(n: usize) -> Self {
        ArbiterPool {
            arbiters: (0..n.max(1)).map(|_| Arbiter::new()).collect(),
            next: 0,
        }
    }

    /// The arbiter for the next connection.
    pub(crate) fn next(&mut self) -> ArbiterHandle {
        let i = self.next % self.arbiters.len();
        self.next = self.next.wrapping_add(1);
        self.arbiters[i].handle()
    }

    pub(crate) fn len(&self) -> usize {
        self.arbiters.len()
    }

    /// Asks every arbiter to stop once its current work is done.
    pub(crate) fn stop(&self) {
        for a in &self.arbiters {
            a.stop();
        }
    }
}
