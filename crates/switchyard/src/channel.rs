//! [`Channel<T>`]: the typed handle to one of this node's channels, and [`Payload`],
//! what may be sent on it.
//!
//! Registering a channel on a [`Service`](crate::Service) gives a `Channel<T>`;
//! sending on a peer takes it, so a message of the wrong type is a compile error
//! rather than an undecodable message that closes the peer:
//!
//! ```
//! use actix::prelude::*;
//! use serde::{Deserialize, Serialize};
//! use switchyard::{Channel, ChannelConfig, PeerHandle, Received, Service};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Chat(String);
//!
//! struct ChatService;
//! impl Actor for ChatService { type Context = Context<Self>; }
//! impl Handler<Received<Chat>> for ChatService {
//!     type Result = ();
//!     fn handle(&mut self, m: Received<Chat>, _: &mut Context<Self>) {
//!         println!("{}: {}", m.peer.id(), m.msg.0);
//!     }
//! }
//!
//! fn greet(peer: &PeerHandle, chat: &Channel<Chat>) {
//!     // Queued if there is room; `peer.send(chat, &msg).await` waits for room.
//!     let _ = peer.try_send(chat, &Chat("hello".into()));
//! }
//!
//! actix::System::new().block_on(async {
//!     let chat = ChatService.start();
//!     let mut svc = Service::new("chat", 1);
//!     let chat_ch: Channel<Chat> = svc.channel(0x10, ChannelConfig::new(5), &chat);
//!     assert_eq!(chat_ch.id(), 0x10);
//! });
//! ```
//!
//! A message of another type does not compile:
//!
//! ```compile_fail
//! use serde::Serialize;
//! use switchyard::{Channel, PeerHandle};
//!
//! #[derive(Serialize)]
//! struct Chat(String);
//! #[derive(Serialize)]
//! struct SomeOtherType(u32);
//!
//! fn wrong(peer: &PeerHandle, chat_channel: &Channel<Chat>) {
//!     let _ = peer.try_send(chat_channel, &SomeOtherType(7));
//! }
//! ```
//!
//! Nor do raw bytes on a MessagePack channel:
//!
//! ```compile_fail
//! use serde::Serialize;
//! use switchyard::{Bytes, Channel, PeerHandle};
//!
//! #[derive(Serialize)]
//! struct Chat(String);
//!
//! fn wrong(peer: &PeerHandle, chat_channel: &Channel<Chat>) {
//!     let _ = peer.try_send(chat_channel, Bytes::from_static(b"not MessagePack"));
//! }
//! ```

use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;

use crate::error::SendFailure;

/// A typed handle to one of this node's channels: its id, and the type of the
/// messages it carries (`T`, or [`Raw`] for bytes sent as they are).
///
/// Only registering the channel on a [`Service`](crate::Service) makes one, so holding
/// a `Channel<T>` means the node receives `T` on that id. It is a `u8` at run time:
/// copy it freely, into any thread.
pub struct Channel<T> {
    id: u8,
    ty: PhantomData<fn() -> T>,
}

impl<T> Channel<T> {
    pub(crate) fn new(id: u8) -> Self {
        Channel {
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

// Written by hand: a derive would ask `T` to be `Clone`, `Debug`... as well.
impl<T> Clone for Channel<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Channel<T> {}

impl<T> fmt::Debug for Channel<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Channel<{}>({:#04x})",
            std::any::type_name::<T>(),
            self.id
        )
    }
}

impl<T> PartialEq for Channel<T> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl<T> Eq for Channel<T> {}

impl<T> Hash for Channel<T> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

/// The message type of a channel that carries raw [`Bytes`]: no encoding on the way
/// out, no decoding on the way in, no copy either way. Services receive them as
/// [`Received<Bytes>`](crate::Received).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Raw;

/// What may be sent on a [`Channel<T>`]: `&T` for a MessagePack channel (`T:
/// Serialize`), or an [`Encoded<T>`] made once for many peers; [`Bytes`] for a
/// [`Channel<Raw>`].
///
/// Sealed: these are the wire formats the node speaks.
pub trait Payload<T>: sealed::Encode {}

impl<M: Serialize> Payload<M> for &M {}

impl<M> Payload<M> for Encoded<M> {}

impl Payload<Raw> for Bytes {}

/// A `T` encoded once as MessagePack, to be sent to many peers without encoding it
/// again: cloning it and sending it copies no bytes. Only encoding a `T` makes one, so
/// it can go on a [`Channel<T>`] and nowhere else.
///
/// ```
/// # use serde::Serialize;
/// # use switchyard::{Channel, Encoded, PeerHandle, SendFailure};
/// # #[derive(Serialize)] struct Block(u64);
/// async fn announce(peers: &[PeerHandle], ch: &Channel<Block>, b: &Block) -> Result<(), SendFailure> {
///     let once = Encoded::new(b)?;
///     for p in peers {
///         p.send(ch, once.clone()).await?;
///     }
///     Ok(())
/// }
/// ```
pub struct Encoded<T> {
    bytes: Bytes,
    ty: PhantomData<fn() -> T>,
}

impl<T: Serialize> Encoded<T> {
    /// Encodes `msg`.
    pub fn new(msg: &T) -> Result<Self, SendFailure> {
        Ok(Encoded {
            bytes: encode_one::<T, _>(msg)?,
            ty: PhantomData,
        })
    }
}

impl<T> Encoded<T> {
    /// The encoded bytes.
    #[must_use]
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

impl<T> Clone for Encoded<T> {
    fn clone(&self) -> Self {
        Encoded {
            bytes: self.bytes.clone(),
            ty: PhantomData,
        }
    }
}

impl<T> fmt::Debug for Encoded<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Encoded<{}>({} bytes)",
            std::any::type_name::<T>(),
            self.bytes.len()
        )
    }
}

