//! [`SecureHandshake`]: the preamble exchange and the Noise `XX` handshake with
//! identity proofs, as a state machine fed the bytes read (see the
//! [module docs](super)).

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::rngs::StdRng;
use rand::{CryptoRng, RngCore, SeedableRng};
use snow::params::{DHChoice, NoiseParams};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::HandshakeState;
use tokio_util::codec::Decoder;

use super::{
    Mode, Preamble, SecureError, Session, Suite, Suites, PREAMBLE_LEN, PROOF_CONTEXT, PROOF_LEN,
};
use crate::switch::Direction;
use crate::wire::codec::{Packet, PacketCodec};
use crate::wire::control::{self, Control};
use crate::{DisconnectReason, NodeId};

/// Largest Noise handshake message (the largest real one is 192 bytes).
pub const MAX_HANDSHAKE_MESSAGE: usize = 1024;

/// Most bytes a refusal's goodbye may take.
const MAX_REFUSAL: usize = 4096;

/// Which side of the connection we are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// We dialed.
    Initiator,
    /// We accepted.
    Responder,
}

impl From<Direction> for Role {
    /// The side that dialed initiates the handshake.
    fn from(direction: Direction) -> Self {
        match direction {
            Direction::Outbound => Role::Initiator,
            Direction::Inbound => Role::Responder,
        }
    }
}

/// A node's keys for the handshake: its ed25519 identity, its Noise static key and
/// the proof binding the two (made once per node, not per connection).
pub struct LocalIdentity {
    public_key: [u8; 32],
    static_secret: [u8; 32],
    proof: [u8; PROOF_LEN],
}

impl std::fmt::Debug for LocalIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LocalIdentity({})", self.node_id())
    }
}

impl LocalIdentity {
    /// The identity of the ed25519 key `identity_secret`, with the X25519 Noise static
    /// key `static_secret` (32 random bytes).
    #[must_use]
    pub fn new(identity_secret: &[u8; 32], static_secret: [u8; 32]) -> LocalIdentity {
        let signing = SigningKey::from_bytes(identity_secret);
        let static_public = x25519_public(&static_secret);
        let mut signed = PROOF_CONTEXT.to_vec();
        signed.extend_from_slice(&static_public);
        let signature = signing.sign(&signed);
        let public_key = signing.verifying_key().to_bytes();
        let mut proof = [0u8; PROOF_LEN];
        proof[..32].copy_from_slice(&public_key);
        proof[32..].copy_from_slice(&signature.to_bytes());
        LocalIdentity {
            public_key,
            static_secret,
            proof,
        }
    }

    /// The id this identity proves.
    #[must_use]
    pub fn node_id(&self) -> NodeId {
        NodeId::from_public_key(&self.public_key)
    }
}

/// The X25519 public key of a secret.
fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    if let Some(mut dh) = DefaultResolver.resolve_dh(&DHChoice::Curve25519) {
        dh.set(secret);
        out.copy_from_slice(dh.pubkey());
    }
    out
}

/// Who the remote proved to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoteIdentity {
    /// The id of its key.
    pub node_id: NodeId,
    /// Its ed25519 public key.
    pub public_key: [u8; 32],
}

/// What a finished handshake gives the connection.
#[derive(Debug)]
pub struct Secured {
    /// The remote's proven identity (`None` in plaintext).
    pub remote: Option<RemoteIdentity>,
    /// The frames' ciphers (`None` in plaintext).
    pub session: Option<Session>,
}

enum Stage {
    Preamble,
    Noise(Box<NoiseStage>),
    Refused,
    Done(Option<Box<Secured>>),
    Failed,
}

struct NoiseStage {
    hs: HandshakeState,
    suite: Suite,
    /// Messages read so far.
    read: u8,
    remote: Option<RemoteIdentity>,
}

/// The transport handshake of one connection (see the [module docs](super)).
pub struct SecureHandshake {
    role: Role,
    ours: [u8; PREAMBLE_LEN],
    identity: Arc<LocalIdentity>,
    seed: [u8; 32],
    out: BytesMut,
    stage: Stage,
}

impl SecureHandshake {
    /// A handshake that starts by sending our preamble. `mode` is
    /// [`Mode::Noise`] or [`Mode::Plaintext`]; `seed` (32 random bytes, fresh per
    /// connection) makes the ephemeral key.
    #[must_use]
    pub fn new(
        role: Role,
        mode: Mode,
        suites: Suites,
        identity: Arc<LocalIdentity>,
        seed: [u8; 32],
    ) -> SecureHandshake {
        let ours = Preamble { mode, suites }.encode();
        SecureHandshake {
            role,
            ours,
            identity,
            seed,
            out: BytesMut::from(&ours[..]),
            stage: Stage::Preamble,
        }
    }

