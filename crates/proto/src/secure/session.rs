//! The frames after the handshake: [`Sealer`] encrypts what the core hands out,
//! [`Opener`] decrypts what was read, each with its own key and counter (the Noise
//! transport phase: AEAD with empty associated data, the nonce a 64-bit counter
//! encoded as the Noise spec says for the cipher).

use bytes::{Buf, BufMut, BytesMut};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};

use super::{SecureError, Suite};
use crate::Transmit;

/// Largest frame on the wire after its length field (the Noise message limit).
pub const MAX_FRAME: usize = 65_535;
/// Length of the AEAD tag that ends every frame.
pub const TAG_LEN: usize = 16;
/// Most plaintext one frame carries.
pub const MAX_FRAME_PLAINTEXT: usize = MAX_FRAME - TAG_LEN;

/// One direction's key and counter.
struct CipherState {
    key: LessSafeKey,
    suite: Suite,
    nonce: u64,
}

impl CipherState {
    fn new(suite: Suite, key: &[u8; 32]) -> CipherState {
        let algorithm = match suite {
            Suite::ChaChaPoly => &CHACHA20_POLY1305,
            Suite::AesGcm => &AES_256_GCM,
        };
        // Both algorithms take 32-byte keys: this cannot fail.
        let unbound = UnboundKey::new(algorithm, key).unwrap_or_else(|_| unreachable!());
        CipherState {
            key: LessSafeKey::new(unbound),
            suite,
            nonce: 0,
        }
    }

    /// The next nonce: 32 zero bits, then the counter (big-endian for AES-GCM,
    /// little-endian for ChaChaPoly, as the Noise spec has it).
    fn next_nonce(&mut self) -> Result<Nonce, SecureError> {
        if self.nonce == u64::MAX {
            return Err(SecureError::NonceExhausted);
        }
        let mut bytes = [0u8; 12];
        bytes[4..].copy_from_slice(&match self.suite {
            Suite::AesGcm => self.nonce.to_be_bytes(),
            Suite::ChaChaPoly => self.nonce.to_le_bytes(),
        });
        self.nonce += 1;
        Ok(Nonce::assume_unique_for_key(bytes))
    }
}

/// Encrypts the outgoing stream into frames.
pub struct Sealer(CipherState);

/// Decrypts the incoming frames back into the stream.
pub struct Opener(CipherState);

/// Both directions of an encrypted connection.
pub struct Session {
    /// What we send.
    pub sealer: Sealer,
    /// What we receive.
    pub opener: Opener,
    /// The cipher both use.
    pub suite: Suite,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Session({})", self.suite)
    }
}

impl Session {
    /// A session from the two keys of the Noise split (`send` encrypts our frames,
    /// `recv` decrypts theirs).
    #[must_use]
    pub fn new(suite: Suite, send: &[u8; 32], recv: &[u8; 32]) -> Session {
        Session {
            sealer: Sealer(CipherState::new(suite, send)),
            opener: Opener(CipherState::new(suite, recv)),
            suite,
        }
    }
}

impl Sealer {
    /// Encrypts everything in `plain` into frames appended to `out`, leaving `plain`
    /// empty (each byte is copied once, then encrypted in place).
    ///
    /// A large part of the transmit (a message payload handed over without copying,
    /// [`COPY_THRESHOLD`](crate::connection::transmit::COPY_THRESHOLD) bytes or more)
    /// starts a frame of its own, so the frames of a large payload carry nothing but
    /// payload: the receiver can then decrypt them straight into the message they
    /// belong to ([`Opener::open_frame`]) instead of into its read buffer and copy
    /// them over again.
    pub fn seal(&mut self, plain: &mut Transmit, out: &mut BytesMut) -> Result<(), SecureError> {
        let total = plain.len();
        let frames = total.div_ceil(MAX_FRAME_PLAINTEXT) + plain.part_count();
        out.reserve(total + frames * (2 + TAG_LEN));
        let mut frame: Option<usize> = None;
        let mut result = Ok(());
        plain.for_each_part(|mut part| {
            if part.len() >= crate::connection::transmit::COPY_THRESHOLD {
                if let (Some(start), Ok(())) = (frame.take(), &result) {
                    result = self.finish_frame(out, start);
                }
            }
            while !part.is_empty() && result.is_ok() {
                let start = *frame.get_or_insert_with(|| {
                    let start = out.len();
                    out.put_u16(0);
                    start
                });
                let room = MAX_FRAME_PLAINTEXT - (out.len() - start - 2);
                let take = room.min(part.len());
                out.extend_from_slice(&part[..take]);
                part = &part[take..];
                if take == room {
                    frame = None;
                    result = self.finish_frame(out, start);
                }
            }
        });
        if let (Some(start), Ok(())) = (frame, &result) {
            result = self.finish_frame(out, start);
        }
        plain.advance(total);
        result
    }

