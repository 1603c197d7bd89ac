//! Per-channel, credit-based flow control: receive windows, the credit granted back,
//! window autotuning, and the node-wide budget that bounds them all.
//!
//! # What credit counts
//!
//! Credit is counted in **message bytes**: a `Msg` chunk costs its payload length, and
//! the last chunk of a message (EOF) costs [`MESSAGE_COST`] more. So a whole message of
//! `n` bytes costs `n + 32` however it was cut ([`message_cost`]), an empty message still
//! costs 32, and both ends compute every cost the same way. Channel 0 (control) is not
//! flow controlled: the core consumes its messages as they arrive, and they are
//! bounded in size and in kind.
//!
//! # The receiver's window
//!
//! Each channel a node receives on has a window `W`. The receiver tracks, in cost:
//! `granted` (credit given so far), `received` and `consumed` (taken by the service).
//! It keeps `granted − consumed ≤ W`: at any moment the bytes of the channel that sit
//! in our buffers (complete messages waiting for the service, or a partial message
//! being reassembled) plus those the remote may still send are at most `W`.
//!
//! * **Initial credit.** A channel's window opens when its service is offered or
//!   accepted on channel 0, and the initial window travels in that message (see
//!   [`services`](super::services)): a sender has credit from the moment it learns the
//!   channel. A channel of a service that is not up on the connection has no window:
//!   sends on it fail locally and never reach the wire, and data on it closes the
//!   sender.
//! * **When credit goes back.** As the service takes messages (the runtime reports each
//!   one the service's mailbox accepted), `consumed` grows; once `consumed + W −
//!   granted` reaches `W/4`, the difference is granted in one `Credit` packet (at
//!   once, whatever the amount, when the remote has used its credit in the middle of
//!   a message: the rest of that message cannot come without it). The
//!   mailbox is bounded, so returning credit when the mailbox accepts a message (rather
//!   than when the handler has run) keeps memory bounded without a message back from
//!   the service's thread for every delivery; batching grants by `W/4` keeps credit
//!   packets to a few per window.
//! * **A stalled service stalls only its channel.** Its complete messages stay
//!   unconsumed, no credit returns, and the sender stops sending on that channel once
//!   its credit is spent. The reader never pauses: pings, control and every other
//!   channel go on.
//! * **Overrun.** A remote that sends more than it was granted is closed with
//!   [`DisconnectReason::CreditExceeded`].
//!
//! # Autotuning
//!
//! Windows start at `recv_window` and may grow to `max_recv_window` (and at least to
//! the channel's largest message plus its cost, so that any allowed message can
//! complete). When credit is about to be granted and the remote has used almost all
//! of what it had (`granted − received ≤ W/8`: everything we allowed has arrived,
//! so the link is faster than the window lets it be) while the service keeps up
//! (complete unconsumed messages `≤ W/4`), the window doubles — but only while the
//! window is what limits the transfer: once the connection's round-trip time is known
//! (from the handshake, then the smallest keepalive round trip), a window doubles
//! only if the service took a whole window in less than [`GROW_RTTS`] round trips.
//! (A window-limited transfer turns a window over in one round trip plus the window's
//! time on the wire, and credit goes back in quarters; eight round trips let a
//! window grow to a few times the path's bandwidth-delay product, which a transfer
//! needs to run at the link's rate.)
//! A window that takes longer to turn over is not the bottleneck (the link, the
//! receiver's CPU or the service is), and growing it would only park more bulk in the
//! socket buffers ahead of urgent messages of other channels. Nor is a window whose
//! receiver never found its socket empty while it turned over (the runtime reports
//! each time it read everything, [`RecvFlow::on_drained`]): that receiver's CPU is
//! the bottleneck, data already waits for it in the kernel, and a larger window would
//! only make the wait longer. From [`TRIAL_PACKETS`] full packets up, each growth for
//! speed is a trial: once the larger window has turned over, it must have moved data
//! at least [`GROWTH_GAIN`] times faster than the one before, or it is undone (credit simply goes back against the smaller
//! window; nothing is reclaimed) and growth rests for [`GROW_HOLD`]. On loopback,
//! where a "round trip" is a few thread wake-ups, this is what keeps a bulk channel
//! from parking megabytes ahead of other channels' urgent messages for no gain. (The round trip is
//! what a connection measured, so a receiver whose CPU is the bottleneck but turns
//! windows over within a few round trips still sees them grow.) A message larger
//! than the window gets through too: when its declared size does not fit the window
//! and nothing complete is waiting for the service, the window grows to fit two
//! messages of that size (within `max_recv_window`; one, at least), and no further.
//! Room for one alone would make a stream of such messages stop and wait: the next
//! could not start before the service took this one and its credit came back, and
//! the link would idle for that round trip at every message (on loopback with 1 MiB
//! messages, the sender waited once per message). With two, the next streams in
//! while the service takes this one. (A message that fits needs nothing more: the
//! credit of the bytes before it comes back as the service takes them.) Growth beyond the
//! initial window is leased from the node-wide [`RecvBudget`], a doubling at a time or
//! whatever is left (a message must be able to complete however tight the budget).
//! When the budget is empty, the channel waits (retrying every [`GROW_RETRY`]);
//! nothing is closed.
//!
//! When a channel has received nothing for `recv_window_idle`, its window shrinks back
//! to the initial size: the receiver sends `Reclaim` for the unused credit beyond it,
//! the sender answers `Release` with what it gives back (ordered after any data it
//! sent with that credit, so both ends agree on the total), and the lease goes back
//! to the node's budget. An idle peer therefore holds only its initial windows.
//!
//! # Memory
//!
//! The bytes held for a connection on its channels, partial messages included, are
//! at most the sum of its windows: the initial ones, plus what is leased from the
//! node budget, which all connections share. A partial message is at most its
//! channel's largest message, and the config requires the reassembly budget to hold
//! one on every channel at once, so partial messages cannot deadlock each other.
//!
//! Messages a service's mailbox has accepted are the service's, not the connection's:
//! their credit has gone back. What they hold is bounded by the mailbox (actix's
//! default is 16 messages; a batched channel puts up to `recv_capacity` messages in
//! each), so a service that stops consuming holds at most its mailbox's worth on top
//! of its channel's window.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::rate::TokenBucket;
use crate::reason::DisconnectReason;
use crate::wire::codec::Packet;

