//! Requests and responses: neo-go's `GetHeaders` → `Headers`, with a stall timeout.
//!
//! A [`RequestChannel<Req, Resp>`] carries requests of type `Req`, each answered by
//! one `Resp`. The asking side calls [`PeerHandle::request`] (waits for a request
//! slot) or [`PeerHandle::try_request`] (fails at once when the slots are taken): it
//! resolves to the response, or to a [`RequestError`]. The answering service gets a
//! [`ReceivedRequest`] with a [`Responder`] it answers at once or later, from any handler or
//! thread.
//!
//! * **Stall.** The timeout starts when the request's last byte is written to the
//!   socket, not when it is queued: a request queued behind a long transfer does not
//!   stall. No answer in time: the caller gets [`RequestError::Stalled`] and, unless
//!   the channel was made with `close_on_stall(false)`, the peer is closed with
//!   [`DisconnectReason::Stalled`].
//! * **Bounds.** At most `requests_in_flight` requests per peer and channel wait for
//!   answers (a further `request` waits for one to end). A service holds at most
//!   `inbound_requests` unanswered requests of a peer per channel: one beyond that is
//!   refused on the wire at once ([`Refusal::Busy`]) and never reaches it.
//! * **A responder dropped unanswered** refuses the request ([`Refusal::Dropped`]), so
//!   its caller learns at once.
//! * Unsolicited, duplicate and late responses, and a request id sent twice, close
//!   the sender, each with its own reason.
//!
//! ```
//! use std::time::Duration;
//! use actix::prelude::*;
//! use serde::{Deserialize, Serialize};
//! use switchyard::{ChannelConfig, PeerHandle, ReceivedRequest, RequestChannel, RequestError, Service};
//!
//! #[derive(Serialize, Deserialize)]
//! struct GetHeaders { from: u64, count: u32 }
//! #[derive(Serialize, Deserialize)]
//! struct Headers(Vec<u64>);
//!
//! struct Chain;
//! impl Actor for Chain { type Context = Context<Self>; }
//! impl Handler<ReceivedRequest<GetHeaders, Headers>> for Chain {
//!     type Result = ();
//!     fn handle(&mut self, r: ReceivedRequest<GetHeaders, Headers>, _: &mut Context<Self>) {
//!         let headers = (r.msg.from..r.msg.from + u64::from(r.msg.count)).collect();
//!         let _ = r.responder.respond(&Headers(headers));
//!     }
//! }
//!
//! async fn sync(peer: &PeerHandle, ch: &RequestChannel<GetHeaders, Headers>) -> Result<usize, RequestError> {
//!     let Headers(h) = peer.request(ch, &GetHeaders { from: 0, count: 100 }, Duration::from_secs(2)).await?;
//!     Ok(h.len())
//! }
//!
//! actix::System::new().block_on(async {
//!     let chain = Chain.start();
//!     let mut svc = Service::new("headers", 1);
//!     let ch: RequestChannel<GetHeaders, Headers> =
//!         svc.request_channel(0x20, ChannelConfig::new(10), &chain);
//!     assert_eq!(ch.id(), 0x20);
//! });
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use actix::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use switchyard_proto::connection::delivery::Delivered;
use switchyard_proto::connection::Refusal;
use switchyard_proto::{DisconnectReason, Message as Complete, MsgKind};
use tokio::sync::oneshot;

use crate::channel::encode_one;
use crate::conn::SharedConn;
use crate::error::SendFailure;
use crate::handle::PeerHandle;
use crate::service::{offer, Delivery, Offered, Sink};

/// A typed handle to a request channel of this node: requests `Req`, each answered
/// by a `Resp`. Made by [`Service::request_channel`](crate::Service::request_channel).
pub struct RequestChannel<Req, Resp> {
    id: u8,
    ty: PhantomData<fn() -> (Req, Resp)>,
}

impl<Req, Resp> RequestChannel<Req, Resp> {
    pub(crate) fn new(id: u8) -> Self {
        RequestChannel {
            id,
            ty: PhantomData,
        }
    }

    /// The channel's id on the wire (1..=255).
    #[must_use]
    pub fn id(&self) -> u8 {
        self.id
    }
}

