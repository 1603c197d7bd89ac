//! The secure transport over real sockets: encrypted round trips with both cipher
//! suites, tampered ciphertext, identity mismatch, an impostor claiming a connected
//! peer's id, plaintext against encrypted, and garbage on the listening port.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use switchyard::proto::connection::handshake::{HandshakeError, Version, PROTOCOL_VERSION};
use switchyard::proto::secure::{Opener, Role, Sealer, SecureError, Suite};
use switchyard::proto::{
    Config, ConnParams, CoreConfig, Event as CoreEvent, PeerCore, RecvBudget, Transmit,
};
use switchyard::secure::Transport;
use switchyard::{
    ChannelConfig, Dial, DialError, DisconnectReason, GetPeer, NodeConfig, NodeId, NodeKey,
    PeerAddr, Shutdown,
};
use switchyard_integration_tests::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Small messages (batched) on 1, large raw payloads on 3.
fn chans() -> Vec<(u8, ChannelConfig, Mode)> {
    vec![
        (1, ChannelConfig::new(1), Mode::Batched),
        (
            3,
            ChannelConfig::new(1).max_message_size(6 << 20),
            Mode::Raw,
        ),
    ]
}

// ---------------------------------------------------------------------------------
// Log capture: transport and handshake failures of connections that were never
// admitted reach no service, only the log.
// ---------------------------------------------------------------------------------

struct Capture {
    inner: env_logger::Logger,
    lines: Mutex<Vec<String>>,
}

impl log::Log for Capture {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.level() <= log::Level::Debug && record.target().starts_with("switchyard") {
            let line = record.args().to_string();
            if line.contains("transport handshake failed") || line.contains(" closed: ") {
                self.lines
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(line);
            }
        }
        if self.inner.matches(record) {
            self.inner.log(record);
        }
    }

    fn flush(&self) {
        self.inner.flush();
    }
}

static CAPTURE: OnceLock<&'static Capture> = OnceLock::new();

/// Installs the capturing logger (RUST_LOG still controls what is printed).
fn init_capture() -> &'static Capture {
    CAPTURE.get_or_init(|| {
        let inner = env_logger::Builder::from_default_env()
            .is_test(true)
            .build();
        let printed = inner.filter();
        let capture: &'static Capture = Box::leak(Box::new(Capture {
            inner,
            lines: Mutex::new(Vec::new()),
        }));
        if log::set_logger(capture).is_ok() {
            log::set_max_level(printed.max(log::LevelFilter::Debug));
        }
        capture
    })
}