/// Credit a message costs beyond its payload bytes (charged on its last chunk).
pub const MESSAGE_COST: u64 = 32;

/// How long a window that needs to grow, and cannot for lack of budget, waits before
/// trying again.
pub const GROW_RETRY: Duration = Duration::from_millis(50);

/// A window grows for speed only if the service took a whole window within this many
/// round trips (see the [module docs](self)).
pub const GROW_RTTS: u32 = 8;

/// How much faster a window grown for speed must turn over data than the one before
/// it to be kept.
pub const GROWTH_GAIN: f64 = 1.25;

/// Windows smaller than this many packets' payloads (1 MiB with 64 KiB packets, so a
/// window holding one 1 MiB message is tried) grow on the turnover rules alone; from
/// there each growth for speed is a trial (see the [module docs](self)).
pub const TRIAL_PACKETS: u64 = 16;

/// How long a window whose growth did not pay waits before growing again.
pub const GROW_HOLD: Duration = Duration::from_secs(1);

/// Smallest growth worth taking when the budget cannot give a whole doubling.
pub const MIN_GROWTH: u64 = 16 << 10;

/// The credit cost of a whole message of `len` bytes.
#[must_use]
pub fn message_cost(len: usize) -> u64 {
    (len as u64).saturating_add(MESSAGE_COST)
}

/// The node-wide receive budget: how many bytes of window growth, beyond each
/// channel's initial window, all connections of a node may hold together.
///
/// Shared by every [`PeerCore`](super::PeerCore) of a node (an atomic counter, no
/// lock). A core releases what it leased when its windows shrink and when it is
/// dropped.
#[derive(Debug)]
pub struct RecvBudget {
    capacity: u64,
    remaining: AtomicU64,
}

impl RecvBudget {
    /// A budget of `bytes`.
    #[must_use]
    pub fn new(bytes: u64) -> Self {
        RecvBudget {
            capacity: bytes,
            remaining: AtomicU64::new(bytes),
        }
    }

    /// Takes `n` bytes if they are all available.
    #[must_use]
    pub fn lease(&self, n: u64) -> bool {
        self.remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(n)
            })
            .is_ok()
    }

    /// Takes as much as is available up to `most`, if that is at least `least`;
    /// returns what was taken (0 when less than `least` was available).
    #[must_use]
    pub fn lease_up_to(&self, least: u64, most: u64) -> u64 {
        let mut taken = 0;
        let _ = self
            .remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                taken = left.min(most);
                (taken >= least && taken > 0).then(|| left - taken)
            });
        if taken >= least {
            taken
        } else {
            0
        }
    }

    /// Gives `n` leased bytes back.
    pub fn release(&self, n: u64) {
        let _ = self
            .remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                Some(left.saturating_add(n).min(self.capacity))
            });
    }

    /// Bytes not leased now.
    #[must_use]
    pub fn remaining(&self) -> u64 {
        self.remaining.load(Ordering::Acquire)
    }

    /// The whole budget.
    #[must_use]
    pub fn capacity(&self) -> u64 {
        self.capacity
    }
}

/// The partial message on a channel, as flow control sees it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PartialCost {
    /// Credit cost of the bytes buffered so far.
    pub held: u64,
    /// Credit cost of the whole message once complete (its declared size plus
    /// [`MESSAGE_COST`]); 0 when there is no partial message.
    pub whole: u64,
}

/// Sizes of one receiving channel's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    /// The channel.
    pub channel: u8,
    /// Window at the start, and after an idle shrink.
    pub initial: u64,
    /// Largest window autotuning may reach.
    pub max: u64,
    /// Largest window one partial message needs by itself: the cost of the channel's
    /// largest message (growth for a partial always reaches this far, whatever `max`).
    pub need_max: u64,
}

/// What one receiving channel's window looks like now (for tests and introspection).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WindowStats {
    /// Current window.
    pub window: u64,
    /// Credit granted so far.
    pub granted: u64,
    /// Cost received so far.
    pub received: u64,
    /// Cost consumed by the service so far.
    pub consumed: u64,
    /// Bytes of this window leased from the node budget.
    pub leased: u64,
}