    /// What a refused connection is sent: the preamble saying so, then `goodbye` (a
    /// `Goodbye` packet).
    #[must_use]
    pub fn refusal(goodbye: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(PREAMBLE_LEN + goodbye.len());
        out.put_slice(
            &Preamble {
                mode: Mode::Refused,
                suites: Suites(0),
            }
            .encode(),
        );
        out.put_slice(goodbye);
        out.freeze()
    }

    /// Bytes to write now, if any.
    pub fn poll_transmit(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| self.out.split().freeze())
    }

    /// The outcome, once the handshake is done and [`poll_transmit`](Self::poll_transmit)
    /// has handed out its last message. Bytes left in the read buffer belong to the
    /// stream after the handshake.
    pub fn poll_done(&mut self) -> Option<Secured> {
        if !self.out.is_empty() {
            return None;
        }
        match &mut self.stage {
            Stage::Done(secured) => secured.take().map(|s| *s),
            _ => None,
        }
    }

    /// Feeds the bytes read (consumes what the handshake used). An error is the
    /// reason to close with; the handshake is over then.
    pub fn handle_read(&mut self, buf: &mut BytesMut) -> Result<(), DisconnectReason> {
        let result = self.step(buf);
        if result.is_err() {
            self.stage = Stage::Failed;
        }
        result
    }

    fn step(&mut self, buf: &mut BytesMut) -> Result<(), DisconnectReason> {
        loop {
            match &mut self.stage {
                Stage::Preamble => {
                    let Some(head) = buf.get(..PREAMBLE_LEN) else {
                        return Ok(());
                    };
                    let mut theirs = [0u8; PREAMBLE_LEN];
                    theirs.copy_from_slice(head);
                    buf.advance(PREAMBLE_LEN);
                    self.stage = self.after_preamble(theirs)?;
                }
                Stage::Noise(noise) => {
                    let Some(&[hi, lo]) = buf.get(..2) else {
                        return Ok(());
                    };
                    let len = usize::from(u16::from_be_bytes([hi, lo]));
                    if len > MAX_HANDSHAKE_MESSAGE {
                        return Err(SecureError::HandshakeTooLarge(len).into());
                    }
                    let Some(message) = buf.get(2..2 + len) else {
                        return Ok(());
                    };
                    let mut payload = [0u8; MAX_HANDSHAKE_MESSAGE];
                    let n = noise
                        .hs
                        .read_message(message, &mut payload)
                        .map_err(|e| SecureError::Noise(e.to_string()))?;
                    buf.advance(2 + len);
                    noise.read += 1;
                    let payload = &payload[..n];
                    let first_of_responder = self.role == Role::Responder && noise.read == 1;
                    if first_of_responder {
                        if !payload.is_empty() {
                            return Err(SecureError::BadIdentityProof(
                                "a payload in the first message".into(),
                            )
                            .into());
                        }
                    } else {
                        noise.remote = Some(verify_proof(&noise.hs, payload)?);
                    }
                    if !noise.hs.is_handshake_finished() && noise.hs.is_my_turn() {
                        let proof = self.identity.proof;
                        write_noise(&mut noise.hs, &proof, &mut self.out)?;
                    }
                    if noise.hs.is_handshake_finished() {
                        let secured = finish(self.role, noise)?;
                        self.stage = Stage::Done(Some(Box::new(secured)));
                    }
                }
                Stage::Refused => {
                    let mut codec = PacketCodec::new(MAX_REFUSAL);
                    let mut peek = BytesMut::from(&buf[..buf.len().min(MAX_REFUSAL + 16)]);
                    return match codec.decode(&mut peek) {
                        Ok(None) if buf.len() < MAX_REFUSAL => Ok(()),
                        Ok(Some(Packet::Msg(m))) if m.channel == 0 => {
                            match control::decode(&m.payload) {
                                Ok(Control::Goodbye(reason)) => {
                                    Err(DisconnectReason::ByRemote(Box::new(reason)))
                                }
                                _ => Err(refused_without_reason()),
                            }
                        }
                        _ => Err(refused_without_reason()),
                    };
                }
                Stage::Done(_) | Stage::Failed => return Ok(()),
            }
        }
    }

    fn after_preamble(&mut self, theirs_bytes: [u8; PREAMBLE_LEN]) -> Result<Stage, SecureError> {
        let theirs = Preamble::decode(&theirs_bytes)?;
        let ours = Preamble::decode(&self.ours)?;
        match (ours.mode, theirs.mode) {
            (_, Mode::Refused) => Ok(Stage::Refused),
            (Mode::Plaintext, Mode::Plaintext) => Ok(Stage::Done(Some(Box::new(Secured {
                remote: None,
                session: None,
            })))),
            (Mode::Noise, Mode::Plaintext) => Err(SecureError::PlaintextRemote),
            (Mode::Plaintext, Mode::Noise) => Err(SecureError::EncryptedRemote),
            (_, _) => {
                let suite = ours
                    .suites
                    .choose(theirs.suites)
                    .ok_or(SecureError::NoCommonSuite)?;
                let mut prologue = b"switchyard noise v1".to_vec();
                let (first, second) = match self.role {
                    Role::Initiator => (self.ours, theirs_bytes),
                    Role::Responder => (theirs_bytes, self.ours),
                };
                prologue.extend_from_slice(&first);
                prologue.extend_from_slice(&second);
                let params: NoiseParams = format!("Noise_XX_25519_{}_SHA256", suite.noise_name())
                    .parse()
                    .map_err(|e: snow::Error| SecureError::Noise(e.to_string()))?;
                let builder = snow::Builder::with_resolver(
                    params,
                    Box::new(SeededResolver { seed: self.seed }),
                )
                .local_private_key(&self.identity.static_secret)
                .prologue(&prologue);
                let built = match self.role {
                    Role::Initiator => builder.build_initiator(),
                    Role::Responder => builder.build_responder(),
                };
                let mut hs = built.map_err(|e| SecureError::Noise(e.to_string()))?;
                if self.role == Role::Initiator {
                    write_noise(&mut hs, &[], &mut self.out)?;
                }
                Ok(Stage::Noise(Box::new(NoiseStage {
                    hs,
                    suite,
                    read: 0,
                    remote: None,
                })))
            }
        }
    }
}