/// Waits until a captured line satisfies `pred`; returns it.
async fn wait_logged(timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
    let capture = init_capture();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(line) = capture
            .lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|l| pred(l))
        {
            return Some(line.clone());
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// Deterministic pseudo-random bytes (xorshift), different per `seed`.
fn payload(seed: u64, len: usize) -> Bytes {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn small(seq: u64) -> TestMsg {
    TestMsg {
        seq,
        body: vec![seq as u8; (seq % 97) as usize],
    }
}

fn config_with_aes(aes: Option<bool>) -> NodeConfig {
    NodeConfig {
        offer_aes_gcm: aes,
        ..test_config()
    }
}

/// Runs the transport handshake with `addr` as a throwaway client offering AES-GCM
/// too, and returns the suite agreed on (what the node's offer makes it choose).
async fn suite_of(addr: SocketAddr) -> Suite {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let transport = Transport::new(&NodeKey::generate(), false, Some(true));
    let (secured, _) = switchyard::secure::handshake(
        &mut stream,
        transport.start(Role::Initiator),
        Instant::now() + Duration::from_secs(5),
    )
    .await
    .unwrap();
    secured.session.unwrap().suite
}

/// How a proxy changes the bytes it forwards: xor the byte at this offset of the
/// stream with this mask, if any.
#[derive(Debug, Clone, Copy, Default)]
struct Tamper {
    /// Offset in the dialer → listener direction.
    up: Option<(u64, u8)>,
    /// Offset in the listener → dialer direction.
    down: Option<(u64, u8)>,
    /// In the dialer → listener direction, the length of the first encrypted frame
    /// that starts at or after this offset is rewritten to 5 (shorter than a tag).
    short_frame_after: Option<u64>,
}

/// A TCP proxy between a dialer and a listener, for one connection.
struct Proxy {
    /// Where the dialer connects.
    addr: SocketAddr,
    /// Bytes flipped so far.
    flipped: Arc<AtomicUsize>,
    /// The proxy's own address on its connection to the listener (the listener's
    /// log names the connection by it).
    upstream: Arc<Mutex<Option<SocketAddr>>>,
}

impl Proxy {
    fn flips(&self) -> usize {
        self.flipped.load(Ordering::SeqCst)
    }

    fn upstream(&self) -> SocketAddr {
        self.upstream
            .lock()
            .unwrap()
            .expect("the proxy connected to the listener")
    }
}

/// `node` saw `from` come up and go down with `Decrypt`, and nothing altered was
/// delivered: whatever arrived from it is intact.
async fn assert_closed_by_decrypt(node: &Node, from_id: NodeId) {
    let down = node
        .log
        .wait_for(Duration::from_secs(5), |l| {
            l.events.iter().any(|e| matches!(e, Event::Down(..)))
        })
        .await;
    let log = node.log.lock();
    assert!(down, "{:?}", log.events);
    assert_eq!(
        log.events,
        vec![
            Event::Up(from_id),
            Event::Down(from_id, DisconnectReason::Secure(SecureError::Decrypt))
        ]
    );
    for (i, (_, from, len)) in log.raw.iter().enumerate() {
        assert_eq!((*from, *len), (from_id, 1 << 20));
        assert_eq!(log.raw_digests[i], digest(&payload(i as u64, 1 << 20)));
    }
}

/// Dials `id` at `target` through a proxy that tampers as `tamper` says; the dial must
/// answer within `within` (fails fast, never waits out the handshake deadline).
async fn dial_through_proxy(
    dialer: &Node,
    id: NodeId,
    target: SocketAddr,
    tamper: Tamper,
    within: Duration,
) -> (Proxy, Result<switchyard::PeerHandle, DialError>) {
    let via = proxy(target, tamper).await;
    let t0 = Instant::now();
    let res = dialer
        .switch
        .send(Dial(PeerAddr::new(Some(id), via.addr)))
        .await
        .unwrap();
    assert!(t0.elapsed() < within, "{:?}", t0.elapsed());
    (via, res)
}

/// Starts a [`Proxy`] to `target`.
async fn proxy(target: SocketAddr, tamper: Tamper) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let flipped = Arc::new(AtomicUsize::new(0));
    let upstream = Arc::new(Mutex::new(None));
    let (count, local) = (flipped.clone(), upstream.clone());
    tokio::spawn(async move {
        let Ok((client, _)) = listener.accept().await else {
            return;
        };
        let Ok(server) = TcpStream::connect(target).await else {
            return;
        };
        *local.lock().unwrap() = server.local_addr().ok();
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (cr, cw) = client.into_split();
        let (sr, sw) = server.into_split();
        let frames = tamper.short_frame_after.map(FrameWalk::new);
        let up = tokio::spawn(pump(cr, sw, tamper.up, frames, count.clone()));
        let down = tokio::spawn(pump(sr, cw, tamper.down, None, count));
        let _ = tokio::join!(up, down);
    });
    Proxy {
        addr,
        flipped,
        upstream,
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    flip: Option<(u64, u8)>,
    mut frames: Option<FrameWalk>,
    flipped: Arc<AtomicUsize>,
) {
    let mut buf = vec![0u8; 16 << 10];
    let mut passed = 0u64;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some((at, mask)) = flip {
            if (passed..passed + n as u64).contains(&at) {
                buf[(at - passed) as usize] ^= mask;
                flipped.fetch_add(1, Ordering::SeqCst);
            }
        }
        if let Some(walk) = &mut frames {
            if walk.step(passed, &mut buf[..n]) {
                flipped.fetch_add(1, Ordering::SeqCst);
            }
        }
        passed += n as u64;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

/// What the dialer sends before its first encrypted frame: preamble (8), Noise
/// message 1 (2 + 32) and message 3 (2 + 48 + 112).
const DIALER_HANDSHAKE_BYTES: u64 = 8 + 34 + 162;

/// Follows the encrypted frames of the dialer's stream to rewrite one frame's length.
struct FrameWalk {
    /// Rewrite the first frame starting at or after this offset.
    after: u64,
    /// Offset of the next frame's length field.
    next: u64,
    /// Its first byte, when only that one was seen.
    hi: Option<u8>,
    /// Rewriting: the offset of the length's second byte.
    rewrite_lo: Option<u64>,
    done: bool,
}

impl FrameWalk {
    fn new(after: u64) -> FrameWalk {
        FrameWalk {
            after,
            next: DIALER_HANDSHAKE_BYTES,
            hi: None,
            rewrite_lo: None,
            done: false,
        }
    }

    /// Walks `chunk` (starting at stream offset `at`); true when the rewrite finished.
    fn step(&mut self, at: u64, chunk: &mut [u8]) -> bool {
        for (i, b) in chunk.iter_mut().enumerate() {
            if self.done {
                return false;
            }
            let o = at + i as u64;
            if self.rewrite_lo == Some(o) {
                *b = 5;
                self.done = true;
                return true;
            }
            if o == self.next && self.next >= self.after {
                *b = 0;
                self.rewrite_lo = Some(o + 1);
            } else if o == self.next {
                self.hi = Some(*b);
            } else if o == self.next + 1 {
                let len = u16::from_be_bytes([self.hi.take().unwrap_or(0), *b]);
                self.next = o + 1 + u64::from(len);
            }
        }
        false
    }
}

/// Reads until the peer closes (EOF or reset); false if it did not within `timeout`.
async fn closed_within(stream: &mut TcpStream, timeout: Duration) -> bool {
    let mut sink = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

/// `a` sends `n` small messages to `b` on channel 1 and `b` checks them, exactly once
/// and in order, from `a` (after `already` earlier ones).
async fn exchange(a: &Node, b: &Node, to_b: &switchyard::PeerHandle, already: u64, n: u64) {
    let msgs: Vec<TestMsg> = (already..already + n).map(small).collect();
    to_b.send_all(&a.ch(1), &msgs).await.unwrap();
    let from_a = |l: &Log| l.msgs.iter().filter(|m| m.1 == a.id).count() as u64;
    assert!(
        b.log
            .wait_for(Duration::from_secs(5), |l| from_a(l) >= already + n)
            .await,
        "{} of {} arrived",
        from_a(&b.log.lock()),
        already + n
    );
    let log = b.log.lock();
    let seqs: Vec<u64> = log
        .msgs
        .iter()
        .filter(|m| m.1 == a.id)
        .map(|m| m.2.seq)
        .collect();
    assert_eq!(seqs, (0..already + n).collect::<Vec<_>>());
    assert!(log
        .msgs
        .iter()
        .filter(|m| m.1 == a.id)
        .all(|m| m.2 == small(m.2.seq)));
}

// ---------------------------------------------------------------------------------
// 1. Encrypted round trips
// ---------------------------------------------------------------------------------

/// Raw payload sizes sent each way: several MiB (many 64 KiB Noise frames) and the
/// frame boundaries around them.
const RAW_SIZES: [usize; 7] = [(5 << 20) + 7, 3 << 20, 1, 65_535, 65_536, 65_537, 200_001];
const SMALL: u64 = 5000;

async fn round_trips(a_aes: Option<bool>, b_aes: Option<bool>, expect: Suite) {
    init_capture();
    let a = start_node(config_with_aes(a_aes), &chans()).await;
    let b = start_node(config_with_aes(b_aes), &chans()).await;
    // Each node offers what it was told (a client offering both gets AES-256-GCM
    // only from a node that offers it); the two agree on `expect` the same way.
    assert_eq!(suite_of(a.addr).await, expect_for(a_aes));
    assert_eq!(suite_of(b.addr).await, expect_for(b_aes));
    let both_aes = expect_for(a_aes) == Suite::AesGcm && expect_for(b_aes) == Suite::AesGcm;
    assert_eq!(expect == Suite::AesGcm, both_aes);
    let to_b = connect(&a, &b).await;
    assert!(
        a.log
            .wait_for(Duration::from_secs(5), |l| l.events
                == vec![Event::Up(b.id)])
            .await
    );
    let to_a = b.log.handle_of(a.id).unwrap();

    let send = |from: &Node, to: switchyard::PeerHandle, seed: u64| {
        let raw = from.raw(3);
        let ch = from.ch(1);
        async move {
            let small_msgs: Vec<TestMsg> = (0..SMALL).map(small).collect();
            let bulk = async {
                for (i, len) in RAW_SIZES.iter().enumerate() {
                    to.send(&raw, payload(seed + i as u64, *len)).await.unwrap();
                }
            };
            let many = to.send_all(&ch, &small_msgs);
            let (_, r) = tokio::join!(bulk, many);
            r.unwrap();
        }
    };
    tokio::join!(send(&a, to_b.clone(), 100), send(&b, to_a.clone(), 200));

    for (receiver, sender, seed) in [(&b, &a, 100u64), (&a, &b, 200u64)] {
        let done = receiver
            .log
            .wait_for(Duration::from_secs(8), |l| {
                l.msgs.len() as u64 >= SMALL && l.raw.len() >= RAW_SIZES.len()
            })
            .await;
        let log = receiver.log.lock();
        assert!(done, "{} small, {} raw", log.msgs.len(), log.raw.len());
        assert_eq!(log.msgs.len() as u64, SMALL);
        assert!(log
            .msgs
            .iter()
            .enumerate()
            .all(|(i, m)| m.0 == 1 && m.1 == sender.id && m.2 == small(i as u64)));
        let expected: Vec<(u8, NodeId, usize)> =
            RAW_SIZES.iter().map(|len| (3, sender.id, *len)).collect();
        assert_eq!(log.raw, expected);
        let digests: Vec<u64> = RAW_SIZES
            .iter()
            .enumerate()
            .map(|(i, len)| digest(&payload(seed + i as u64, *len)))
            .collect();
        assert_eq!(log.raw_digests, digests, "every byte in its place");
        assert_eq!(log.events.len(), 1, "{:?}", log.events);
    }
    a.switch.send(Shutdown).await.unwrap();
    b.switch.send(Shutdown).await.unwrap();
}

/// The suite a client offering both picks with a node offering `aes`.
fn expect_for(aes: Option<bool>) -> Suite {
    match aes {
        Some(true) => Suite::AesGcm,
        Some(false) => Suite::ChaChaPoly,
        None if switchyard::secure::aes_accelerated() => Suite::AesGcm,
        None => Suite::ChaChaPoly,
    }
}

#[actix::test]
async fn encrypted_round_trips_with_aes_gcm() {
    round_trips(Some(true), Some(true), Suite::AesGcm).await;
}

#[actix::test]
async fn encrypted_round_trips_with_chacha_when_one_side_offers_no_aes() {
    round_trips(Some(true), Some(false), Suite::ChaChaPoly).await;
}

// ---------------------------------------------------------------------------------
// 2. Tampered ciphertext
// ---------------------------------------------------------------------------------

#[actix::test]
async fn a_flipped_ciphertext_byte_closes_with_a_decryption_error() {
    init_capture();
    let listener = start_node(test_config(), &chans()).await;
    let dialer = start_node(test_config(), &chans()).await;
    let honest = start_node(test_config(), &chans()).await;
    let flip_at = (64 << 10) + 1000;
    let via = proxy(
        listener.addr,
        Tamper {
            up: Some((flip_at, 0x01)),
            down: None,
            ..Tamper::default()
        },
    )
    .await;
    let to_listener = dialer
        .switch
        .send(Dial(PeerAddr::new(Some(listener.id), via.addr)))
        .await
        .unwrap()
        .unwrap();
    // Admitted on both sides first (a close racing the listener's admission would
    // reach only its log).
    assert!(
        listener
            .log
            .wait_for(Duration::from_secs(5), |l| l.events
                == vec![Event::Up(dialer.id)])
            .await
    );
    // A bulk transfer well past the flipped byte (its sends fail once it is closed).
    let raw = dialer.raw(3);
    let bulk = tokio::task::spawn_local(async move {
        for i in 0..4u64 {
            if to_listener.send(&raw, payload(i, 1 << 20)).await.is_err() {
                break;
            }
        }
    });
    assert_closed_by_decrypt(&listener, dialer.id).await;
    assert_eq!(via.flips(), 1);
    let _ = bulk.await;

    // The listener goes on serving an honest peer.
    let to_listener = honest
        .switch
        .send(Dial(listener.peer_addr()))
        .await
        .unwrap()
        .unwrap();
    assert!(
        listener
            .log
            .wait_for(Duration::from_secs(5), |l| l.events.len() == 3)
            .await
    );
    assert_eq!(listener.log.lock().events[2], Event::Up(honest.id));
    exchange(&honest, &listener, &to_listener, 0, 500).await;
    let back = listener.log.handle_of(honest.id).unwrap();
    exchange(&listener, &honest, &back, 0, 500).await;
    for n in [listener, dialer, honest] {
        n.switch.send(Shutdown).await.unwrap();
    }
}

/// The same from the listener to the dialer: the dialer closes.
#[actix::test]
async fn a_flipped_byte_towards_the_dialer_closes_it_with_a_decryption_error() {
    init_capture();
    let listener = start_node(test_config(), &chans()).await;
    let dialer = start_node(test_config(), &chans()).await;
    let via = proxy(
        listener.addr,
        Tamper {
            up: None,
            down: Some(((256 << 10) + 7, 0x80)),
            ..Tamper::default()
        },
    )
    .await;
    dialer
        .switch
        .send(Dial(PeerAddr::new(Some(listener.id), via.addr)))
        .await
        .unwrap()
        .unwrap();
    assert!(
        listener
            .log
            .wait_for(Duration::from_secs(5), |l| l.events
                == vec![Event::Up(dialer.id)])
            .await
    );
    let to_dialer = listener.log.handle_of(dialer.id).unwrap();
    let raw = listener.raw(3);
    let bulk = tokio::task::spawn_local(async move {
        for i in 0..4u64 {
            if to_dialer.send(&raw, payload(i, 1 << 20)).await.is_err() {
                break;
            }
        }
    });
    assert_closed_by_decrypt(&dialer, listener.id).await;
    assert_eq!(via.flips(), 1);
    let _ = bulk.await;
    // The listener learns of it too (the dialer's goodbye, or the closed socket).
    assert!(
        listener
            .log
            .wait_for(Duration::from_secs(5), |l| l.events.len() == 2)
            .await,
        "{:?}",
        listener.log.lock().events
    );
    listener.switch.send(Shutdown).await.unwrap();
    dialer.switch.send(Shutdown).await.unwrap();
}

/// Each side's suite offer rewritten on the way to ChaChaPoly only (a downgrade): both
/// would choose ChaChaPoly, but the offers are bound into the Noise prologue, so the
/// handshake fails at once.
#[actix::test]
async fn a_downgraded_suite_offer_fails_the_handshake() {
    init_capture();
    let listener = start_node(slow_handshake(config_with_aes(Some(true))), &chans()).await;
    let dialer = start_node(slow_handshake(config_with_aes(Some(true))), &chans()).await;
    // Byte 6 of each preamble is the suite set: 3 (both) becomes 1 (ChaChaPoly).
    let (via, res) = dial_through_proxy(
        &dialer,
        listener.id,
        listener.addr,
        Tamper {
            up: Some((6, 0x02)),
            down: Some((6, 0x02)),
            ..Tamper::default()
        },
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(via.flips(), 2);
    assert!(
        matches!(
            res,
            Err(DialError::Closed(DisconnectReason::Secure(
                SecureError::Noise(_)
            )))
        ),
        "{res:?}"
    );
    assert!(listener.log.lock().events.is_empty());
    listener.switch.send(Shutdown).await.unwrap();
    dialer.switch.send(Shutdown).await.unwrap();
}

/// A byte of the dialer's last handshake message flipped: the listener fails the
/// handshake, and the dialer (which finished its part) learns at once that the
/// connection is gone, never waiting out the handshake deadline.
#[actix::test]
async fn a_flipped_byte_in_the_last_handshake_message_fails_both_sides_fast() {
    init_capture();
    let listener = start_node(slow_handshake(test_config()), &chans()).await;
    let dialer = start_node(slow_handshake(test_config()), &chans()).await;
    // Preamble (8), message 1 (2 + 32), then message 3: offset 100 is in its
    // encrypted static key.
    let (via, res) = dial_through_proxy(
        &dialer,
        listener.id,
        listener.addr,
        Tamper {
            up: Some((100, 0x01)),
            down: None,
            ..Tamper::default()
        },
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(via.flips(), 1);
    assert!(
        matches!(
            res,
            Err(DialError::Closed(
                DisconnectReason::ConnectionClosed | DisconnectReason::Io(_)
            ))
        ),
        "{res:?}"
    );
    let ours = format!("peer {}: transport handshake failed", via.upstream());
    let line = wait_logged(Duration::from_secs(5), |l| {
        l.contains(&ours) && l.contains("Noise handshake failed")
    })
    .await;
    assert!(line.is_some(), "the listener logs the Noise failure");
    assert!(listener.log.lock().events.is_empty());
    assert!(dialer.log.lock().events.is_empty());
    listener.switch.send(Shutdown).await.unwrap();
    dialer.switch.send(Shutdown).await.unwrap();
}

// ---------------------------------------------------------------------------------
// 3. Identity mismatch
// ---------------------------------------------------------------------------------

#[actix::test]
async fn dialing_an_id_that_another_key_answers_is_an_identity_mismatch() {
    init_capture();
    let a = start_node(test_config(), &chans()).await;
    let b = start_node(test_config(), &chans()).await;
    let c = start_node(test_config(), &chans()).await;
    let t0 = Instant::now();
    let res = a
        .switch
        .send(Dial(PeerAddr::new(Some(c.id), b.addr)))
        .await
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    assert_eq!(
        res.unwrap_err(),
        DialError::Closed(DisconnectReason::Handshake(
            HandshakeError::IdentityMismatch {
                expected: c.id,
                got: b.id
            }
        ))
    );
    assert!(b.log.lock().events.is_empty(), "{:?}", b.log.lock().events);
    // The right id at the same address connects.
    let to_b = connect(&a, &b).await;
    exchange(&a, &b, &to_b, 0, 100).await;
    for n in [a, b, c] {
        n.switch.send(Shutdown).await.unwrap();
    }
}

// ---------------------------------------------------------------------------------
// 4. Impostor
// ---------------------------------------------------------------------------------

/// A light client's connection (as `switchyard status` drives one): a `PeerCore` over
/// a tokio socket, after the secure handshake.
struct Light {
    stream: TcpStream,
    core: PeerCore,
    rbuf: BytesMut,
    cbuf: BytesMut,
    sealer: Sealer,
    opener: Opener,
    /// Our write half is shut.
    shut: bool,
}

impl Light {
    /// Connects to `addr` with a key of its own and a `Version` claiming `claim`.
    async fn connect(addr: &PeerAddr, claim: NodeId) -> (Light, NodeId) {
        let t0 = Instant::now();
        let mut stream = TcpStream::connect(addr.host_port()).await.unwrap();
        let _ = stream.set_nodelay(true);
        let key = NodeKey::generate();
        let transport = Transport::new(&key, false, None);
        let (secured, rest) = switchyard::secure::handshake(
            &mut stream,
            transport.start(Role::Initiator),
            t0 + Duration::from_secs(5),
        )
        .await
        .unwrap();
        let config = Arc::new(CoreConfig::new(Config::default()).unwrap());
        let local = Version {
            protocol: PROTOCOL_VERSION,
            network: test_config().network,
            node_id: claim,
            listen_addr: None,
            services: Vec::new(),
            user_agent: "impostor".into(),
            nonce: 0x1234_5678,
        };
        let params = ConnParams {
            local,
            expected: addr.id,
            secret: [42; 16],
            services: Vec::new(),
        };
        let mut core = PeerCore::new(t0, config, params, Arc::new(RecvBudget::new(0)));
        let remote = secured.remote.unwrap();
        core.handle_authenticated(Instant::now(), remote.node_id);
        let session = secured.session.unwrap();
        (
            Light {
                stream,
                core,
                rbuf: BytesMut::new(),
                cbuf: rest,
                sealer: session.sealer,
                opener: session.opener,
                shut: false,
            },
            key.node_id(),
        )
    }

    /// Drives the connection until the core closes; its reason (None: not within
    /// `timeout`).
    async fn run_until_closed(&mut self, timeout: Duration) -> Option<DisconnectReason> {
        let until = Instant::now() + timeout;
        // The ciphertext read with the handshake's last message, if any.
        if !self.cbuf.is_empty() {
            self.open();
        }
        loop {
            let mut t = Transmit::new();
            while self.core.poll_transmit(Instant::now(), &mut t, 256 << 10) {
                let mut frames = BytesMut::new();
                self.sealer.seal(&mut t, &mut frames).unwrap();
                if self.stream.write_all(&frames).await.is_err() {
                    break;
                }
                self.core.handle_written(Instant::now());
            }
            // The core closes our side once it has said everything.
            if !self.shut && self.core.poll_shutdown() {
                self.shut = true;
                let _ = self.stream.shutdown().await;
            }
            while let Some(event) = self.core.poll_event() {
                if let CoreEvent::Closed(reason) = event {
                    return Some(reason);
                }
            }
            if Instant::now() >= until {
                return None;
            }
            let deadline = self.core.poll_timeout().map_or(until, |t| t.min(until));
            self.cbuf.reserve(16 << 10);
            match tokio::time::timeout_at(deadline.into(), self.stream.read_buf(&mut self.cbuf))
                .await
            {
                Err(_) => self.core.handle_timeout(Instant::now()),
                Ok(Ok(0)) => self.core.handle_eof(Instant::now(), &mut self.rbuf),
                Ok(Ok(_)) => self.open(),
                Ok(Err(e)) => self.core.handle_io_error(Instant::now(), &e.to_string()),
            }
        }
    }

    fn open(&mut self) {
        match self.opener.open(&mut self.cbuf, &mut self.rbuf) {
            Ok(_) => self.core.handle_read(Instant::now(), &mut self.rbuf),
            Err(e) => self.core.handle_transport_error(Instant::now(), e.into()),
        }
    }
}

#[actix::test]
async fn an_impostor_claiming_a_connected_peers_id_is_refused_and_the_peer_loses_nothing() {
    init_capture();
    let a = start_node(test_config(), &chans()).await;
    let b = start_node(test_config(), &chans()).await;
    let b_to_a = connect(&b, &a).await;
    let a_to_b = a.log.handle_of(b.id).unwrap();
    assert_eq!(
        a.switch.send(GetPeer(b.id)).await.unwrap(),
        Some(a_to_b.clone())
    );

    // Before.
    exchange(&b, &a, &b_to_a, 0, 1000).await;

    // During: B keeps sending while the impostor connects, is refused, and goes.
    let sender = {
        let to_a = b_to_a.clone();
        let ch = b.ch(1);
        tokio::task::spawn_local(async move {
            for seq in 1000..3000 {
                to_a.send(&ch, &small(seq)).await.unwrap();
                if seq % 100 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let (mut impostor, impostor_id) = Light::connect(&a.peer_addr(), b.id).await;
    let reason = impostor.run_until_closed(Duration::from_secs(5)).await;
    let expected = HandshakeError::UnprovenId {
        proven: impostor_id,
        claimed: b.id,
    };
    assert_eq!(
        reason,
        Some(DisconnectReason::ByRemote(Box::new(
            DisconnectReason::Handshake(expected.clone())
        )))
    );
    let line = wait_logged(Duration::from_secs(5), |l| {
        l.contains(&format!("the remote's key is node {impostor_id}"))
    })
    .await;
    assert!(line.is_some(), "A logs why it closed the impostor");
    sender.await.unwrap();

    // After.
    exchange(&b, &a, &b_to_a, 3000, 1000).await;
    // Both ways still work, and nothing came down.
    exchange(&a, &b, &a_to_b, 0, 100).await;
    assert_eq!(a.log.lock().events, vec![Event::Up(b.id)]);
    assert_eq!(b.log.lock().events, vec![Event::Up(a.id)]);
    assert!(!b_to_a.is_closed() && !a_to_b.is_closed());
    assert_eq!(
        a.switch.send(GetPeer(b.id)).await.unwrap(),
        Some(a_to_b),
        "A's peer for B's id is still B's connection"
    );
    a.switch.send(Shutdown).await.unwrap();
    b.switch.send(Shutdown).await.unwrap();
}

// ---------------------------------------------------------------------------------
// 5. Plaintext meets encrypted
// ---------------------------------------------------------------------------------

fn slow_handshake(config: NodeConfig) -> NodeConfig {
    let mut config = config;
    config.limits.handshake_timeout = Duration::from_secs(30);
    config
}

#[actix::test]
async fn plaintext_and_encrypted_nodes_fail_fast_with_the_reason() {
    init_capture();
    let encrypted = start_node(slow_handshake(test_config()), &chans()).await;
    let plain = start_node(slow_handshake(plaintext_config()), &chans()).await;

    let t0 = Instant::now();
    let res = plain
        .switch
        .send(Dial(encrypted.peer_addr()))
        .await
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(
        res.unwrap_err(),
        DialError::Closed(DisconnectReason::Secure(SecureError::EncryptedRemote))
    );
    // The listener says why too (the connection was never admitted: only its log
    // knows); the dialer's own line names the listener's address, this one not.
    let listener_port = format!(":{}:", encrypted.addr.port());
    let line = wait_logged(Duration::from_secs(5), |l| {
        l.contains("transport handshake failed")
            && l.contains(&SecureError::PlaintextRemote.to_string())
            && !l.contains(&listener_port)
    })
    .await;
    assert!(
        line.is_some(),
        "the encrypted listener logs PlaintextRemote"
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());

    let t0 = Instant::now();
    let res = encrypted
        .switch
        .send(Dial(plain.peer_addr()))
        .await
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    assert_eq!(
        res.unwrap_err(),
        DialError::Closed(DisconnectReason::Secure(SecureError::PlaintextRemote))
    );
    assert!(encrypted.log.lock().events.is_empty());
    assert!(plain.log.lock().events.is_empty());
    encrypted.switch.send(Shutdown).await.unwrap();
    plain.switch.send(Shutdown).await.unwrap();
}

// ---------------------------------------------------------------------------------
// 6. Garbage, slowloris, a tampered handshake
// ---------------------------------------------------------------------------------

#[actix::test]
async fn garbage_and_a_tampered_handshake_are_closed_while_an_honest_peer_is_served() {
    init_capture();
    let node = start_node(test_config(), &chans()).await;
    let honest = start_node(test_config(), &chans()).await;
    let dialer = start_node(test_config(), &chans()).await;

    // An HTTP request: not a preamble.
    let mut http = TcpStream::connect(node.addr).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();

    // A valid preamble, then a Noise message length no handshake message has.
    let mut oversized = TcpStream::connect(node.addr).await.unwrap();
    let mut hello = vec![0x53, 0x57, 0x59, 0x44, 1, 1, 3, 0];
    hello.extend_from_slice(&[0xff, 0xff]);
    oversized.write_all(&hello).await.unwrap();

    assert!(
        closed_within(&mut http, Duration::from_secs(3)).await,
        "an HTTP request is closed"
    );
    assert!(
        closed_within(&mut oversized, Duration::from_secs(3)).await,
        "an oversized handshake message is closed"
    );

    // Silent connections (slowloris) held open meanwhile.
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(node.addr).await.unwrap());
    }

    // A byte of the listener's handshake message flipped on the way (offset 150:
    // inside the responder's encrypted static key and proof).
    let (via, res) = dial_through_proxy(
        &dialer,
        node.id,
        node.addr,
        Tamper {
            up: None,
            down: Some((150, 0x01)),
            ..Tamper::default()
        },
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(via.flips(), 1);
    assert!(
        matches!(
            res,
            Err(DialError::Closed(DisconnectReason::Secure(
                SecureError::Noise(_)
            )))
        ),
        "{res:?}"
    );

    // Meanwhile an honest peer connects and exchanges messages.
    let to_node = connect(&honest, &node).await;
    exchange(&honest, &node, &to_node, 0, 300).await;
    let back = node.log.handle_of(honest.id).unwrap();
    exchange(&node, &honest, &back, 0, 300).await;

    // The silent ones are closed at the handshake deadline (1.5 s here).
    for s in &mut silent {
        assert!(closed_within(s, Duration::from_secs(5)).await);
    }
    assert_eq!(node.log.lock().events, vec![Event::Up(honest.id)]);
    for n in [node, honest, dialer] {
        n.switch.send(Shutdown).await.unwrap();
    }
}

/// A client that completes the Noise handshake as a throwaway identity.
async fn secured_client(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let transport = Transport::new(&NodeKey::generate(), false, None);
    switchyard::secure::handshake(
        &mut stream,
        transport.start(Role::Initiator),
        Instant::now() + Duration::from_secs(5),
    )
    .await
    .unwrap();
    stream
}

/// After a complete Noise handshake: a frame shorter than its tag, a frame that does
/// not decrypt, and silence are each closed; an honest peer is served meanwhile and
/// afterwards (none of it bans the loopback address the honest peer comes from).
#[actix::test]
async fn garbage_after_the_noise_handshake_is_closed() {
    init_capture();
    let node = start_node(test_config(), &chans()).await;
    let honest = start_node(test_config(), &chans()).await;

    let mut short = secured_client(node.addr).await;
    short.write_all(&[0x00, 0x05, 1, 2, 3, 4, 5]).await.unwrap();
    let mut forged = secured_client(node.addr).await;
    let mut frame = vec![0x01, 0x00];
    frame.extend_from_slice(&payload(9, 256));
    forged.write_all(&frame).await.unwrap();
    let mut silent = secured_client(node.addr).await;

    let to_node = connect(&honest, &node).await;
    exchange(&honest, &node, &to_node, 0, 300).await;

    assert!(closed_within(&mut short, Duration::from_secs(3)).await);
    assert!(closed_within(&mut forged, Duration::from_secs(3)).await);
    // The handshake deadline (1.5 s here) covers the Version after Noise.
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await);

    exchange(&honest, &node, &to_node, 300, 300).await;
    let back = node.log.handle_of(honest.id).unwrap();
    exchange(&node, &honest, &back, 0, 300).await;
    // A new connection from the same address is admitted.
    let late = start_node(test_config(), &chans()).await;
    let to_node = late
        .switch
        .send(Dial(node.peer_addr()))
        .await
        .unwrap()
        .unwrap();
    exchange(&late, &node, &to_node, 0, 100).await;
    assert_eq!(
        node.log.lock().events,
        vec![Event::Up(honest.id), Event::Up(late.id)]
    );
    for n in [node, honest, late] {
        n.switch.send(Shutdown).await.unwrap();
    }
}

/// The frame lengths are not authenticated: a network that rewrites one makes a frame
/// "shorter than its tag", just as it makes one fail to decrypt by flipping another
/// byte. Neither may count as the peer's misbehaviour: two such connections would
/// otherwise ban an honest node (50 points each, threshold 100) for whoever sits on
/// the path.
#[actix::test]
async fn a_rewritten_frame_length_does_not_get_the_honest_peer_banned() {
    init_capture();
    let listener = start_node(test_config(), &chans()).await;
    let dialer = start_node(test_config(), &chans()).await;
    for round in 0..3usize {
        let via = proxy(
            listener.addr,
            Tamper {
                short_frame_after: Some(64 << 10),
                ..Tamper::default()
            },
        )
        .await;
        let to_listener = dialer
            .switch
            .send(Dial(PeerAddr::new(Some(listener.id), via.addr)))
            .await
            .unwrap()
            .unwrap();
        let ups = 2 * round + 1;
        assert!(
            listener
                .log
                .wait_for(Duration::from_secs(5), |l| l.events.len() == ups)
                .await,
            "{:?}",
            listener.log.lock().events
        );
        let raw = dialer.raw(3);
        let bulk = tokio::task::spawn_local(async move {
            for i in 0..2u64 {
                if to_listener.send(&raw, payload(i, 1 << 20)).await.is_err() {
                    break;
                }
            }
        });
        let downs = 2 * (round + 1);
        assert!(
            listener
                .log
                .wait_for(Duration::from_secs(5), |l| l.events.len() == downs)
                .await,
            "{:?}",
            listener.log.lock().events
        );
        assert_eq!(
            listener.log.lock().events[downs - 1],
            Event::Down(
                dialer.id,
                DisconnectReason::Secure(SecureError::ShortFrame(5))
            )
        );
        assert_eq!(via.flips(), 1);
        let _ = bulk.await;
        // The dialer sees its connection end too before the next round.
        assert!(
            dialer
                .log
                .wait_for(Duration::from_secs(5), |l| l.events.len() == downs)
                .await
        );
    }
    // Directly, without the tampering network, the dialer is still welcome.
    let res = dialer
        .switch
        .send(Dial(listener.peer_addr()))
        .await
        .unwrap();
    assert!(res.is_ok(), "{res:?}");
    listener.switch.send(Shutdown).await.unwrap();
    dialer.switch.send(Shutdown).await.unwrap();
}