#[derive(Debug)]
struct Window {
    channel: u8,
    initial: u64,
    max: u64,
    need_max: u64,
    window: u64,
    granted: u64,
    received: u64,
    consumed: u64,
    /// Bytes of credit a `Reclaim` asked back, until its `Release` arrives.
    reclaiming: Option<u64>,
    leased: u64,
    /// `consumed` when the window last grew, or when a turnover too slow to grow for
    /// was last seen.
    consumed_at_growth: u64,
    /// When `consumed_at_growth` was set.
    turnover_since: Instant,
    /// The runtime found the socket empty since `turnover_since`: the receiver
    /// waited for data, so it is not what limits the transfer.
    drained: bool,
    /// After a growth for speed: the window before it, and the rate (bytes per
    /// second) at which that window turned over, until the larger one has turned
    /// over once and shown it moves data faster.
    trial: Option<(u64, f64)>,
    /// A growth that did not pay was undone: no new one before this.
    hold_until: Option<Instant>,
    /// Last data received or consumed on this channel.
    last_activity: Instant,
    /// A partial message was buffered when last looked at (such a window is not idle).
    partial_held: bool,
}

impl Window {
    fn commitment(&self) -> u64 {
        self.granted.saturating_sub(self.consumed)
    }
}

/// The receive side of flow control for one connection (see the [module docs](self)).
#[derive(Debug)]
pub struct RecvFlow {
    windows: Vec<Window>,
    index: [u8; 256],
    /// Credit a sender needs for one full packet: less unused credit than this
    /// may leave it blocked.
    packet: u64,
    budget: Arc<RecvBudget>,
    idle: Duration,
    rate: Option<TokenBucket>,
    /// When the receive rate, or a failed growth, next allows progress.
    retry_at: Option<Instant>,
    /// Smallest round-trip time seen on the connection, once known.
    min_rtt: Option<Duration>,
}

const NONE: u8 = u8::MAX;

impl RecvFlow {
    /// Windows for `channels` of a connection whose packets carry at most
    /// `max_packet_payload` bytes, leasing growth from `budget`; windows shrink after
    /// `idle` without data; `recv_rate` (bytes per second) bounds the credit granted
    /// after the initial windows.
    #[must_use]
    pub fn new(
        now: Instant,
        max_packet_payload: usize,
        channels: &[WindowConfig],
        budget: Arc<RecvBudget>,
        idle: Duration,
        recv_rate: Option<u64>,
    ) -> Self {
        let mut flow = RecvFlow {
            windows: Vec::with_capacity(channels.len()),
            index: [NONE; 256],
            packet: message_cost(max_packet_payload),
            budget,
            idle,
            rate: None,
            retry_at: None,
            min_rtt: None,
        };
        for c in channels {
            flow.insert(now, c);
        }
        let largest = channels.iter().map(|c| c.initial).max().unwrap_or(0);
        flow.rate = recv_rate.map(|r| TokenBucket::new(now, r, largest.max(r / 10).max(1)));
        flow
    }

    /// Adds a window (none if `channel` has one already, or 255 exist).
    fn insert(&mut self, now: Instant, c: &WindowConfig) -> bool {
        if self.index[usize::from(c.channel)] != NONE {
            return false;
        }
        let Ok(pos) = u8::try_from(self.windows.len()) else {
            return false;
        };
        if pos == NONE {
            return false;
        }
        self.index[usize::from(c.channel)] = pos;
        let initial = c.initial.max(1);
        self.windows.push(Window {
            channel: c.channel,
            initial,
            max: c.max.max(initial),
            need_max: c.need_max,
            window: initial,
            granted: 0,
            received: 0,
            consumed: 0,
            reclaiming: None,
            leased: 0,
            consumed_at_growth: 0,
            turnover_since: now,
            drained: false,
            trial: None,
            hold_until: None,
            last_activity: now,
            partial_held: false,
        });
        true
    }

    /// Opens a window for a channel whose service came up on the connection, and
    /// grants its initial credit at once: returns that credit (0 when the channel
    /// already has a window, or 255 exist). The grant travels in the service's
    /// channel-0 message, not as a `Credit` packet.
    pub fn open(&mut self, now: Instant, c: &WindowConfig) -> u64 {
        if !self.insert(now, c) {
            return 0;
        }
        let Some(w) = self.get_mut(c.channel) else {
            return 0;
        };
        w.granted = w.window;
        w.granted
    }

    /// Closes `channel`'s window (its service went away on either side): data on it
    /// is unknown from now on, and its lease goes back to the node budget.
    pub fn close(&mut self, channel: u8) {
        let i = self.index[usize::from(channel)];
        if i == NONE {
            return;
        }
        self.index[usize::from(channel)] = NONE;
        let w = self.windows.swap_remove(usize::from(i));
        self.budget.release(w.leased);
        if let Some(moved) = self.windows.get(usize::from(i)) {
            self.index[usize::from(moved.channel)] = i;
        }
    }

    /// The runtime read everything the socket held: until the next turnover of each
    /// window, the receiver is known to wait for data (see the [module docs](self)).
    pub fn on_drained(&mut self) {
        for w in &mut self.windows {
            w.drained = true;
        }
    }

    /// A round-trip time was measured (the handshake, a pong): the smallest one seen
    /// paces window growth (see the [module docs](self)).
    pub fn on_rtt(&mut self, rtt: Duration) {
        self.min_rtt = Some(self.min_rtt.map_or(rtt, |m| m.min(rtt)));
    }

    fn get(&self, channel: u8) -> Option<&Window> {
        let i = self.index[usize::from(channel)];
        self.windows.get(usize::from(i))
    }

    fn get_mut(&mut self, channel: u8) -> Option<&mut Window> {
        let i = self.index[usize::from(channel)];
        self.windows.get_mut(usize::from(i))
    }

    /// Whether `channel` is received on.
    #[must_use]
    pub fn has_channel(&self, channel: u8) -> bool {
        self.get(channel).is_some()
    }

