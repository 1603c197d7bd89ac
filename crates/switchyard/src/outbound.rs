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

    /// Tries to queue under the lock: `Ok(true)` queued, `Ok(false)` full.
    fn push_locked(&self, channel: u8, kind: MsgKind, payload: &Bytes) -> Result<bool, SendError> {
        let mut st = self.lock();
        if st.closed {
            return Err(SendError::Closed);
        }
        match st.sched.push(channel, kind, payload.clone()) {
            Ok(()) => {
                self.wake_writer(st);
                Ok(true)
            }
            Err(PushError::Full) => Ok(false),
            Err(e) => Err(Self::map_err(channel, e)),
        }
    }

    /// Queues a message, waiting for room in the channel's queue.
    pub(crate) async fn push(
        &self,
        channel: u8,
        kind: MsgKind,
        payload: Bytes,
    ) -> Result<(), SendError> {
        // Fast path: room now, no waiter registration.
        if self.push_locked(channel, kind, &payload)? {
            return Ok(());
        }
        let room = self
            .room(channel)
            .ok_or(SendError::UnknownChannel(channel))?;
        loop {
            let mut notified = pin!(room.notified());
            notified.as_mut().enable();
            // Registered before checking again, so a drain in between is not missed.
            if self.push_locked(channel, kind, &payload)? {
                return Ok(());
            }
            notified.await;
        }
    }

    /// Asks the writer to send a ping.
    pub(crate) fn send_ping(&self) {
        let mut st = self.lock();
        st.ping_due = true;
        self.wake_writer(st);
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
