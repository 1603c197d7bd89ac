//! Handing a channel's messages to its service, in rounds: the core says what goes
//! next ([`PeerCore::handout`]), the runtime offers it to the service's mailbox
//! without waiting (outside any lock: decoding happens there), and reports what the
//! mailbox did with it ([`PeerCore::handle_handout`]), which says whether to go on.
//!
//! The choices the core makes are these.
//!
//! * **Payloads in batches where the service takes them.** A service that takes the
//!   payloads of plain messages in batches gets them straight from the channel's
//!   queue, with no message made of each ([`Handout::Payloads`]). A request or an
//!   answer goes message by message ([`Handout::Messages`]), and so does everything for
//!   any other service.
//! * **One hand-over at a time.** A full mailbox leaves one message or batch in the
//!   runtime's hand ([`Delivered::Full`]); the rest go back to the front of the queue,
//!   and the channel hands out nothing more until that one is taken
//!   ([`PeerCore::handle_handover`]), so its messages stay in order. Only that channel
//!   waits.
//! * **Credit goes back for what the mailbox took**, and for the hand-over once it is
//!   taken.
//! * **A message the service cannot read** (undecodable, or a request on a channel for
//!   plain messages) closes the connection with the reason the runtime gives.

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use super::{Message, PeerCore};
use crate::reason::DisconnectReason;

/// What goes to a channel's service next (from [`PeerCore::handout`]).
#[derive(Debug)]
#[must_use]
pub enum Handout<P> {
    /// Nothing: the queue is empty, or a hand-over waits for room.
    Nothing,
    /// The payloads of the next plain messages, for `to`, the taker of payload
    /// batches the runtime offered.
    Payloads {
        /// The runtime's taker of payload batches.
        to: P,
        /// The payloads, oldest first.
        payloads: Vec<Bytes>,
        /// Their credit cost (what waits if the mailbox is full).
        cost: u64,
    },
    /// The next messages are at the back of the runtime's queue, to hand over in order.
    Messages,
}

/// What a service's mailbox did with a handout (reported with
/// [`PeerCore::handle_handout`]); `W` is the runtime's wait for room.
#[derive(Debug)]
pub enum Delivered<W> {
    /// It took all of it (or the service is gone and it was dropped).
    All,
    /// The mailbox is full: `wait` hands over the one message or batch in hand, which
    /// costs `cost` credit; the messages left in the runtime's queue were not offered.
    Full {
        /// Credit cost of what is in hand.
        cost: u64,
        /// Resolves once the mailbox took it (or the service stopped).
        wait: W,
    },
}

/// What the runtime does after a handout (from [`PeerCore::handle_handout`]).
#[derive(Debug)]
#[must_use]
pub enum AfterHandout<W> {
    /// Ask for the next handout.
    More,
    /// Wait on this for room in the mailbox, then report with
    /// [`PeerCore::handle_handover`] and deliver the channel again.
    Wait(W),
    /// Stop delivering: the connection is closing (the core has been told why).
    Stop,
}

impl PeerCore {
    /// What goes next to `channel`'s service: at most `batch` messages, as payloads
    /// for `payloads` (the runtime's taker of payload batches, if the service has one)
    /// while they are plain messages, else as messages moved to the back of `msgs`.
    pub fn handout<P>(
        &mut self,
        channel: u8,
        batch: usize,
        payloads: Option<P>,
        msgs: &mut VecDeque<Message>,
    ) -> Handout<P> {
        if self.is_handing_over(channel) {
            return Handout::Nothing;
        }
        if let Some(to) = payloads {
            let mut out = Vec::with_capacity(batch);
            let cost = self.recv_payloads(channel, batch, &mut out);
            if !out.is_empty() {
                return Handout::Payloads {
                    to,
                    payloads: out,
                    cost,
                };
            }
        }
        self.recv_many(channel, batch.saturating_sub(msgs.len()), msgs);
        if msgs.is_empty() {
            Handout::Nothing
        } else {
            Handout::Messages
        }
    }

    /// What `channel`'s mailbox did with the last [`handout`](Self::handout) at `now`:
    /// the messages it was not offered (left in `unsent`) go back to the front of the
    /// queue, credit goes back for what it took, and a hand-over in hand pauses the
    /// channel. `Err`: the service could not read a message, and the connection is
    /// closed for that reason (what is left in `unsent` is dropped).
    pub fn handle_handout<W>(
        &mut self,
        now: Instant,
        channel: u8,
        unsent: &mut VecDeque<Message>,
        delivered: Result<Delivered<W>, DisconnectReason>,
    ) -> AfterHandout<W> {
        match delivered {
            Err(reason) => {
                self.close(now, reason, false);
                AfterHandout::Stop
            }
            Ok(Delivered::All) => {
                self.handle_delivered(now, channel, unsent.drain(..), 0);
                AfterHandout::More
            }
            Ok(Delivered::Full { cost, wait }) => {
                self.handle_delivered(now, channel, unsent.drain(..), cost);
                AfterHandout::Wait(wait)
            }
        }
    }
}