    /// The window of `channel`, as it stands.
    #[must_use]
    pub fn stats(&self, channel: u8) -> Option<WindowStats> {
        self.get(channel).map(|w| WindowStats {
            window: w.window,
            granted: w.granted,
            received: w.received,
            consumed: w.consumed,
            leased: w.leased,
        })
    }

    /// Sum over channels of received and not yet consumed cost.
    #[must_use]
    pub fn buffered(&self) -> u64 {
        self.windows
            .iter()
            .map(|w| w.received.saturating_sub(w.consumed))
            .sum()
    }

    /// Grants every channel its initial window at once (the unit tests' start; a
    /// connection grants each window as its service is offered: [`open`](Self::open)).
    #[cfg(test)]
    fn initial_grants(&mut self, out: &mut impl FnMut(Packet)) {
        for w in &mut self.windows {
            let amount = w.window.saturating_sub(w.granted);
            w.granted += amount;
            emit_credit(w.channel, amount, out);
        }
    }

    /// `cost` bytes of data arrived on `channel`.
    pub fn on_data(
        &mut self,
        now: Instant,
        channel: u8,
        cost: u64,
    ) -> Result<(), DisconnectReason> {
        let Some(w) = self.get_mut(channel) else {
            return Err(DisconnectReason::UnknownChannel(channel));
        };
        w.received = w.received.saturating_add(cost);
        w.last_activity = now;
        if w.received > w.granted {
            return Err(DisconnectReason::CreditExceeded {
                channel,
                received: w.received,
                granted: w.granted,
            });
        }
        Ok(())
    }

    /// The service took `cost` bytes of messages of `channel`.
    pub fn on_consumed(&mut self, now: Instant, channel: u8, cost: u64) {
        if let Some(w) = self.get_mut(channel) {
            w.consumed = w.consumed.saturating_add(cost).min(w.received);
            w.last_activity = now;
        }
        self.settle(channel);
    }

    /// The remote answered our `Reclaim` on `channel` with `bytes`.
    pub fn on_release(&mut self, channel: u8, bytes: u32) -> Result<(), DisconnectReason> {
        let Some(w) = self.get_mut(channel) else {
            return Err(DisconnectReason::FlowControl(format!(
                "Release on channel {channel:#04x}, which we do not receive on"
            )));
        };
        let bytes = u64::from(bytes);
        let Some(asked) = w.reclaiming.take() else {
            return Err(DisconnectReason::FlowControl(format!(
                "Release on channel {channel:#04x} without a Reclaim"
            )));
        };
        if bytes > asked || w.granted.saturating_sub(bytes) < w.received {
            return Err(DisconnectReason::FlowControl(format!(
                "Release of {bytes} bytes on channel {channel:#04x}: {asked} were asked, {} unused",
                w.granted.saturating_sub(w.received)
            )));
        }
        w.granted -= bytes;
        w.window = w.initial.max(w.commitment()).min(w.window);
        self.settle(channel);
        Ok(())
    }

    /// Gives back to the node budget what `channel` no longer needs: its lease covers
    /// only the larger of its window and its commitment, beyond the initial window.
    fn settle(&mut self, channel: u8) {
        let budget = self.budget.clone();
        if let Some(w) = self.get_mut(channel) {
            let needed = w
                .window
                .max(w.commitment())
                .saturating_sub(w.initial)
                .min(w.leased);
            if needed < w.leased {
                budget.release(w.leased - needed);
                w.leased = needed;
            }
        }
    }