fn refused_without_reason() -> DisconnectReason {
    DisconnectReason::ByRemote(Box::new(DisconnectReason::Application(
        "refused without a readable reason".into(),
    )))
}

/// Writes one handshake message, framed, into `out`.
fn write_noise(
    hs: &mut HandshakeState,
    payload: &[u8],
    out: &mut BytesMut,
) -> Result<(), SecureError> {
    let mut message = [0u8; MAX_HANDSHAKE_MESSAGE];
    let n = hs
        .write_message(payload, &mut message)
        .map_err(|e| SecureError::Noise(e.to_string()))?;
    // n ≤ MAX_HANDSHAKE_MESSAGE, which fits a u16.
    out.put_u16(u16::try_from(n).unwrap_or(u16::MAX));
    out.put_slice(&message[..n]);
    Ok(())
}

/// Checks the remote's identity proof against the static key the handshake
/// authenticated.
fn verify_proof(hs: &HandshakeState, payload: &[u8]) -> Result<RemoteIdentity, SecureError> {
    let bad = |why: &str| SecureError::BadIdentityProof(why.into());
    if payload.len() != PROOF_LEN {
        return Err(bad("not 96 bytes"));
    }
    let remote_static = hs
        .get_remote_static()
        .ok_or_else(|| bad("no static key authenticated"))?;
    let mut public_key = [0u8; 32];
    public_key.copy_from_slice(&payload[..32]);
    let key = VerifyingKey::from_bytes(&public_key).map_err(|_| bad("not an ed25519 key"))?;
    let signature =
        Signature::from_slice(&payload[32..]).map_err(|_| bad("malformed signature"))?;
    let mut signed = PROOF_CONTEXT.to_vec();
    signed.extend_from_slice(remote_static);
    key.verify_strict(&signed, &signature)
        .map_err(|_| bad("the signature does not cover the Noise static key"))?;
    Ok(RemoteIdentity {
        node_id: NodeId::from_public_key(&public_key),
        public_key,
    })
}