    /// Encrypts one slice into frames appended to `out`.
    pub fn seal_slice(&mut self, mut data: &[u8], out: &mut BytesMut) -> Result<(), SecureError> {
        while !data.is_empty() {
            let take = data.len().min(MAX_FRAME_PLAINTEXT);
            let start = out.len();
            out.put_u16(0);
            out.extend_from_slice(&data[..take]);
            self.finish_frame(out, start)?;
            data = &data[take..];
        }
        Ok(())
    }

    /// Encrypts the frame that starts at `start` (its length field) and runs to the
    /// end of `out`; appends the tag and fills in the length.
    fn finish_frame(&mut self, out: &mut BytesMut, start: usize) -> Result<(), SecureError> {
        let nonce = self.0.next_nonce()?;
        let body = &mut out[start + 2..];
        let tag = self
            .0
            .key
            .seal_in_place_separate_tag(nonce, Aad::empty(), body)
            .map_err(|_| SecureError::NonceExhausted)?;
        let len = body.len() + TAG_LEN;
        out.extend_from_slice(tag.as_ref());
        // At most MAX_FRAME by construction.
        let len = u16::try_from(len).unwrap_or(u16::MAX);
        out[start..start + 2].copy_from_slice(&len.to_be_bytes());
        Ok(())
    }
}

