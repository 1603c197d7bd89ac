//! The send side of one connection, shared between the Mux (which writes) and every
//! [`PeerHandle`](crate::PeerHandle) clone (which queue).
//!
//! Queuing a message is a lock, a push into the proto [`Scheduler`] and, when the
//! writer sleeps, one wake-up: an actix message per send would cap a connection at the
//! mailbox rate (about 2 M/s here), far below what the wire carries for small
//! messages. The budgets of the scheduler bound everything queued here; `push` waits
//! for room, `try_push` answers `Full` at once.

use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use switchyard_proto::codec::MsgKind;
use switchyard_proto::control::CONTROL_CHANNEL;
use switchyard_proto::scheduler::{PushError, Scheduler};
use tokio::sync::Notify;

use crate::error::SendError;
use crate::registry::Registry;

/// What the writer must do besides draining the scheduler.
pub(crate) struct OutState {
    pub(crate) sched: Scheduler,
    pub(crate) ping_due: bool,
    pub(crate) pong_due: bool,
    /// Encoded `Goodbye` packet, written last when closing.
    pub(crate) goodbye: Option<Bytes>,
    /// No new messages are accepted.
    pub(crate) closed: bool,
    /// When closed: write what is queued before the goodbye (graceful), or drop it.
    pub(crate) flush: bool,
    /// The writer is waiting for work (the next push must wake it).
    pub(crate) writer_idle: bool,
    /// Pings written to the socket and not yet matched with a pong: a pong counts as
    /// an answer only when it can answer a ping that really went out.
    pub(crate) pings_written: u32,
}

pub(crate) struct Outbound {
    state: Mutex<OutState>,
    pub(crate) writer: Notify,
    /// One per user channel (by registry index), plus channel 0 at the end.
    rooms: Box<[Notify]>,
    registry: Arc<Registry>,
}