impl<Req, Resp> Clone for RequestChannel<Req, Resp> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<Req, Resp> Copy for RequestChannel<Req, Resp> {}

impl<Req, Resp> fmt::Debug for RequestChannel<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RequestChannel<{}, {}>({:#04x})",
            std::any::type_name::<Req>(),
            std::any::type_name::<Resp>(),
            self.id
        )
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// It could not be queued (the connection is closed, the service is not up with
    /// this peer, the request is too large, it could not be encoded, or, for
    /// `try_request`, every request slot is taken: `Full`).
    #[error(transparent)]
    Send(#[from] SendFailure),
    /// No answer within the timeout after it was written.
    #[error("no answer in time: the peer stalled")]
    Stalled,
    /// The peer refused it (too many requests in hand, or its service let it go).
    #[error("the peer refused the request: {0:?}")]
    Refused(Refusal),
    /// The connection closed before the answer came.
    #[error("the connection closed before the answer: {0}")]
    Closed(DisconnectReason),
    /// The response was not a valid `Resp` (the peer is closed for it).
    #[error("undecodable response: {0}")]
    Undecodable(String),
}

/// How a request of ours ended, as the Peer learns it from the core.
pub(crate) use switchyard_proto::connection::lifecycle::Outcome;

/// A request from a peer, with the [`Responder`] that answers it.
pub struct ReceivedRequest<Req, Resp> {
    /// The peer that asks.
    pub peer: PeerHandle,
    /// The request.
    pub msg: Req,
    /// Answers it (once); dropping it unanswered refuses the request.
    pub responder: Responder<Resp>,
}

impl<Req: 'static, Resp: 'static> Message for ReceivedRequest<Req, Resp> {
    type Result = ();
}

impl<Req: fmt::Debug, Resp> fmt::Debug for ReceivedRequest<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceivedRequest")
            .field("peer", &self.peer)
            .field("msg", &self.msg)
            .field("responder", &self.responder)
            .finish()
    }
}

/// Answers one request. `Send`: it may go to another actor or thread and answer
/// later. Dropped unanswered, it refuses the request ([`Refusal::Dropped`]).
pub struct Responder<Resp> {
    conn: SharedConn,
    channel: u8,
    request_id: u32,
    answered: bool,
    ty: PhantomData<fn(Resp)>,
}

impl<Resp> fmt::Debug for Responder<Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Responder({:#04x}#{})", self.channel, self.request_id)
    }
}

impl<Resp: Serialize> Responder<Resp> {
    /// Queues the response. It never waits: answers are bounded by the requests a
    /// service may hold. Fails if the connection closed, the service went down, or
    /// the response is too large for the channel or cannot be encoded (the request is
    /// then refused).
    pub fn respond(mut self, msg: &Resp) -> Result<(), SendFailure> {
        let payload = encode_one::<Resp, _>(msg)?;
        self.answered = true;
        self.conn
            .respond(self.channel, self.request_id, payload)
            .inspect_err(|_| self.answered = false)
    }
}

impl<Resp> Drop for Responder<Resp> {
    fn drop(&mut self) {
        if !self.answered {
            self.conn
                .refuse(self.channel, self.request_id, Refusal::Dropped);
        }
    }
}

/// The response to a request, once it comes (see [`PeerHandle::try_request`]).
/// Dropping it gives the request up: its answer is then ignored and it cannot stall
/// the peer.
pub struct PendingResponse<Resp> {
    rx: oneshot::Receiver<Outcome>,
    guard: GiveUp,
    ty: PhantomData<fn() -> Resp>,
}

/// Gives a request up unless it ended.
struct GiveUp {
    conn: SharedConn,
    channel: u8,
    request_id: u32,
    ended: bool,
}

impl Drop for GiveUp {
    fn drop(&mut self) {
        if !self.ended {
            self.conn.give_up(self.channel, self.request_id);
        }
    }
}