fn finish(role: Role, noise: &mut NoiseStage) -> Result<Secured, SecureError> {
    let remote = noise
        .remote
        .ok_or_else(|| SecureError::BadIdentityProof("no proof received".into()))?;
    let (initiator_to_responder, responder_to_initiator) = noise.hs.dangerously_get_raw_split();
    let session = match role {
        Role::Initiator => Session::new(
            noise.suite,
            &initiator_to_responder,
            &responder_to_initiator,
        ),
        Role::Responder => Session::new(
            noise.suite,
            &responder_to_initiator,
            &initiator_to_responder,
        ),
    };
    Ok(Secured {
        remote: Some(remote),
        session: Some(session),
    })
}

/// snow's default primitives, with the ephemeral key drawn from the seed passed in.
struct SeededResolver {
    seed: [u8; 32],
}

struct SeededRng(StdRng);

impl RngCore for SeededRng {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand::Error> {
        self.0.try_fill_bytes(dest)
    }
}

impl CryptoRng for SeededRng {}
impl Random for SeededRng {}

impl CryptoResolver for SeededResolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(SeededRng(StdRng::from_seed(self.seed))))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &snow::params::HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &snow::params::CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::goodbye_bytes;

    fn identity(n: u8) -> Arc<LocalIdentity> {
        Arc::new(LocalIdentity::new(&[n; 32], [n.wrapping_add(100); 32]))
    }

    fn node(role: Role, mode: Mode, suites: Suites, n: u8) -> SecureHandshake {
        SecureHandshake::new(role, mode, suites, identity(n), [n; 32])
    }

    #[test]
    fn the_dialer_initiates() {
        assert_eq!(Role::from(Direction::Outbound), Role::Initiator);
        assert_eq!(Role::from(Direction::Inbound), Role::Responder);
    }

    /// Moves bytes both ways until neither side has anything to say; `tamper` may
    /// change what goes from the responder to the initiator (`true`) or back.
    fn pump(
        a: &mut SecureHandshake,
        b: &mut SecureHandshake,
        mut tamper: impl FnMut(bool, &mut BytesMut),
    ) -> (
        Result<(), DisconnectReason>,
        Result<(), DisconnectReason>,
        BytesMut,
        BytesMut,
    ) {
        let (mut to_a, mut to_b) = (BytesMut::new(), BytesMut::new());
        let (mut ra, mut rb) = (Ok(()), Ok(()));
        for _ in 0..10 {
            let mut moved = false;
            while let Some(bytes) = a.poll_transmit() {
                let mut bytes = BytesMut::from(&bytes[..]);
                tamper(false, &mut bytes);
                to_b.extend_from_slice(&bytes);
                moved = true;
            }
            while let Some(bytes) = b.poll_transmit() {
                let mut bytes = BytesMut::from(&bytes[..]);
                tamper(true, &mut bytes);
                to_a.extend_from_slice(&bytes);
                moved = true;
            }
            if ra.is_ok() {
                ra = a.handle_read(&mut to_a);
            }
            if rb.is_ok() {
                rb = b.handle_read(&mut to_b);
            }
            if !moved {
                break;
            }
        }
        (ra, rb, to_a, to_b)
    }

    #[test]
    fn both_sides_prove_their_ids_and_share_a_session() {
        for (sa, sb, suite) in [
            (Suites::BOTH, Suites::BOTH, Suite::AesGcm),
            (Suites::BOTH, Suites::CHACHA_ONLY, Suite::ChaChaPoly),
            (Suites::CHACHA_ONLY, Suites::CHACHA_ONLY, Suite::ChaChaPoly),
        ] {
            let mut a = node(Role::Initiator, Mode::Noise, sa, 1);
            let mut b = node(Role::Responder, Mode::Noise, sb, 2);
            let (ra, rb, _, _) = pump(&mut a, &mut b, |_, _| {});
            assert_eq!((ra, rb), (Ok(()), Ok(())));
            let da = a.poll_done().expect("initiator done");
            let db = b.poll_done().expect("responder done");
            assert_eq!(da.remote.map(|r| r.node_id), Some(identity(2).node_id()));
            assert_eq!(db.remote.map(|r| r.node_id), Some(identity(1).node_id()));
            let (mut sa, mut sb) = (da.session.unwrap(), db.session.unwrap());
            assert_eq!((sa.suite, sb.suite), (suite, suite));
            for a_to_b in [true, false] {
                let (from, to) = if a_to_b {
                    (&mut sa, &mut sb)
                } else {
                    (&mut sb, &mut sa)
                };
                let mut wire = BytesMut::new();
                from.sealer.seal_slice(b"over the wire", &mut wire).unwrap();
                let mut out = BytesMut::new();
                to.opener.open(&mut wire, &mut out).unwrap();
                assert_eq!(&out[..], b"over the wire");
            }
        }
    }

    #[test]
    fn the_frames_are_noise_transport_messages() {
        // Our frames must be what snow's own transport phase makes and takes.
        for suite in [Suite::AesGcm, Suite::ChaChaPoly] {
            let name = format!("Noise_XX_25519_{}_SHA256", suite.noise_name());
            let (si, sr, ei, er) = ([3u8; 32], [4u8; 32], [5u8; 32], [6u8; 32]);
            let mut i = snow::Builder::new(name.parse().unwrap())
                .fixed_ephemeral_key_for_testing_only(&ei)
                .local_private_key(&si)
                .build_initiator()
                .unwrap();
            let mut r = snow::Builder::new(name.parse().unwrap())
                .fixed_ephemeral_key_for_testing_only(&er)
                .local_private_key(&sr)
                .build_responder()
                .unwrap();
            let (mut m, mut p) = ([0u8; 1024], [0u8; 1024]);
            let n = i.write_message(&[], &mut m).unwrap();
            r.read_message(&m[..n], &mut p).unwrap();
            let n = r.write_message(&[], &mut m).unwrap();
            i.read_message(&m[..n], &mut p).unwrap();
            let n = i.write_message(&[], &mut m).unwrap();
            r.read_message(&m[..n], &mut p).unwrap();
            let (i2r, r2i) = i.dangerously_get_raw_split();
            let mut ours = Session::new(suite, &i2r, &r2i);
            let mut theirs = r.into_transport_mode().unwrap();
            for round in 0..3u8 {
                let mut wire = BytesMut::new();
                ours.sealer.seal_slice(&[round; 100], &mut wire).unwrap();
                let n = theirs.read_message(&wire[2..], &mut m).unwrap();
                assert_eq!(&m[..n], &[round; 100][..]);
                let n = theirs.write_message(&[round; 50], &mut m).unwrap();
                let mut wire = BytesMut::new();
                wire.put_u16(u16::try_from(n).unwrap());
                wire.put_slice(&m[..n]);
                let mut out = BytesMut::new();
                ours.opener.open(&mut wire, &mut out).unwrap();
                assert_eq!(&out[..], &[round; 50][..]);
            }
        }
    }

    #[test]
    fn plaintext_meeting_noise_fails_on_both_sides_at_the_preamble() {
        let mut a = node(Role::Initiator, Mode::Plaintext, Suites::BOTH, 1);
        let mut b = node(Role::Responder, Mode::Noise, Suites::BOTH, 2);
        let (ra, rb, _, _) = pump(&mut a, &mut b, |_, _| {});
        assert_eq!(ra, Err(SecureError::EncryptedRemote.into()));
        assert_eq!(rb, Err(SecureError::PlaintextRemote.into()));
    }

    #[test]
    fn plaintext_on_both_sides_leaves_the_stream_after_the_preamble() {
        let mut a = node(Role::Initiator, Mode::Plaintext, Suites::BOTH, 1);
        let mut b = node(Role::Responder, Mode::Plaintext, Suites::BOTH, 2);
        let mut buf = BytesMut::from(&b.poll_transmit().unwrap()[..]);
        buf.extend_from_slice(b"the stream");
        a.handle_read(&mut buf).unwrap();
        let _ = a.poll_transmit();
        let done = a.poll_done().expect("done");
        assert!(done.remote.is_none() && done.session.is_none());
        assert_eq!(&buf[..], b"the stream");
    }

    #[test]
    fn a_downgraded_suite_offer_fails_the_handshake() {
        // A man in the middle strips AES-GCM from both offers: both would agree on
        // ChaChaPoly, but their prologues differ.
        let mut a = node(Role::Initiator, Mode::Noise, Suites::BOTH, 1);
        let mut b = node(Role::Responder, Mode::Noise, Suites::BOTH, 2);
        let mut first = [true, true];
        let (ra, rb, _, _) = pump(&mut a, &mut b, |to_initiator, bytes| {
            let slot = &mut first[usize::from(to_initiator)];
            if std::mem::take(slot) {
                bytes[6] = 1;
            }
        });
        assert!(
            matches!(&ra, Err(DisconnectReason::Secure(SecureError::Noise(_)))),
            "{ra:?} {rb:?}"
        );
        assert!(a.poll_done().is_none() && b.poll_done().is_none());
    }

    #[test]
    fn a_flipped_handshake_byte_fails() {
        let mut a = node(Role::Initiator, Mode::Noise, Suites::BOTH, 1);
        let mut b = node(Role::Responder, Mode::Noise, Suites::BOTH, 2);
        let mut seen = 0;
        let (ra, _, _, _) = pump(&mut a, &mut b, |to_initiator, bytes| {
            if to_initiator {
                seen += 1;
                if seen == 2 {
                    let last = bytes.len() - 1;
                    bytes[last] ^= 0x80;
                }
            }
        });
        assert!(matches!(
            ra,
            Err(DisconnectReason::Secure(SecureError::Noise(_)))
        ));
    }

    #[test]
    fn a_proof_over_another_static_key_is_refused() {
        let honest = identity(2);
        let other = LocalIdentity::new(&[2; 32], [55; 32]);
        // The identity key signs a different static key than the one in use.
        let forged = Arc::new(LocalIdentity {
            public_key: honest.public_key,
            static_secret: honest.static_secret,
            proof: other.proof,
        });
        let mut a = node(Role::Initiator, Mode::Noise, Suites::BOTH, 1);
        let mut b =
            SecureHandshake::new(Role::Responder, Mode::Noise, Suites::BOTH, forged, [9; 32]);
        let (ra, _, _, _) = pump(&mut a, &mut b, |_, _| {});
        assert!(matches!(
            ra,
            Err(DisconnectReason::Secure(SecureError::BadIdentityProof(_)))
        ));
        assert!(ra.unwrap_err().is_misbehavior());
    }

    #[test]
    fn a_refusal_gives_the_remote_reason() {
        let mut a = node(Role::Initiator, Mode::Noise, Suites::BOTH, 1);
        let refusal = SecureHandshake::refusal(&goodbye_bytes(&DisconnectReason::MaxInbound));
        let mut buf = BytesMut::from(&refusal[..5]);
        assert_eq!(a.handle_read(&mut buf), Ok(()));
        buf.extend_from_slice(&refusal[5..]);
        assert_eq!(
            a.handle_read(&mut buf),
            Err(DisconnectReason::ByRemote(Box::new(
                DisconnectReason::MaxInbound
            )))
        );
    }

    #[test]
    fn garbage_is_refused_with_what_was_wrong() {
        let mut a = node(Role::Responder, Mode::Noise, Suites::BOTH, 1);
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\n"[..]);
        assert_eq!(
            a.handle_read(&mut buf),
            Err(SecureError::NotSwitchyard.into())
        );
        let mut a = node(Role::Responder, Mode::Noise, Suites::BOTH, 1);
        let mut buf = BytesMut::from(&node(Role::Initiator, Mode::Noise, Suites::BOTH, 2).ours[..]);
        buf.put_u16(60_000);
        assert_eq!(
            a.handle_read(&mut buf),
            Err(SecureError::HandshakeTooLarge(60_000).into())
        );
        let mut a = node(Role::Responder, Mode::Noise, Suites::BOTH, 1);
        let mut buf = BytesMut::from(&node(Role::Initiator, Mode::Noise, Suites(2), 2).ours[..]);
        let mut only_aes = node(Role::Responder, Mode::Noise, Suites::CHACHA_ONLY, 1);
        assert_eq!(
            only_aes.handle_read(&mut buf.clone()),
            Err(SecureError::NoCommonSuite.into())
        );
        buf.put_u16(3);
        buf.put_slice(&[1, 2, 3]);
        assert!(matches!(
            a.handle_read(&mut buf),
            Err(DisconnectReason::Secure(SecureError::Noise(_)))
        ));
    }
}

#[cfg(test)]
mod props {
    use proptest::prelude::*;

    use crate::fuzz::secure_handshake;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Any bytes, from the first or after a real initiator's first messages,
        /// in any read sizes: an outcome or a typed error, never a panic.
        #[test]
        fn hostile_bytes_end_in_a_reason_not_a_panic(
            cfg in any::<u8>(),
            step in 1u8..=255,
            after_msg1 in any::<bool>(),
            data in proptest::collection::vec(any::<u8>(), 0..1500),
        ) {
            let mut input = vec![cfg, step];
            if after_msg1 {
                let seeds = crate::fuzz::seeds();
                if let Some((_, _, seed)) = seeds.iter().find(|(t, n, _)| *t == "secure" && n == "msg1-0") {
                    input = seed.clone();
                }
            }
            input.extend_from_slice(&data);
            secure_handshake(&input);
        }
    }
}