impl Outbound {
    pub(crate) fn new(registry: Arc<Registry>) -> Self {
        let rooms = (0..=registry.channel_count())
            .map(|_| Notify::new())
            .collect();
        Outbound {
            state: Mutex::new(OutState {
                sched: registry.scheduler(),
                ping_due: false,
                pong_due: false,
                goodbye: None,
                closed: false,
                flush: false,
                writer_idle: false,
                pings_written: 0,
            }),
            writer: Notify::new(),
            rooms,
            registry,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn room(&self, channel: u8) -> Option<&Notify> {
        if channel == CONTROL_CHANNEL {
            return self.rooms.last();
        }
        let slot = self.registry.channel(channel)?;
        self.rooms.get(slot.index)
    }

    /// Wakes the senders waiting for room on `channel`.
    pub(crate) fn room_freed(&self, channel: u8) {
        if let Some(n) = self.room(channel) {
            n.notify_waiters();
        }
    }

    fn wake_writer(&self, mut st: MutexGuard<'_, OutState>) {
        let wake = std::mem::replace(&mut st.writer_idle, false);
        drop(st);
        if wake {
            self.writer.notify_one();
        }
    }

    fn map_err(channel: u8, e: PushError) -> SendError {
        match e {
            PushError::Full => SendError::Full(channel),
            PushError::UnknownChannel(c) => SendError::UnknownChannel(c),
            PushError::TooLarge { size, max } => SendError::TooLarge { channel, size, max },
        }
    }

    /// Queues a message, or says why not, at once.
    pub(crate) fn try_push(
        &self,
        channel: u8,
        kind: MsgKind,
        payload: Bytes,
    ) -> Result<(), SendError> {
        let mut st = self.lock();
        if st.closed {
            return Err(SendError::Closed);
        }
        st.sched
            .push(channel, kind, payload)
            .map_err(|e| Self::map_err(channel, e))?;
        self.wake_writer(st);
        Ok(())
    }

    /// Tries to queue under the lock; gives the payload back when the channel is full.
    /// The budget is checked before the payload is moved, so nothing is cloned.
    fn push_locked(
        &self,
        channel: u8,
        kind: MsgKind,
        payload: Bytes,
    ) -> Result<Option<Bytes>, SendError> {
        let mut st = self.lock();
        if st.closed {
            return Err(SendError::Closed);
        }
        match st.sched.check(channel, payload.len()) {
            Ok(()) => {}
            Err(PushError::Full) => return Ok(Some(payload)),
            Err(e) => return Err(Self::map_err(channel, e)),
        }
        st.sched
            .push(channel, kind, payload)
            .map_err(|e| Self::map_err(channel, e))?;
        self.wake_writer(st);
        Ok(None)
    }

    /// Queues a message, waiting for room in the channel's queue.
    pub(crate) async fn push(
        &self,
        channel: u8,
        kind: MsgKind,
        payload: Bytes,
    ) -> Result<(), SendError> {
        // Fast path: room now, no waiter registration.
        let Some(mut payload) = self.push_locked(channel, kind, payload)? else {
            return Ok(());
        };
        let room = self
            .room(channel)
            .ok_or(SendError::UnknownChannel(channel))?;
        loop {
            let mut notified = pin!(room.notified());
            notified.as_mut().enable();
            // Registered before checking again, so a drain in between is not missed.
            match self.push_locked(channel, kind, payload)? {
                None => return Ok(()),
                Some(back) => payload = back,
            }
            notified.await;
        }
    }

    /// Queues every payload of `run` in order, waiting for room whenever the channel is
    /// full. Each part of the run that fits is queued under one lock with at most one
    /// writer wake-up. The run is already materialized: no caller code runs under the
    /// lock. On error, the payloads before the failing one stay queued.
    pub(crate) async fn push_all(&self, channel: u8, run: Vec<Bytes>) -> Result<(), SendError> {
        let room = self
            .room(channel)
            .ok_or(SendError::UnknownChannel(channel))?;
        let mut run = run.into_iter().peekable();
        while run.peek().is_some() {
            let mut notified = pin!(room.notified());
            notified.as_mut().enable();
            {
                let mut st = self.lock();
                if st.closed {
                    return Err(SendError::Closed);
                }
                let mut queued = false;
                let mut failure = None;
                while let Some(payload) = run.peek() {
                    match st.sched.check(channel, payload.len()) {
                        Ok(()) => {}
                        Err(PushError::Full) => break,
                        Err(e) => {
                            failure = Some(Self::map_err(channel, e));
                            break;
                        }
                    }
                    let Some(payload) = run.next() else {
                        break;
                    };
                    if let Err(e) = st.sched.push(channel, MsgKind::Plain, payload) {
                        failure = Some(Self::map_err(channel, e));
                        break;
                    }
                    queued = true;
                }
                if queued {
                    self.wake_writer(st);
                }
                if let Some(e) = failure {
                    return Err(e);
                }
            }
            if run.peek().is_some() {
                notified.await;
            }
        }
        Ok(())
    }

    /// Asks the writer to send a ping.
    pub(crate) fn send_ping(&self) {
        let mut st = self.lock();
        st.ping_due = true;
        self.wake_writer(st);
    }

    /// Takes one written, unanswered ping, if there is one.
    pub(crate) fn take_written_ping(&self) -> bool {
        let mut st = self.lock();
        if st.pings_written == 0 {
            return false;
        }
        st.pings_written -= 1;
        true
    }

    /// Asks the writer to answer a ping (pending pongs collapse into one).
    pub(crate) fn send_pong(&self) {
        let mut st = self.lock();
        st.pong_due = true;
        self.wake_writer(st);
    }

    /// Stops accepting messages; the writer sends what is queued (when `flush`), then
    /// `goodbye` (when given), then closes its half of the connection.
    pub(crate) fn close(&self, goodbye: Option<Bytes>, flush: bool) {
        let mut st = self.lock();
        if st.closed {
            return;
        }
        st.closed = true;
        st.flush = flush;
        st.goodbye = goodbye;
        if !flush {
            st.sched = Scheduler::new(1);
        }
        st.writer_idle = false;
        drop(st);
        self.writer.notify_one();
        for room in self.rooms.iter() {
            room.notify_waiters();
        }
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }
}
