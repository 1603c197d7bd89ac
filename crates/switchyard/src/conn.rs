//! One connection's [`PeerCore`], shared by the Peer actor that drives it and by every
//! [`PeerHandle`](crate::PeerHandle) clone that sends through it (the shape of quinn's
//! `ConnectionInner`: the protocol state behind one lock, the I/O in one task).
//!
//! Queuing a message is a lock and a push into the core's scheduler; the driver is
//! woken only when it sleeps for lack of work, so small messages cost no actix message
//! each. Senders that find a channel's queue full wait on that channel's `Notify`,
//! which the driver signals when the core reports room (or the connection closes).

use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use switchyard_proto::{PeerCore, PushError};
use tokio::sync::Notify;

use crate::error::SendError;

/// The core and what the driver and the senders agree on about it.
pub(crate) struct Inner {
    pub(crate) core: PeerCore,
    /// The driver found nothing to write and sleeps: the next push must wake it.
    pub(crate) writer_idle: bool,
}

pub(crate) struct Conn {
    inner: Mutex<Inner>,
    /// The driver's task.
    driver: AtomicWaker,
    /// One per user channel of the node (by its index in the registry's table).
    rooms: Box<[(u8, Notify)]>,
}

impl Conn {
    pub(crate) fn new(core: PeerCore, channels: impl Iterator<Item = u8>) -> Self {
        Conn {
            inner: Mutex::new(Inner {
                core,
                writer_idle: false,
            }),
            driver: AtomicWaker::new(),
            rooms: channels.map(|c| (c, Notify::new())).collect(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers the driver's waker (at the start of each of its polls).
    pub(crate) fn register_driver(&self, waker: &std::task::Waker) {
        self.driver.register(waker);
    }

    /// Wakes the driver (new work that only it can carry out).
    pub(crate) fn wake_driver(&self) {
        self.driver.wake();
    }

    fn room(&self, channel: u8) -> Option<&Notify> {
        self.rooms
            .iter()
            .find(|(c, _)| *c == channel)
            .map(|(_, n)| n)
    }

    /// Wakes the senders waiting for room on `channel`.
    pub(crate) fn room_freed(&self, channel: u8) {
        if let Some(n) = self.room(channel) {
            n.notify_waiters();
        }
    }

    /// Queues a message under the lock; wakes a sleeping driver after unlocking.
    fn push_locked(&self, channel: u8, payload: Bytes) -> Result<(), PushError> {
        let mut inner = self.lock();
        inner.core.send(channel, payload)?;
        let wake = std::mem::take(&mut inner.writer_idle);
        drop(inner);
        if wake {
            self.wake_driver();
        }
        Ok(())
    }

    /// Queues a message, or says why not, at once.
    pub(crate) fn try_push(&self, channel: u8, payload: Bytes) -> Result<(), SendError> {
        self.push_locked(channel, payload)
            .map_err(|e| SendError::from_push(channel, e))
    }

    /// Queues a message, waiting for room in the channel's queue.
    pub(crate) async fn push(&self, channel: u8, payload: Bytes) -> Result<(), SendError> {
        // Fast path: room now, no waiter registration. (The guard must be gone before
        // `try_push` locks again.)
        let checked = self.lock().core.check_send(channel, payload.len());
        match checked {
            Ok(()) => return self.try_push(channel, payload),
            Err(PushError::Full) => {}
            Err(e) => return Err(SendError::from_push(channel, e)),
        }
        let room = self
            .room(channel)
            .ok_or(SendError::UnknownChannel(channel))?;
        loop {
            let mut notified = pin!(room.notified());
            notified.as_mut().enable();
            // Registered before trying again, so a drain in between is not missed.
            match self.push_locked(channel, payload.clone()) {
                Ok(()) => return Ok(()),
                Err(PushError::Full) => {}
                Err(e) => return Err(SendError::from_push(channel, e)),
            }
            notified.await;
        }
    }

    /// Queues every payload of `run` in order, waiting for room whenever the channel is
    /// full. Each part of the run that fits is queued under one lock with at most one
    /// wake-up of the driver. No caller code runs under the lock. On error, the
    /// payloads before the failing one stay queued.
    pub(crate) async fn push_all(&self, channel: u8, run: Vec<Bytes>) -> Result<(), SendError> {
        let room = self
            .room(channel)
            .ok_or(SendError::UnknownChannel(channel))?;
        let mut run = run.into_iter().peekable();
        while run.peek().is_some() {
            let mut notified = pin!(room.notified());
            notified.as_mut().enable();
            let mut failure = None;
            let wake = {
                let mut inner = self.lock();
                let mut queued = false;
                while let Some(payload) = run.peek() {
                    match inner.core.check_send(channel, payload.len()) {
                        Ok(()) => {}
                        Err(PushError::Full) => break,
                        Err(e) => {
                            failure = Some(SendError::from_push(channel, e));
                            break;
                        }
                    }
                    let Some(payload) = run.next() else {
                        break;
                    };
                    if let Err(e) = inner.core.send(channel, payload) {
                        failure = Some(SendError::from_push(channel, e));
                        break;
                    }
                    queued = true;
                }
                queued && std::mem::take(&mut inner.writer_idle)
            };
            if wake {
                self.wake_driver();
            }
            if let Some(e) = failure {
                return Err(e);
            }
            if run.peek().is_some() {
                notified.await;
            }
        }
        Ok(())
    }

    /// Whether sends fail now because the connection is closing or closed.
    pub(crate) fn is_closing(&self) -> bool {
        self.lock().core.is_closing()
    }
}

/// A shared connection.
pub(crate) type SharedConn = Arc<Conn>;
