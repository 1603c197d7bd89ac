//! One connection's [`PeerCore`], shared by the Peer actor that drives it and by every
//! [`PeerHandle`](crate::PeerHandle) clone that sends through it (the shape of quinn's
//! `ConnectionInner`: the protocol state behind one lock, the I/O in one task).
//!
//! Queuing a message is a lock and a push into the core's scheduler; the driver is
//! woken only when it sleeps for lack of work, so small messages cost no actix message
//! each. When the connection's writer is idle, a send may write its message itself,
//! from the sending thread (the [`Writer`] and this thread's [`InlineTurn`] decide).
//! Senders that find a channel's queue full wait on that channel's `Notify`, which the
//! driver signals when the core reports room (or the connection closes).

use std::cell::Cell;
use std::collections::{HashMap, VecDeque};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use switchyard_proto::connection::inline::InlineTurn;
use switchyard_proto::connection::writer::{AfterPush, Writer};
use switchyard_proto::connection::Refusal;
use switchyard_proto::DisconnectReason;
use switchyard_proto::{PeerCore, PushError};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};

use crate::error::SendFailure;
use crate::request::Outcome;

thread_local! {
    /// This thread's turn to write inline.
    static INLINE: Cell<InlineTurn> = const { Cell::new(InlineTurn::new()) };
}

/// Wait lists for room per connection.
const ROOMS: usize = 8;

/// Most bytes one inline write takes from the core.
const INLINE_BATCH: usize = 64 << 10;

/// The core and what the driver and the senders agree on about it.
pub(crate) struct Inner {
    pub(crate) core: PeerCore,
    /// The send side: what waits to be written, who writes it, the sealer.
    pub(crate) writer: Writer,
    /// Callers waiting for the answers to our requests, by request id.
    pub(crate) answers: HashMap<u32, oneshot::Sender<Outcome>>,
}

pub(crate) struct Conn {
    inner: Mutex<Inner>,
    /// The socket, once the driver started.
    io: OnceLock<Arc<TcpStream>>,
    /// The driver's task.
    driver: AtomicWaker,
    /// Senders waiting for room, by channel id modulo [`ROOMS`] (services come and
    /// go, so not one per channel; a waiter woken for another channel of its slot
    /// checks again and waits on).
    rooms: [Notify; ROOMS],
    /// Callers waiting for the remote's introspection answers.
    pub(crate) introspect: crate::introspect::Waiters,
}

