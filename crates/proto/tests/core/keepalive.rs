//! The keepalive: pings answered, a remote that never reads is closed whatever it
//! sends, ping and pong floods, the idle timeout.

use std::time::Duration;

use switchyard_proto::config::Config;
use switchyard_proto::wire::codec::Packet;
use switchyard_proto::DisconnectReason;

use crate::pair::*;

#[test]
fn pings_are_answered_and_time_the_round_trip() {
    let limits = Config::default();
    let mut p = Pair::new(&limits);
    p.latency = Duration::from_millis(5);
    p.connect();
    p.run_for(limits.ping_interval * 4);
    assert!(p.a.closed().is_none() && p.b.closed().is_none());
    let rtt = p.a.core.rtt().expect("a ping was answered");
    assert!(
        (Duration::from_millis(10)..Duration::from_millis(11)).contains(&rtt),
        "{rtt:?}"
    );
}

#[test]
fn a_remote_that_never_reads_is_closed_within_ping_interval_plus_pong_timeout() {
    let limits = Config::default();
    let mut s = Solo::new(&limits);
    s.handshake(65_536);
    let connected = s.now;
    // The remote never reads what we write, yet sends traffic of every kind: pongs
    // nobody asked for (guessing nonces), its own pings, data.
    let mut guess = 0u64;
    while s.reason().is_none() {
        guess += 1;
        s.feed_packets(&[Packet::Pong(guess), Packet::Ping(guess)]);
        s.feed_msg(BULK, b"still here");
        s.advance(Duration::from_millis(250));
        assert!(s.now - connected < Duration::from_secs(60), "never closed");
    }
    assert_eq!(s.reason(), Some(DisconnectReason::PongTimeout));
    let after = s.now - connected;
    let bound = limits.ping_interval + limits.pong_timeout;
    assert!(
        after <= bound + Duration::from_millis(250),
        "closed after {after:?}, bound {bound:?}"
    );
}

#[test]
fn ping_and_pong_floods_close_the_remote() {
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    let pings: Vec<Packet> = (0..200).map(Packet::Ping).collect();
    s.feed_packets(&pings);
    assert!(matches!(
        s.reason(),
        Some(DisconnectReason::TooManyPings { limit: 20, .. })
    ));
    let pongs_written = s
        .written
        .iter()
        .filter(|p| matches!(p, Packet::Pong(_)))
        .count();
    assert!(
        pongs_written <= 1,
        "pings in one read collapse into one pong"
    );

    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    let pongs: Vec<Packet> = (0..200).map(Packet::Pong).collect();
    s.feed_packets(&pongs);
    assert!(matches!(
        s.reason(),
        Some(DisconnectReason::TooManyPongs { .. })
    ));

    // Within the limits, a remote may ping as often as its own config says.
    let mut s = Solo::new(&Config::default());
    s.handshake(65_536);
    for i in 0..100 {
        s.feed_packet(Packet::Ping(i));
        s.advance(Duration::from_millis(100));
    }
    assert_eq!(s.reason(), None);
    let answered: Vec<u64> = s
        .written
        .iter()
        .filter_map(|p| match p {
            Packet::Pong(n) => Some(*n),
            _ => None,
        })
        .collect();
    assert_eq!(answered, (0..100).collect::<Vec<_>>(), "each ping echoed");
}

#[test]
fn silence_past_the_idle_timeout_closes() {
    let limits = Config {
        ping_interval: Duration::from_secs(100),
        pong_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(30),
        ..Config::default()
    };
    let mut s = Solo::new(&limits);
    s.handshake(65_536);
    s.advance(Duration::from_secs(29));
    s.feed_msg(BULK, b"x");
    s.advance(Duration::from_secs(29));
    assert_eq!(s.reason(), None, "traffic restarted the deadline");
    s.advance(Duration::from_secs(1));
    assert_eq!(s.reason(), Some(DisconnectReason::IdleTimeout));
}
