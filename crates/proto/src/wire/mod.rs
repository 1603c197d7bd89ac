//! What travels on a connection: the binary packets ([`codec`]) and the MessagePack
//! messages of channel 0 ([`control`]). Both decoders bound every length before they
//! allocate and turn every malformed input into a typed error.

pub mod codec;
pub mod control;

pub use codec::{CodecError, Msg, MsgKind, Packet, PacketCodec};
pub use control::{Control, ControlError, CONTROL_CHANNEL};