    /// Credit (and `Reclaim`) packets due now. `partial(channel)` describes the
    /// partial message buffered on a channel.
    pub fn poll_grants(
        &mut self,
        now: Instant,
        partial: impl Fn(u8) -> PartialCost,
        out: &mut impl FnMut(Packet),
    ) {
        if self.retry_at.is_some_and(|t| t <= now) {
            self.retry_at = None;
        }
        for i in 0..self.windows.len() {
            let Some(w) = self.windows.get_mut(i) else {
                continue;
            };
            let buffered = w.received.saturating_sub(w.consumed);
            let unused = w.granted.saturating_sub(w.received);
            let held_partial = partial(w.channel);
            let complete = buffered.saturating_sub(held_partial.held);
            // Grow when the remote used (nearly) all its credit and either the service
            // took a whole window since the last growth, or a partial message cannot
            // complete within the window and nothing complete is waiting (see the
            // module docs).
            let mut grew = false;
            let exhausted = unused <= (w.window / 8).max(self.packet);
            // Room for the partial message and the next of its size (see the module
            // docs), and for this one whatever the bound.
            let fits = held_partial
                .whole
                .saturating_mul(2)
                .min(w.max)
                .max(held_partial.whole.min(w.need_max));
            let need = held_partial.held > 0 && fits > w.window && complete == 0;
            let mut turned_over = w.consumed.saturating_sub(w.consumed_at_growth) >= w.window;
            let mut trial = None;
            if turned_over && !need {
                let took = now.saturating_duration_since(w.turnover_since);
                let rate = w.window as f64 / took.as_secs_f64().max(1e-9);
                // A larger window that did not move data faster than the one before
                // is undone (no reclaim: credit simply goes back against the smaller
                // window), and growth rests for a while.
                let paid = w.trial.take().is_none_or(|(before, before_rate)| {
                    if rate >= before_rate * GROWTH_GAIN {
                        return true;
                    }
                    w.window = before;
                    w.hold_until = Some(now + GROW_HOLD);
                    false
                });
                let slow = self.min_rtt.is_some_and(|rtt| took > rtt * GROW_RTTS);
                let held = w.hold_until.is_some_and(|t| now < t);
                if !paid || slow || !w.drained || held {
                    // Not the bottleneck: start a new measurement instead of growing.
                    w.consumed_at_growth = w.consumed;
                    w.turnover_since = now;
                    w.drained = false;
                    turned_over = false;
                } else {
                    let payload = self.packet.saturating_sub(MESSAGE_COST);
                    let floor = payload.saturating_mul(TRIAL_PACKETS);
                    trial = (w.window >= floor).then_some((w.window, rate));
                }
            }
            if w.window < w.max && w.reclaiming.is_none() && exhausted && (need || turned_over) {
                loop {
                    let mut most = w.max.min(w.window.saturating_mul(2)) - w.window;
                    if need {
                        most = most.min(fits.saturating_sub(w.window));
                    }
                    // A partial message waiting to complete takes any amount; speed
                    // growth is only worth a fair step.
                    let least = if need {
                        1
                    } else {
                        MIN_GROWTH.min(w.window / 8).max(1)
                    };
                    let delta = if most == 0 {
                        0
                    } else {
                        self.budget.lease_up_to(least.min(most), most)
                    };
                    if delta == 0 {
                        if need {
                            let at = now + GROW_RETRY;
                            self.retry_at = Some(self.retry_at.map_or(at, |t| t.min(at)));
                        }
                        break;
                    }
                    w.window += delta;
                    w.leased += delta;
                    grew = true;
                    // A shrunk window may need several doublings before a partial
                    // message gets any credit; speed growth is one step per window.
                    if !need || w.consumed.saturating_add(w.window) > w.granted {
                        break;
                    }
                }
                if grew {
                    w.consumed_at_growth = w.consumed;
                    w.turnover_since = now;
                    w.drained = false;
                    w.trial = if need { None } else { trial };
                }
            }
            let target = w.consumed.saturating_add(w.window);
            let due = target.saturating_sub(w.granted);
            // Credit goes back in quarters of the window, except to a remote that
            // used its credit in the middle of a message: it waits for the rest.
            let stuck = exhausted && held_partial.held > 0;
            if due == 0 || (!grew && !stuck && due < (w.window / 4).max(1)) {
                continue;
            }
            let amount = match self.rate.as_mut() {
                None => due,
                Some(rate) => {
                    let allowed = rate.available(now).min(due);
                    if allowed < due {
                        let at = rate.ready_at(now, (due - allowed).min(w.window / 4).max(1));
                        self.retry_at = Some(self.retry_at.map_or(at, |t| t.min(at)));
                    }
                    rate.take(now, allowed);
                    allowed
                }
            };
            w.granted += amount;
            emit_credit(w.channel, amount, out);
        }
        self.poll_reclaims(now, &partial, out);
    }

    /// Shrinks the windows idle for `idle` (nothing received or consumed, no partial
    /// message waiting) back to their initial size.
    fn poll_reclaims(
        &mut self,
        now: Instant,
        partial: &impl Fn(u8) -> PartialCost,
        out: &mut impl FnMut(Packet),
    ) {
        for i in 0..self.windows.len() {
            let Some(w) = self.windows.get_mut(i) else {
                continue;
            };
            w.partial_held = partial(w.channel).held > 0;
            if w.window <= w.initial
                || w.reclaiming.is_some()
                || now < w.last_activity + self.idle
                || w.partial_held
            {
                continue;
            }
            let channel = w.channel;
            w.window = w.initial;
            let unused = w.granted.saturating_sub(w.received);
            let excess = w.commitment().saturating_sub(w.initial).min(unused);
            let asked = u32::try_from(excess).unwrap_or(u32::MAX);
            if asked > 0 {
                w.reclaiming = Some(u64::from(asked));
                out(Packet::Reclaim {
                    channel,
                    bytes: asked,
                });
            }
            self.settle(channel);
        }
    }

    /// The deadline of [`poll_timeout`](Self::poll_timeout) passed: shrinks idle
    /// windows and retries held-back credit now, so the deadline moves on even when
    /// nothing can be written (the packets wait in `out`).
    pub fn handle_timeout(
        &mut self,
        now: Instant,
        partial: impl Fn(u8) -> PartialCost,
        out: &mut impl FnMut(Packet),
    ) {
        self.poll_grants(now, partial, out);
    }