impl<Resp: DeserializeOwned> Future for PendingResponse<Resp> {
    type Output = Result<Resp, RequestError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let outcome = match Pin::new(&mut this.rx).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(o) => o,
        };
        this.guard.ended = true;
        Poll::Ready(match outcome {
            Ok(Outcome::Response(payload)) => rmp_serde::from_slice(&payload).map_err(|e| {
                // The decoder may quote what the remote sent: escaped and bounded.
                let error = switchyard_proto::text::clean(&e.to_string());
                this.guard.conn.close(
                    DisconnectReason::Undecodable {
                        channel: this.guard.channel,
                        error: error.clone(),
                    },
                    false,
                );
                RequestError::Undecodable(error)
            }),
            Ok(Outcome::Refused(r)) => Err(RequestError::Refused(r)),
            Ok(Outcome::Stalled) => Err(RequestError::Stalled),
            Ok(Outcome::Closed(reason)) => Err(RequestError::Closed(reason)),
            Err(_) => Err(RequestError::Closed(DisconnectReason::ConnectionClosed)),
        })
    }
}

impl PeerHandle {
    /// Sends `msg` as a request on `channel` and resolves to its response, waiting
    /// first for a request slot if `requests_in_flight` of them wait for answers.
    /// The `timeout` starts when the request has been written (see the
    /// [module docs](crate::request)).
    pub async fn request<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        channel: &RequestChannel<Req, Resp>,
        msg: &Req,
        timeout: Duration,
    ) -> Result<Resp, RequestError> {
        let payload = encode_one::<Req, _>(msg)?;
        let (request_id, rx) = self.conn().request(channel.id, payload, timeout).await?;
        self.pending(channel.id, request_id, rx).await
    }

    /// Like [`request`](Self::request), but fails at once with
    /// [`SendFailure::Full`] when no request slot (or no room in the queue) is free;
    /// otherwise the request is queued now and the returned future resolves to its
    /// response.
    pub fn try_request<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        channel: &RequestChannel<Req, Resp>,
        msg: &Req,
        timeout: Duration,
    ) -> Result<PendingResponse<Resp>, RequestError> {
        let payload = encode_one::<Req, _>(msg)?;
        let (request_id, rx) = self.conn().try_request(channel.id, payload, timeout)?;
        Ok(self.pending(channel.id, request_id, rx))
    }

    fn pending<Resp>(
        &self,
        channel: u8,
        request_id: u32,
        rx: oneshot::Receiver<Outcome>,
    ) -> PendingResponse<Resp> {
        PendingResponse {
            rx,
            guard: GiveUp {
                conn: self.conn().clone(),
                channel,
                request_id,
                ended: false,
            },
            ty: PhantomData,
        }
    }
}

/// Delivers requests of a request channel to its service, each with its responder.
pub(crate) struct RequestSink<Req: Send + 'static, Resp: Send + 'static> {
    pub(crate) channel: u8,
    pub(crate) to: Recipient<ReceivedRequest<Req, Resp>>,
}

impl<Req, Resp> Sink for RequestSink<Req, Resp>
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Send + 'static,
{
    fn deliver(
        &self,
        peer: &PeerHandle,
        msgs: &mut VecDeque<Complete>,
    ) -> Result<Delivery, DisconnectReason> {
        let channel = self.channel;
        while let Some(m) = msgs.pop_front() {
            let held = m.cost();
            let MsgKind::Request(request_id) = m.kind else {
                return Err(DisconnectReason::Misbehavior(format!(
                    "a plain message on request channel {channel:#04x}"
                )));
            };
            let responder = Responder {
                conn: peer.conn().clone(),
                channel,
                request_id,
                answered: false,
                ty: PhantomData,
            };
            let msg =
                rmp_serde::from_slice(&m.payload).map_err(|e| DisconnectReason::Undecodable {
                    channel,
                    error: switchyard_proto::text::clean(&e.to_string()),
                })?;
            let request = ReceivedRequest {
                peer: peer.clone(),
                msg,
                responder,
            };
            match offer(&self.to, request, |_| {}) {
                Offered::Taken => {}
                Offered::Full(pending) => {
                    return Ok(Delivered::Full {
                        cost: held,
                        wait: pending,
                    })
                }
                // The service is gone: the responders refuse as they drop.
                Offered::Stopped => msgs.clear(),
            }
        }
        Ok(Delivered::All)
    }
}