pub(crate) mod sealed {
    use super::{BufMut, Bytes, BytesMut, Encoded, SendFailure, Serialize};

    /// How a payload becomes the bytes queued on the wire.
    pub trait Encode {
        /// Capacity to reserve for one payload encoded alone.
        const ALONE: usize;

        /// Either writes the encoded payload at the end of `buf` and returns `None`
        /// (so a run of messages shares one buffer), or returns the bytes as they are,
        /// leaving `buf` alone. On error, `buf` is as it was.
        fn encode(self, buf: &mut BytesMut) -> Result<Option<Bytes>, SendFailure>;
    }

    impl<M: Serialize + ?Sized> Encode for &M {
        // One allocation for typical small messages instead of a growth series.
        const ALONE: usize = 128;

        fn encode(self, buf: &mut BytesMut) -> Result<Option<Bytes>, SendFailure> {
            let start = buf.len();
            if let Err(e) = rmp_serde::encode::write(&mut (&mut *buf).writer(), self) {
                // Drop whatever the message wrote before it failed.
                buf.truncate(start);
                return Err(SendFailure::Encode(e.to_string()));
            }
            Ok(None)
        }
    }

    impl<T> Encode for Encoded<T> {
        const ALONE: usize = 0;

        fn encode(self, _: &mut BytesMut) -> Result<Option<Bytes>, SendFailure> {
            Ok(Some(self.bytes))
        }
    }

    impl Encode for Bytes {
        const ALONE: usize = 0;

        fn encode(self, _: &mut BytesMut) -> Result<Option<Bytes>, SendFailure> {
            Ok(Some(self))
        }
    }
}

/// Encodes one payload on its own: MessagePack into a buffer of its own, raw bytes
/// handed back as they are.
pub(crate) fn encode_one<T, P: Payload<T>>(msg: P) -> Result<Bytes, SendFailure> {
    let mut buf = BytesMut::with_capacity(P::ALONE);
    Ok(match sealed::Encode::encode(msg, &mut buf)? {
        Some(bytes) => bytes,
        None => buf.freeze(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Msg(u32, String);

    fn assert_send_sync<X: Send + Sync + Copy>() {}

    #[test]
    fn channel_is_send_sync_copy_whatever_t_is() {
        assert_send_sync::<Channel<std::rc::Rc<u8>>>();
        assert_send_sync::<Channel<std::cell::Cell<u8>>>();
    }

    #[test]
    fn channel_compares_and_prints_by_id() {
        let a: Channel<Msg> = Channel::new(7);
        assert_eq!(a, Channel::new(7));
        assert_ne!(a, Channel::new(8));
        assert_eq!(a.id(), 7);
        assert!(format!("{a:?}").ends_with("Msg>(0x07)"), "{a:?}");
    }

    #[test]
    fn messagepack_is_encoded_as_rmp_serde_does() {
        let m = Msg(3, "hi".into());
        let bytes = encode_one::<Msg, _>(&m).expect("encodes");
        assert_eq!(&bytes[..], &rmp_serde::to_vec(&m).expect("encodes")[..]);
    }

    #[test]
    fn raw_bytes_are_handed_back_without_a_copy() {
        let payload = Bytes::from(vec![1u8; 1000]);
        let sent = encode_one::<Raw, _>(payload.clone()).expect("raw never fails");
        assert_eq!(sent.as_ptr(), payload.as_ptr());
    }

    #[test]
    fn a_failed_encode_leaves_the_buffer_as_it_was() {
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                use serde::ser::SerializeSeq;
                let mut seq = s.serialize_seq(Some(2))?;
                seq.serialize_element(&1u8)?;
                Err(serde::ser::Error::custom("no"))
            }
        }
        let mut buf = BytesMut::from(&b"kept"[..]);
        let res = sealed::Encode::encode(&Fails, &mut buf);
        assert!(matches!(res, Err(SendFailure::Encode(_))), "{res:?}");
        assert_eq!(&buf[..], b"kept");
    }
}