    /// The earliest instant at which [`poll_grants`](Self::poll_grants) may have
    /// something new to do without any other input: a window to shrink, or credit the
    /// receive rate or the budget held back.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        let shrink = self
            .windows
            .iter()
            .filter(|w| w.window > w.initial && w.reclaiming.is_none() && !w.partial_held)
            .map(|w| w.last_activity + self.idle)
            .min();
        match (shrink, self.retry_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Bytes leased from the node budget by this connection.
    #[must_use]
    pub fn leased(&self) -> u64 {
        self.windows.iter().map(|w| w.leased).sum()
    }
}

impl Drop for RecvFlow {
    fn drop(&mut self) {
        self.budget.release(self.leased());
    }
}

fn emit_credit(channel: u8, mut amount: u64, out: &mut impl FnMut(Packet)) {
    while amount > 0 {
        let bytes = u32::try_from(amount).unwrap_or(u32::MAX);
        out(Packet::Credit { channel, bytes });
        amount -= u64::from(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Instant {
        #[allow(clippy::disallowed_methods)]
        Instant::now()
    }

    const IDLE: Duration = Duration::from_secs(1);

    fn flow(t: Instant, budget: u64) -> (RecvFlow, Arc<RecvBudget>) {
        let budget = Arc::new(RecvBudget::new(budget));
        let cfg = [WindowConfig {
            channel: 1,
            initial: 1000,
            max: 8000,
            need_max: 8000,
        }];
        (
            RecvFlow::new(t, 100, &cfg, budget.clone(), IDLE, None),
            budget,
        )
    }

    /// Grants due with `partial` bytes buffered of a message of the channel's
    /// largest size, for a receiver that keeps up (it just read everything).
    fn grants(f: &mut RecvFlow, now: Instant, partial: u64) -> Vec<Packet> {
        f.on_drained();
        let mut out = Vec::new();
        let cost = PartialCost {
            held: partial,
            whole: if partial > 0 { 8000 } else { 0 },
        };
        f.poll_grants(now, |_| cost, &mut |p| out.push(p));
        out
    }

    #[test]
    fn credit_returns_as_the_service_consumes_in_quarters() {
        let t = t0();
        let (mut f, _) = flow(t, 0);
        let mut out = Vec::new();
        f.initial_grants(&mut |p| out.push(p));
        assert_eq!(
            out,
            vec![Packet::Credit {
                channel: 1,
                bytes: 1000
            }]
        );
        f.on_data(t, 1, 600).unwrap();
        f.on_consumed(t, 1, 200);
        assert!(grants(&mut f, t, 0).is_empty(), "200 is below a quarter");
        f.on_consumed(t, 1, 100);
        assert_eq!(
            grants(&mut f, t, 0),
            vec![Packet::Credit {
                channel: 1,
                bytes: 300
            }]
        );
        assert_eq!(
            f.on_data(t, 1, 701),
            Err(DisconnectReason::CreditExceeded {
                channel: 1,
                received: 1301,
                granted: 1300
            })
        );
        assert_eq!(f.on_data(t, 9, 1), Err(DisconnectReason::UnknownChannel(9)));
    }

    #[test]
    fn grows_when_the_remote_used_its_credit_and_the_service_keeps_up() {
        let t = t0();
        let (mut f, budget) = flow(t, 100_000);
        f.initial_grants(&mut |_| {});
        f.on_data(t, 1, 1000).unwrap();
        f.on_consumed(t, 1, 1000);
        assert_eq!(
            grants(&mut f, t, 0),
            vec![Packet::Credit {
                channel: 1,
                bytes: 2000
            }]
        );
        assert_eq!(f.stats(1).unwrap().window, 2000);
        assert_eq!(budget.remaining(), 99_000);
        // A stalled service: the credit is used but nothing is consumed. No growth.
        f.on_data(t, 1, 2000).unwrap();
        assert!(grants(&mut f, t, 0).is_empty());
        assert_eq!(f.stats(1).unwrap().window, 2000);
    }

    #[test]
    fn a_receiver_that_never_empties_its_socket_does_not_grow_its_windows() {
        let t = t0();
        let (mut f, budget) = flow(t, 100_000);
        f.initial_grants(&mut |_| {});
        // The whole window taken at once, but data was always waiting in the socket:
        // this receiver is the bottleneck. Credit goes back, the window stays.
        f.on_data(t, 1, 1000).unwrap();
        f.on_consumed(t, 1, 1000);
        let mut out = Vec::new();
        f.poll_grants(t, |_| PartialCost::default(), &mut |p| out.push(p));
        assert_eq!(
            out,
            vec![Packet::Credit {
                channel: 1,
                bytes: 1000
            }]
        );
        assert_eq!(f.stats(1).unwrap().window, 1000);
        assert_eq!(budget.remaining(), 100_000);
        // The next window turns over with the socket found empty: it doubles.
        f.on_data(t, 1, 1000).unwrap();
        f.on_consumed(t, 1, 1000);
        assert_eq!(
            grants(&mut f, t, 0),
            vec![Packet::Credit {
                channel: 1,
                bytes: 2000
            }]
        );
        assert_eq!(f.stats(1).unwrap().window, 2000);
    }

    #[test]
    fn a_growth_that_does_not_move_data_faster_is_undone() {
        let t = t0();
        let (mut f, _) = flow(t, 100_000);
        f.on_rtt(Duration::from_millis(1));
        f.initial_grants(&mut |_| {});
        let ms = Duration::from_millis;
        // A window turned over: whatever credit is left, taken and consumed.
        let turn = |f: &mut RecvFlow, now: Instant| {
            let w = f.stats(1).unwrap().window;
            let unused = f.stats(1).unwrap().granted - f.stats(1).unwrap().received;
            f.on_data(now, 1, unused.min(w)).unwrap();
            f.on_consumed(now, 1, unused.min(w));
            let _ = grants(f, now, 0);
        };
        let window = |f: &RecvFlow| f.stats(1).unwrap().window;
        // Below TRIAL_PACKETS packets (1,600 bytes here), fast turnovers grow it
        // outright.
        let mut now = t + ms(1);
        turn(&mut f, now);
        assert_eq!(window(&f), 2000);
        // From 2,000 to 4,000 is a trial...
        now += ms(1);
        turn(&mut f, now);
        assert_eq!(window(&f), 4000);
        // ...that fails: 4,000 bytes in 2 ms is the rate 2,000 had. Back to 2,000.
        now += ms(2);
        turn(&mut f, now);
        assert_eq!(window(&f), 2000);
        // While growth rests, fast turnovers do not grow it.
        now += ms(1);
        turn(&mut f, now);
        assert_eq!(window(&f), 2000);
        // Later it tries again, and a larger window that moves data faster stays.
        now += GROW_HOLD;
        turn(&mut f, now);
        now += ms(1);
        turn(&mut f, now);
        assert_eq!(window(&f), 4000);
        now += ms(1);
        turn(&mut f, now);
        assert_eq!(
            window(&f),
            8000,
            "twice the data in the same time: kept, and grown"
        );
    }

    #[test]
    fn with_a_known_round_trip_a_window_grows_only_when_it_turns_over_fast() {
        let t = t0();
        let (mut f, budget) = flow(t, 100_000);
        f.on_rtt(Duration::from_millis(10));
        f.on_rtt(Duration::from_millis(1)); // the smallest one counts
        f.initial_grants(&mut |_| {});
        // A whole window taken in more than GROW_RTTS round trips: the window is not
        // what limits the transfer, so it stays, and credit goes back as usual.
        let later = t + Duration::from_millis(1) * (GROW_RTTS + 2);
        f.on_data(later, 1, 1000).unwrap();
        f.on_consumed(later, 1, 1000);
        assert_eq!(
            grants(&mut f, later, 0),
            vec![Packet::Credit {
                channel: 1,
                bytes: 1000
            }]
        );
        assert_eq!(f.stats(1).unwrap().window, 1000);
        assert_eq!(budget.remaining(), 100_000);
        // The next window turns over within GROW_RTTS round trips: it doubles.
        let fast = later + Duration::from_millis(1) * (GROW_RTTS / 2);
        f.on_data(fast, 1, 1000).unwrap();
        f.on_consumed(fast, 1, 1000);
        assert_eq!(
            grants(&mut f, fast, 0),
            vec![Packet::Credit {
                channel: 1,
                bytes: 2000
            }]
        );
        assert_eq!(f.stats(1).unwrap().window, 2000);
    }

    #[test]
    fn a_partial_message_larger_than_the_window_makes_it_grow_to_the_max() {
        let t = t0();
        let (mut f, _) = flow(t, 100_000);
        f.initial_grants(&mut |_| {});
        let mut partial = 0;
        while partial < 7000 {
            let unused = f.stats(1).unwrap().granted - f.stats(1).unwrap().received;
            assert!(unused > 0, "the sender is never left without credit");
            f.on_data(t, 1, unused).unwrap();
            partial += unused;
            let _ = grants(&mut f, t, partial);
        }
        assert_eq!(f.stats(1).unwrap().window, 8000);
        // Without budget, it waits and tries again.
        let (mut g, budget) = flow(t, 0);
        g.initial_grants(&mut |_| {});
        g.on_data(t, 1, 1000).unwrap();
        assert!(grants(&mut g, t, 1000).is_empty());
        assert_eq!(budget.remaining(), 0);
        assert_eq!(g.poll_timeout(), Some(t + GROW_RETRY));
    }

    #[test]
    fn a_large_message_makes_room_for_the_next_of_its_size_too() {
        let t = t0();
        let budget = Arc::new(RecvBudget::new(100_000));
        let cfg = [WindowConfig {
            channel: 1,
            initial: 1000,
            max: 20_000,
            need_max: 20_000,
        }];
        let mut f = RecvFlow::new(t, 100, &cfg, budget, IDLE, None);
        f.initial_grants(&mut |_| {});
        // A message of 3000 starts and uses all the credit.
        f.on_data(t, 1, 1000).unwrap();
        let held = PartialCost {
            held: 1000,
            whole: 3000,
        };
        // As the sender uses its credit, the window doubles towards two messages.
        let mut partial = 1000;
        f.poll_grants(t, |_| held, &mut |_| {});
        while partial < 3000 {
            let w = f.stats(1).unwrap();
            let more = (w.granted - w.received).min(3000 - partial);
            f.on_data(t, 1, more).unwrap();
            partial += more;
            let held = PartialCost {
                held: partial,
                whole: 3000,
            };
            f.poll_grants(t, |_| held, &mut |_| {});
        }
        // The service takes it; the next message of 3000 starts.
        f.on_consumed(t, 1, 3000);
        f.on_data(t, 1, 1000).unwrap();
        let next = PartialCost {
            held: 1000,
            whole: 3000,
        };
        f.poll_grants(t, |_| next, &mut |_| {});
        let w = f.stats(1).unwrap();
        assert_eq!(w.window, 6000, "two messages of its size, and no more");
        // The sender can finish the next message without waiting for the service
        // to take the first.
        assert!(w.granted - w.received >= 2000);
        // Bounded by the largest window: here room for one and a half.
        let budget = Arc::new(RecvBudget::new(100_000));
        let cfg = [WindowConfig {
            max: 4500,
            need_max: 3032,
            ..cfg[0]
        }];
        let mut g = RecvFlow::new(t, 100, &cfg, budget, IDLE, None);
        g.initial_grants(&mut |_| {});
        for _ in 0..4 {
            let w = g.stats(1).unwrap();
            g.on_data(t, 1, w.granted - w.received).unwrap();
            let w = g.stats(1).unwrap();
            let held = PartialCost {
                held: w.received,
                whole: 3000,
            };
            g.poll_grants(t, |_| held, &mut |_| {});
        }
        assert_eq!(g.stats(1).unwrap().window, 4500);
    }

    #[test]
    fn a_message_of_the_whole_window_gets_the_rest_of_its_credit_and_room_for_the_next() {
        let t = t0();
        let (mut f, _) = flow(t, 100_000);
        f.initial_grants(&mut |_| {});
        let window = f.stats(1).unwrap().window;
        // A small message, taken by the service: less than a quarter to give back.
        let small = window / 5;
        f.on_data(t, 1, small).unwrap();
        f.on_consumed(t, 1, small);
        assert!(
            grants(&mut f, t, 0).is_empty(),
            "credit goes back in quarters"
        );
        // Then a message of the whole window: its start uses all the credit left.
        f.on_data(t, 1, window - small).unwrap();
        let mut out = Vec::new();
        let held = PartialCost {
            held: window - small,
            whole: window,
        };
        f.poll_grants(t, |_| held, &mut |p| out.push(p));
        assert_eq!(
            out,
            vec![Packet::Credit {
                channel: 1,
                bytes: (small + window) as u32
            }],
            "the rest of the message's credit comes at once, and room for the next"
        );
        assert_eq!(f.stats(1).unwrap().window, 2 * window);
    }

    #[test]
    fn the_node_budget_bounds_growth() {
        let t = t0();
        let (mut f, budget) = flow(t, 500);
        f.initial_grants(&mut |_| {});
        f.on_data(t, 1, 1000).unwrap();
        f.on_consumed(t, 1, 1000);
        assert_eq!(
            grants(&mut f, t, 0),
            vec![Packet::Credit {
                channel: 1,
                bytes: 1500
            }]
        );
        assert_eq!(
            f.stats(1).unwrap().window,
            1500,
            "no room to double: what was left"
        );
        assert_eq!(budget.remaining(), 0);
    }

    #[test]
    fn idle_windows_shrink_through_reclaim_and_release() {
        let t = t0();
        let (mut f, budget) = flow(t, 100_000);
        f.initial_grants(&mut |_| {});
        for _ in 0..3 {
            let s = f.stats(1).unwrap();
            f.on_data(t, 1, s.granted - s.received).unwrap();
            f.on_consumed(t, 1, s.granted - s.received);
            let _ = grants(&mut f, t, 0);
        }
        let s = f.stats(1).unwrap();
        assert_eq!(s.window, 8000);
        assert_eq!(budget.remaining(), 93_000);
        assert_eq!(f.poll_timeout(), Some(t + IDLE));
        let out = grants(&mut f, t + IDLE, 0);
        assert_eq!(
            out,
            vec![Packet::Reclaim {
                channel: 1,
                bytes: 7000
            }]
        );
        assert!(f.on_release(1, 7001).is_err(), "more than asked");
        // (The failed release consumed the reclaim; start over for the good case.)
        let (mut f, budget) = flow(t, 100_000);
        f.initial_grants(&mut |_| {});
        f.on_data(t, 1, 1000).unwrap();
        f.on_consumed(t, 1, 1000);
        let _ = grants(&mut f, t, 0);
        assert_eq!(f.stats(1).unwrap().window, 2000);
        let out = grants(&mut f, t + IDLE, 0);
        assert_eq!(
            out,
            vec![Packet::Reclaim {
                channel: 1,
                bytes: 1000
            }]
        );
        assert_eq!(
            budget.remaining(),
            99_000,
            "the lease waits for the release"
        );
        f.on_release(1, 1000).unwrap();
        assert_eq!(budget.remaining(), 100_000);
        let s = f.stats(1).unwrap();
        assert_eq!(
            (s.window, s.granted - s.consumed, s.leased),
            (1000, 1000, 0)
        );
        assert!(
            matches!(f.on_release(1, 0), Err(DisconnectReason::FlowControl(_))),
            "a release nobody asked for"
        );
        drop(f);
        assert_eq!(budget.remaining(), 100_000);
    }

    #[test]
    fn the_receive_rate_paces_grants_after_the_initial_window() {
        let t = t0();
        let budget = Arc::new(RecvBudget::new(0));
        let cfg = [WindowConfig {
            channel: 1,
            initial: 1000,
            max: 1000,
            need_max: 1000,
        }];
        let mut f = RecvFlow::new(t, 100, &cfg, budget, IDLE, Some(1000));
        f.initial_grants(&mut |_| {});
        let mut granted = 0;
        let mut now = t;
        for _ in 0..200 {
            let s = f.stats(1).unwrap();
            f.on_data(now, 1, s.granted - s.received).unwrap();
            f.on_consumed(t, 1, s.granted - s.received);
            for p in grants(&mut f, now, 0) {
                if let Packet::Credit { bytes, .. } = p {
                    granted += u64::from(bytes);
                }
            }
            now = f
                .poll_timeout()
                .unwrap_or(now + Duration::from_millis(10))
                .max(now);
        }
        let secs = now.duration_since(t).as_secs_f64();
        let rate = granted as f64 / secs;
        assert!(
            (800.0..1200.0).contains(&rate),
            "{granted} bytes in {secs} s"
        );
    }

    #[test]
    fn budget_leases_are_all_or_nothing() {
        let b = RecvBudget::new(10);
        assert!(b.lease(6));
        assert!(!b.lease(5));
        assert!(b.lease(4));
        assert_eq!(b.lease_up_to(1, 5), 0, "nothing left");
        b.release(3);
        assert_eq!(b.lease_up_to(4, 5), 0, "less than the least");
        assert_eq!(b.lease_up_to(2, 5), 3);
        b.release(10);
        b.release(10);
        assert_eq!(b.remaining(), 10, "never above the capacity");
    }
}