impl Conn {
    pub(crate) fn new(core: PeerCore) -> Self {
        Conn {
            inner: Mutex::new(Inner {
                core,
                writer: Writer::new(),
                answers: HashMap::new(),
            }),
            io: OnceLock::new(),
            driver: AtomicWaker::new(),
            rooms: std::array::from_fn(|_| Notify::new()),
            introspect: crate::introspect::Waiters::default(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The socket, shared with senders for inline writes (set once, by the driver).
    pub(crate) fn set_io(&self, io: Arc<TcpStream>) {
        let _ = self.io.set(io);
    }

    /// Registers the driver's waker (at the start of each of its polls).
    pub(crate) fn register_driver(&self, waker: &std::task::Waker) {
        self.driver.register(waker);
    }

    /// Wakes the driver (new work that only it can carry out).
    pub(crate) fn wake_driver(&self) {
        self.driver.wake();
    }

    fn room(&self, channel: u8) -> &Notify {
        &self.rooms[usize::from(channel) % ROOMS]
    }

    /// Wakes the senders waiting for room on `channel`.
    pub(crate) fn room_freed(&self, channel: u8) {
        self.room(channel).notify_waiters();
    }

    /// Tries `attempt` until it fails for something else than a full queue on
    /// `channel`, waiting for room there in between. The wait is registered before
    /// each attempt, so room freed in between is not missed.
    async fn with_room<T>(
        &self,
        channel: u8,
        mut attempt: impl FnMut() -> Result<T, SendFailure>,
    ) -> Result<T, SendFailure> {
        let room = self.room(channel);
        loop {
            let mut notified = pin!(room.notified());
            notified.as_mut().enable();
            match attempt() {
                Err(SendFailure::Full(_)) => notified.await,
                done => return done,
            }
        }
    }

    /// Runs `f` on the core at the present instant, then wakes the driver to carry
    /// out what it queued.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut PeerCore, Instant) -> R) -> R {
        let result = f(&mut self.lock().core, Instant::now());
        self.wake_driver();
        result
    }

    /// After queuing under `inner`: writes inline when the writer is idle and this
    /// thread may, else wakes a sleeping driver (the [`Writer`] decides). Consumes the
    /// guard.
    fn after_push(&self, mut guard: MutexGuard<'_, Inner>) {
        if !guard.writer.is_idle() {
            // The driver is awake and takes the message (no clock read on this path).
            return;
        }
        let now = Instant::now();
        let io = self.io.get();
        let inner = &mut *guard;
        let may_inline = || io.is_some() && INLINE.with(|turn| InlineTurn::take_in(turn, now));
        let step = inner
            .writer
            .after_push(&mut inner.core, now, INLINE_BATCH, may_inline);
        let wake = match step {
            AfterPush::Nothing => false,
            AfterPush::Wake => true,
            AfterPush::Write(mut t) => {
                drop(guard);
                // (Inline only with a socket: without one nothing is written, and the
                // bytes go back to the driver.)
                let wrote = io.map_or(Ok(0), |io| crate::socket::write_now(io, &mut t));
                let mut guard = self.lock();
                let inner = &mut *guard;
                inner
                    .writer
                    .complete_inline(&mut inner.core, Instant::now(), t, wrote)
            }
        };
        if wake {
            self.wake_driver();
        }
    }

    /// Queues what `queue` queues on `channel` under the lock, then writes it or
    /// wakes the driver; fails at once with what `queue` says.
    fn queue<T>(
        &self,
        channel: u8,
        queue: impl FnOnce(&mut Inner) -> Result<T, PushError>,
    ) -> Result<T, SendFailure> {
        let mut inner = self.lock();
        let queued = queue(&mut inner).map_err(|e| SendFailure::from_push(channel, e))?;
        self.after_push(inner);
        Ok(queued)
    }

    /// Queues a message, or says why not, at once.
    pub(crate) fn try_push(&self, channel: u8, payload: Bytes) -> Result<(), SendFailure> {
        self.queue(channel, |inner| inner.core.send(channel, payload))
    }

    /// Queues a message, waiting for room in the channel's queue.
    pub(crate) async fn push(&self, channel: u8, payload: Bytes) -> Result<(), SendFailure> {
        // Fast path: room now, no waiter registration (a full queue keeps nothing).
        match self.try_push(channel, payload.clone()) {
            Err(SendFailure::Full(_)) => {}
            done => return done,
        }
        self.with_room(channel, || self.try_push(channel, payload.clone()))
            .await
    }

    /// Queues every payload of `run` in order, waiting for room whenever the channel is
    /// full. Each part of the run that fits is queued under one lock with at most one
    /// write or wake-up. No caller code runs under the lock. On error, the payloads
    /// before the failing one stay queued.
    pub(crate) async fn push_all(&self, channel: u8, run: Vec<Bytes>) -> Result<(), SendFailure> {
        let mut run = VecDeque::from(run);
        if run.is_empty() {
            return Ok(());
        }
        self.with_room(channel, || {
            let mut inner = self.lock();
            let sent = inner.core.send_run(channel, &mut run);
            if sent.queued > 0 {
                self.after_push(inner);
            }
            sent.outcome(&run)
                .map_err(|e| SendFailure::from_push(channel, e))
        })
        .await
    }

    /// Queues a request now, or fails (`Full` when no request slot or queue room is
    /// free); the receiver gets its outcome.
    pub(crate) fn try_request(
        &self,
        channel: u8,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<(u32, oneshot::Receiver<Outcome>), SendFailure> {
        self.queue(channel, |inner| {
            let id = inner.core.send_request(channel, payload, timeout)?;
            let (tx, rx) = oneshot::channel();
            inner.answers.insert(id, tx);
            Ok((id, rx))
        })
    }

    /// Queues a request, waiting for a request slot and queue room.
    pub(crate) async fn request(
        &self,
        channel: u8,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<(u32, oneshot::Receiver<Outcome>), SendFailure> {
        self.with_room(channel, || {
            self.try_request(channel, payload.clone(), timeout)
        })
        .await
    }

    /// Tells the caller of request `id` how it ended.
    pub(crate) fn answer(&self, id: u32, outcome: Outcome) {
        let tx = self.lock().answers.remove(&id);
        if let Some(tx) = tx {
            let _ = tx.send(outcome);
        }
    }

    /// Every caller waiting for an answer learns the connection is over.
    pub(crate) fn fail_answers(&self, reason: &DisconnectReason) {
        let waiting: Vec<_> = self.lock().answers.drain().collect();
        for (_, tx) in waiting {
            let _ = tx.send(Outcome::Closed(reason.clone()));
        }
    }

    /// The caller of request `id` gave up.
    pub(crate) fn give_up(&self, channel: u8, id: u32) {
        let mut inner = self.lock();
        inner.answers.remove(&id);
        inner.core.cancel_request(channel, id);
        if inner.core.has_events() {
            drop(inner);
            self.wake_driver();
        }
    }

    /// Queues the response to the remote's request `id` on `channel`.
    pub(crate) fn respond(&self, channel: u8, id: u32, payload: Bytes) -> Result<(), SendFailure> {
        self.queue(channel, |inner| {
            inner.core.send_response(channel, id, payload)
        })
    }

    /// Refuses the remote's request `id` on `channel`.
    pub(crate) fn refuse(&self, channel: u8, id: u32, refusal: Refusal) {
        let mut inner = self.lock();
        inner.core.refuse_request(channel, id, refusal);
        self.after_push(inner);
        self.wake_driver();
    }

    /// The Peer stopped, for `reason`: senders see the connection closed from now on,
    /// the ones waiting for room wake to find it so, and callers waiting for answers
    /// learn why.
    pub(crate) fn shut(&self, reason: &DisconnectReason) {
        self.lock()
            .core
            .close(Instant::now(), reason.clone(), false);
        for room in &self.rooms {
            room.notify_waiters();
        }
        self.fail_answers(reason);
    }

    /// Closes the connection for `reason` through the core, which tells the remote
    /// why (after writing what is queued if `flush`); the driver carries it out.
    pub(crate) fn close(&self, reason: DisconnectReason, flush: bool) {
        self.update(|core, now| core.close(now, reason, flush));
    }
}

/// A shared connection.
pub(crate) type SharedConn = Arc<Conn>;

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    use futures_util::task::{noop_waker_ref, waker, ArcWake};
    use switchyard_proto::connection::handshake::{Version, PROTOCOL_VERSION};
    use switchyard_proto::{Config, ConnParams, CoreConfig, NodeId, RecvBudget};

    use super::*;

    /// A connection whose core has not spoken, and no driver yet.
    fn conn() -> Conn {
        let local = Version {
            protocol: PROTOCOL_VERSION,
            network: "unit".into(),
            node_id: NodeId([1; 20]),
            listen_addr: None,
            services: Vec::new(),
            user_agent: "unit".into(),
            nonce: 1,
        };
        let params = ConnParams {
            local,
            expected: None,
            secret: [1; 16],
            services: Vec::new(),
        };
        let config = Arc::new(CoreConfig::new(Config::default()).expect("valid config"));
        let budget = Arc::new(RecvBudget::new(1 << 20));
        Conn::new(PeerCore::new(Instant::now(), config, params, budget))
    }

    /// Counts the driver's wake-ups.
    struct Wakes(AtomicUsize);

    impl ArcWake for Wakes {
        fn wake_by_ref(this: &Arc<Self>) {
            this.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn driver(conn: &Conn) -> Arc<Wakes> {
        let wakes = Arc::new(Wakes(AtomicUsize::new(0)));
        conn.register_driver(&waker(wakes.clone()));
        wakes
    }

    #[test]
    fn a_wait_for_room_tries_again_once_room_is_freed() {
        let conn = conn();
        let mut tries = 0;
        let mut wait = pin!(conn.with_room(3, || {
            tries += 1;
            if tries < 2 {
                return Err(SendFailure::Full(3));
            }
            Ok(tries)
        }));
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        assert!(wait.as_mut().poll(&mut cx).is_pending(), "no room yet");
        conn.room_freed(3);
        assert!(matches!(wait.as_mut().poll(&mut cx), Poll::Ready(Ok(2))));
    }

    #[test]
    fn room_freed_between_the_registration_and_a_try_is_not_missed() {
        let conn = conn();
        let mut tries = 0;
        let mut wait = pin!(conn.with_room(3, || {
            tries += 1;
            if tries == 1 {
                // The driver drains the queue just after this try saw it full.
                conn.room_freed(3);
                return Err(SendFailure::Full(3));
            }
            Ok(tries)
        }));
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(matches!(wait.as_mut().poll(&mut cx), Poll::Ready(Ok(2))));
    }

    #[test]
    fn a_wait_for_room_ends_on_any_other_answer() {
        let conn = conn();
        let wait = pin!(conn.with_room(3, || Err::<(), _>(SendFailure::Closed)));
        let mut cx = Context::from_waker(noop_waker_ref());
        let answer = wait.poll(&mut cx);
        assert!(matches!(answer, Poll::Ready(Err(SendFailure::Closed))));
    }

    #[test]
    fn an_update_and_a_close_wake_the_driver() {
        let conn = conn();
        let wakes = driver(&conn);
        assert!(!conn.update(|core, _| core.is_closing()));
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        // (A wake-up is spent; the driver registers again on each poll.)
        let wakes = driver(&conn);
        conn.close(DisconnectReason::Shutdown, false);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert!(conn.lock().core.is_closing());
    }

    #[test]
    fn a_send_refused_at_once_neither_queues_nor_wakes() {
        let conn = conn();
        let wakes = driver(&conn);
        let payload = Bytes::from_static(b"hi");
        assert!(conn.try_push(9, payload.clone()).is_err());
        let requested = conn.try_request(9, payload.clone(), Duration::from_secs(1));
        assert!(requested.is_err());
        assert!(conn.respond(9, 1, payload).is_err());
        assert!(conn.lock().answers.is_empty(), "no caller waits");
        assert_eq!(wakes.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn sends_after_the_close_fail_as_closed() {
        let conn = conn();
        conn.shut(&DisconnectReason::Shutdown);
        let failure = conn.try_push(9, Bytes::from_static(b"hi"));
        assert!(matches!(failure, Err(SendFailure::Closed)), "{failure:?}");
    }
}