impl Opener {
    /// Decrypts every complete frame at the front of `input` (consuming it) and
    /// appends the plaintext to `out`; a partial frame stays in `input`. Returns the
    /// plaintext bytes added.
    pub fn open(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> Result<usize, SecureError> {
        let mut produced = 0;
        while let Some(n) = self.open_frame(input, out)? {
            produced += n;
        }
        Ok(produced)
    }

    /// The plaintext length of the frame at the front of `input` when the whole
    /// frame is there (`None` while it is not).
    pub fn whole_frame(input: &[u8]) -> Result<Option<usize>, SecureError> {
        let Some(&[hi, lo]) = input.get(..2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if len < TAG_LEN {
            return Err(SecureError::ShortFrame(len));
        }
        Ok((input.len() >= 2 + len).then_some(len - TAG_LEN))
    }

    /// Decrypts the frame at the front of `input` (consuming it) and appends its
    /// plaintext to `out`: the plaintext length, or `None` (nothing consumed) when
    /// the whole frame has not arrived.
    pub fn open_frame(
        &mut self,
        input: &mut BytesMut,
        out: &mut BytesMut,
    ) -> Result<Option<usize>, SecureError> {
        if Self::whole_frame(input)?.is_none() {
            return Ok(None);
        }
        let Some(&[hi, lo]) = input.get(..2) else {
            return Ok(None);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        // Decrypted where it lies, then copied out: `out` needs room for the
        // plaintext only (a message's buffer lent for it has exactly that).
        let Some(body) = input.get_mut(2..2 + len) else {
            return Ok(None);
        };
        let nonce = self.0.next_nonce()?;
        let opened = match self.0.key.open_in_place(nonce, Aad::empty(), body) {
            Ok(plain) => {
                out.extend_from_slice(plain);
                Ok(Some(plain.len()))
            }
            Err(_) => Err(SecureError::Decrypt),
        };
        input.advance(2 + len);
        opened
    }

    /// The bytes still needed to complete the frame at the front of `input` (0 when
    /// a whole frame is there, or when not even its length is).
    #[must_use]
    pub fn missing(input: &[u8]) -> usize {
        match input.get(..2) {
            Some(&[hi, lo]) => {
                (2 + usize::from(u16::from_be_bytes([hi, lo]))).saturating_sub(input.len())
            }
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn pair(suite: Suite) -> (Session, Session) {
        let (k1, k2) = ([7u8; 32], [9u8; 32]);
        (Session::new(suite, &k1, &k2), Session::new(suite, &k2, &k1))
    }

    #[test]
    fn a_frame_opens_into_exactly_its_plaintext_room() {
        let (mut a, mut b) = pair(Suite::AesGcm);
        let mut wire = BytesMut::new();
        a.sealer.seal_slice(&[9u8; 10_000], &mut wire).unwrap();
        let mut out = BytesMut::with_capacity(10_000);
        let at = out.as_ptr() as usize;
        assert_eq!(
            b.opener.open_frame(&mut wire, &mut out).unwrap(),
            Some(10_000)
        );
        assert_eq!(out.capacity(), 10_000, "no reallocation");
        assert_eq!(out.as_ptr() as usize, at);
        assert!(out.iter().all(|b| *b == 9));
    }

    #[test]
    fn a_large_payload_gets_frames_of_its_own() {
        let (mut a, mut b) = pair(Suite::AesGcm);
        let payload: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
        let mut t = Transmit::new();
        t.push_bytes(Bytes::from_static(b"header"));
        t.push_bytes(Bytes::from(payload.clone()));
        let mut wire = BytesMut::new();
        a.sealer.seal(&mut t, &mut wire).unwrap();
        // Frame by frame, as a receiver that routes payload elsewhere opens them.
        let mut sizes = Vec::new();
        let mut out = BytesMut::new();
        while let Some(len) = Opener::whole_frame(&wire).unwrap() {
            let before = out.len();
            assert_eq!(b.opener.open_frame(&mut wire, &mut out).unwrap(), Some(len));
            assert_eq!(out.len() - before, len);
            sizes.push(len);
        }
        assert!(wire.is_empty());
        assert_eq!(
            sizes,
            [6, MAX_FRAME_PLAINTEXT, 70_000 - MAX_FRAME_PLAINTEXT]
        );
        assert_eq!(&out[..6], b"header");
        assert_eq!(&out[6..], &payload[..]);
        // Half a frame is not a frame; a length below the tag is refused.
        let mut half = BytesMut::from(&[0u8, 40, 1, 2][..]);
        assert_eq!(Opener::whole_frame(&half).unwrap(), None);
        assert_eq!(b.opener.open_frame(&mut half, &mut out).unwrap(), None);
        assert_eq!(half.len(), 4);
        assert!(matches!(
            Opener::whole_frame(&[0, 3, 0, 0, 0]),
            Err(SecureError::ShortFrame(3))
        ));
    }

    #[test]
    fn a_transmit_of_many_parts_round_trips_across_frames() {
        for suite in [Suite::AesGcm, Suite::ChaChaPoly] {
            let (mut a, mut b) = pair(suite);
            let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
            let mut t = Transmit::new();
            t.push_bytes(Bytes::from_static(b"head"));
            t.push_bytes(Bytes::from(big.clone()));
            t.push_bytes(Bytes::from_static(b"tail"));
            let mut wire = BytesMut::new();
            a.sealer.seal(&mut t, &mut wire).unwrap();
            assert!(t.is_empty());
            // "head" alone (the large part starts a frame of its own), 200,000 bytes
            // in frames of at most 65,519 (four), "tail" in the last of them.
            assert_eq!(wire.len(), 200_008 + 5 * (2 + TAG_LEN));
            let mut plain = BytesMut::new();
            // Fed a byte at a time at first, then in one piece.
            let mut input = BytesMut::new();
            for byte in wire.split_to(10).iter() {
                input.put_u8(*byte);
                assert_eq!(b.opener.open(&mut input, &mut plain).unwrap(), 0);
            }
            assert_eq!(Opener::missing(&input), 2 + 4 + TAG_LEN - 10);
            input.extend_from_slice(&wire);
            assert_eq!(b.opener.open(&mut input, &mut plain).unwrap(), 200_008);
            assert!(input.is_empty());
            assert_eq!(&plain[..4], b"head");
            assert_eq!(&plain[4..200_004], &big[..]);
            assert_eq!(&plain[200_004..], b"tail");
        }
    }

    #[test]
    fn a_flipped_byte_anywhere_fails_to_decrypt() {
        let (mut a, mut b) = pair(Suite::AesGcm);
        let mut wire = BytesMut::new();
        a.sealer.seal_slice(b"hello there", &mut wire).unwrap();
        for i in 2..wire.len() {
            let mut copy = wire.clone();
            copy[i] ^= 1;
            let mut fresh = pair(Suite::AesGcm).1;
            let mut out = BytesMut::new();
            assert_eq!(
                fresh.opener.open(&mut copy, &mut out),
                Err(SecureError::Decrypt)
            );
            assert!(out.is_empty());
        }
        let mut out = BytesMut::new();
        b.opener.open(&mut wire, &mut out).unwrap();
        assert_eq!(&out[..], b"hello there");
    }

    #[test]
    fn frames_replayed_or_reordered_fail() {
        let (mut a, mut b) = pair(Suite::ChaChaPoly);
        let (mut one, mut two) = (BytesMut::new(), BytesMut::new());
        a.sealer.seal_slice(b"one", &mut one).unwrap();
        a.sealer.seal_slice(b"two", &mut two).unwrap();
        let mut out = BytesMut::new();
        assert_eq!(
            b.opener.open(&mut two.clone(), &mut out),
            Err(SecureError::Decrypt)
        );
        let (_, mut b) = (a, pair(Suite::ChaChaPoly).1);
        b.opener.open(&mut one.clone(), &mut out).unwrap();
        assert_eq!(b.opener.open(&mut one, &mut out), Err(SecureError::Decrypt));
    }

    #[test]
    fn a_frame_shorter_than_its_tag_is_refused() {
        let mut b = pair(Suite::AesGcm).1;
        let mut input = BytesMut::from(&[0u8, 15, 1, 2, 3][..]);
        assert_eq!(
            b.opener.open(&mut input, &mut BytesMut::new()),
            Err(SecureError::ShortFrame(15))
        );
    }
}
