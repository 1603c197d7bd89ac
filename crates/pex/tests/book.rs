//! The address book's behaviours, through its public API, with made-up instants.
#![allow(clippy::disallowed_methods)] // tests take one real Instant as their origin

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use switchyard_pex::book::{dial_bias, Added, Place, Rejected};
use switchyard_pex::store::{restore_book, AddrRecord, TimeAnchor};
use switchyard_pex::{AddrBook, BookConfig, Group, NetAddr};
use switchyard_proto::NodeId;

fn id(n: u32) -> NodeId {
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(&n.to_be_bytes());
    b[19] = 1; // never all zero
    NodeId(b)
}

/// A routable address for every `n`: groups 20.0/16 … 89.255/16, 256 hosts each.
fn routable(n: u32) -> IpAddr {
    let group = n / 256;
    let a = 20 + (group / 256) % 70;
    IpAddr::V4(Ipv4Addr::new(
        a as u8,
        (group % 256) as u8,
        (n % 256) as u8,
        1,
    ))
}

fn na(n: u32) -> NetAddr {
    NetAddr::new(id(n), SocketAddr::new(routable(n), 26656))
}

fn at(n: u32, ip: &str) -> NetAddr {
    NetAddr::new(id(n), SocketAddr::new(ip.parse().unwrap(), 26656))
}

fn src(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn book() -> AddrBook {
    AddrBook::new(BookConfig::new([42; 32], 7))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn one_source_reaches_at_most_its_share_of_new_buckets() {
    let t0 = Instant::now();
    let mut b = book();
    let cfg = b.config().clone();
    let attacker = src("31.4.5.6");
    // 10,000 addresses spread over 40 /16 groups and beyond, all told by one source.
    for n in 0..10_000 {
        let a = NetAddr::new(id(n), SocketAddr::new(routable(n * 37), 26656));
        let _ = b.add_address(t0, a, attacker);
    }
    let reached = b.new_buckets_of_source(Group::of(attacker));
    println!(
        "one source: {} of {} new buckets reached, {} of 10000 addresses kept",
        reached.len(),
        cfg.new_buckets,
        b.new_count()
    );
    // The bound of the placement: one source group maps to at most
    // `new_buckets_per_source_group` (32) of the 256 new buckets, so it holds at most
    // 32 × 64 = 2,048 of the 16,384 new slots, whatever it gossips.
    assert!(
        reached.len() <= cfg.new_buckets_per_source_group,
        "one source reached {} buckets",
        reached.len()
    );
    assert!(b.new_count() <= cfg.new_buckets_per_source_group * cfg.bucket_size);
    assert!(
        reached.len() >= cfg.new_buckets_per_source_group / 2,
        "the spread is used"
    );
    b.check().unwrap();

    // Another host of the same /16 shares the same buckets; honest sources elsewhere
    // still find room outside them.
    let neighbour = src("31.4.200.7");
    for n in 10_000..11_000 {
        let _ = b.add_address(t0, na(n * 13), neighbour);
    }
    assert!(b
        .new_buckets_of_source(Group::of(neighbour))
        .is_subset(&reached));
    let before = b.new_count();
    let mut outside = 0;
    for n in 20_000..20_200 {
        let s = routable(n * 977);
        let fresh = NetAddr::new(id(n), SocketAddr::new(routable(n), 30_000));
        if b.add_address(t0, fresh, s).is_ok() {
            outside += 1;
        }
    }
    assert_eq!(outside, 200);
    assert!(
        b.new_count() > before,
        "other sources add beyond the attacker's buckets"
    );
}

#[test]
fn a_tried_node_id_cannot_be_repointed_by_gossip() {
    let t0 = Instant::now();
    let mut b = book();
    let real = at(1, "20.1.1.1");
    b.add_address(t0, real, src("30.0.0.1")).unwrap();
    b.mark_good(t0 + secs(1), real).unwrap();
    assert!(b.get(&real.id).unwrap().place.is_tried());

    let evil = at(1, "66.6.6.6");
    for s in ["30.0.0.1", "40.0.0.1", "66.6.6.6"] {
        assert_eq!(
            b.add_address(t0 + secs(2), evil, src(s)),
            Err(Rejected::Repoint { tried: true })
        );
    }
    assert_eq!(b.get(&real.id).unwrap().addr, real);
    // Nor can another id claim the tried address.
    assert_eq!(
        b.add_address(t0, at(2, "20.1.1.1"), src("30.0.0.1")),
        Err(Rejected::AddressTaken)
    );
    // A new (unverified) id is not moved by gossip either.
    b.add_address(t0, at(3, "20.3.3.3"), src("30.0.0.1"))
        .unwrap();
    assert_eq!(
        b.add_address(t0, at(3, "66.6.6.7"), src("30.0.0.1")),
        Err(Rejected::Repoint { tried: false })
    );
    // Same address again is fine and changes nothing.
    assert_eq!(b.add_address(t0, real, src("40.0.0.1")), Ok(Added::Known));
    // An authenticated connection at a new address moves it.
    let moved = at(1, "21.1.1.1");
    b.mark_good(t0 + secs(3), moved).unwrap();
    assert_eq!(b.get(&real.id).unwrap().addr, moved);
    b.check().unwrap();
}

#[test]
fn selection_follows_the_bias_and_prefers_other_groups() {
    let t0 = Instant::now();
    let mut b = book();
    for n in 0..100 {
        b.add_address(t0, na(n * 256), src("30.0.0.1")).unwrap();
        b.mark_good(t0, na(n * 256)).unwrap();
    }
    for n in 100..200 {
        b.add_address(t0, na(n * 256), src("30.0.0.1")).unwrap();
    }
    assert_eq!((b.tried_count(), b.new_count()), (100, 100));
    let none = HashSet::new();
    let tried_share = |b: &mut AddrBook, bias| {
        let picks = 2_000;
        let tried = (0..picks)
            .filter(|_| {
                let a = b.pick_address(t0, bias, &none).unwrap();
                b.get(&a.id).unwrap().place.is_tried()
            })
            .count();
        tried * 100 / picks
    };
    assert_eq!(tried_share(&mut b, 0), 0);
    assert_eq!(tried_share(&mut b, 100), 100);
    let half = tried_share(&mut b, 50);
    assert!((40..=60).contains(&half), "bias 50 gave {half}% tried");
    let lean = tried_share(&mut b, dial_bias(9, 10));
    assert!(
        lean >= 75,
        "near the target the bias leans to tried: {lean}%"
    );

    // The bias moves toward tried as outbound peers grow.
    assert_eq!(dial_bias(0, 10), 30);
    assert_eq!(dial_bias(10, 10), 90);
    assert_eq!(dial_bias(50, 10), 90);
    assert!((0..10).all(|o| dial_bias(o, 10) <= dial_bias(o + 1, 10)));

    // Groups of current outbound peers are avoided while others remain.
    let mut g = book();
    for n in 0..20 {
        g.add_address(t0, at(n, &format!("20.1.0.{}", n + 1)), src("30.0.0.1"))
            .unwrap();
    }
    g.add_address(t0, at(99, "20.2.0.1"), src("30.0.0.1"))
        .unwrap();
    let exclude: HashSet<Group> = [Group::of(src("20.1.0.1"))].into();
    for _ in 0..50 {
        assert_eq!(g.pick_address(t0, 50, &exclude), Some(at(99, "20.2.0.1")));
    }
    // Only excluded groups left: still an answer.
    let all: HashSet<Group> = [Group::of(src("20.1.0.1")), Group::of(src("20.2.0.1"))].into();
    assert!(g.pick_address(t0, 50, &all).is_some());
}

#[test]
fn picks_are_replayable_from_the_seed() {
    let t0 = Instant::now();
    let run = || {
        let mut b = book();
        for n in 0..500 {
            b.add_address(t0, na(n * 7), src("30.0.0.1")).unwrap();
        }
        let none = HashSet::new();
        (0..50)
            .map(|_| b.pick_address(t0, 50, &none))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn strict_mode_rejects_non_routable_and_lenient_allows_loopback() {
    let t0 = Instant::now();
    let mut strict = book();
    for ip in [
        "127.0.0.1",
        "10.0.0.1",
        "172.16.5.5",
        "192.168.1.1",
        "169.254.0.1",
        "192.0.2.1",
        "198.51.100.1",
        "203.0.113.9",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1",
        "fc00::1",
        "2001:db8::1",
    ] {
        assert_eq!(
            strict.add_address(t0, at(1, ip), src("30.0.0.1")),
            Err(Rejected::NotRoutable),
            "{ip}"
        );
        assert_eq!(strict.mark_good(t0, at(1, ip)), Err(Rejected::NotRoutable));
    }
    assert!(strict.is_empty());
    let port0 = NetAddr::new(id(1), "20.0.0.1:0".parse().unwrap());
    assert_eq!(
        strict.add_address(t0, port0, src("30.0.0.1")),
        Err(Rejected::PortZero)
    );

    let mut lenient = AddrBook::new(BookConfig::new([1; 32], 1).lenient());
    lenient
        .add_address(t0, at(1, "127.0.0.1"), src("127.0.0.1"))
        .unwrap();
    lenient
        .add_address(t0, at(2, "10.0.0.2"), src("127.0.0.1"))
        .unwrap();
    assert_eq!(
        lenient.add_address(t0, at(3, "0.0.0.0"), src("127.0.0.1")),
        Err(Rejected::NotRoutable)
    );
    assert_eq!(lenient.len(), 2);
}

#[test]
fn private_ids_are_never_stored_or_shared() {
    let t0 = Instant::now();
    let mut cfg = BookConfig::new([42; 32], 7);
    cfg.private_ids.insert(id(5));
    let mut b = AddrBook::new(cfg);
    assert_eq!(
        b.add_address(t0, na(5), src("30.0.0.1")),
        Err(Rejected::Private)
    );
    assert_eq!(b.mark_good(t0, na(5)), Err(Rejected::Private));
    assert_eq!(b.add_persistent(na(5)), Err(Rejected::Private));
    for n in 0..50 {
        b.add_address(t0, na(n * 256 + 1), src("30.0.0.1")).unwrap();
    }
    assert!(b.get(&id(5)).is_none());
    assert!(!b.sample(t0, 1000).iter().any(|a| a.id == id(5)));
}

#[test]
fn own_addresses_are_never_stored_dialed_or_shared() {
    let t0 = Instant::now();
    let mut b = book();
    let me = at(1, "20.1.1.1");
    b.add_address(t0, me, src("30.0.0.1")).unwrap();
    // We dialed it and met ourselves.
    b.add_our_address(me);
    assert!(b.is_empty());
    assert!(b.is_ours(&me.addr));
    assert_eq!(b.add_address(t0, me, src("30.0.0.1")), Err(Rejected::Ours));
    // Our id elsewhere, or another id at our address, are ours too.
    assert_eq!(
        b.add_address(t0, at(1, "21.1.1.1"), src("30.0.0.1")),
        Err(Rejected::Ours)
    );
    assert_eq!(
        b.add_address(t0, at(2, "20.1.1.1"), src("30.0.0.1")),
        Err(Rejected::Ours)
    );
    assert_eq!(b.mark_good(t0, me), Err(Rejected::Ours));
    assert_eq!(b.pick_address(t0, 50, &HashSet::new()), None);
    assert!(b.sample(t0, 10).is_empty());
}

#[test]
fn failed_attempts_make_an_address_bad_then_forgotten() {
    let t0 = Instant::now();
    let mut cfg = BookConfig::new([42; 32], 7);
    cfg.max_attempts = 3;
    cfg.bad_for = secs(60);
    let mut b = AddrBook::new(cfg);
    let a = na(1);
    b.add_address(t0, a, src("30.0.0.1")).unwrap();
    b.mark_attempt(t0, &a.id).unwrap();
    b.mark_attempt(t0 + secs(1), &a.id).unwrap();
    assert!(!b.get(&a.id).unwrap().is_bad());
    assert_eq!(b.pick_address(t0 + secs(2), 50, &HashSet::new()), Some(a));
    b.mark_attempt(t0 + secs(2), &a.id).unwrap();
    assert!(b.get(&a.id).unwrap().is_bad());
    assert_eq!(b.pick_address(t0 + secs(3), 50, &HashSet::new()), None);
    assert!(b.sample(t0 + secs(3), 10).is_empty());
    assert_eq!(b.poll_timeout(), Some(t0 + secs(62)));
    b.handle_timeout(t0 + secs(61));
    assert!(b.get(&a.id).is_some(), "still held while bad");
    b.handle_timeout(t0 + secs(62));
    assert!(b.get(&a.id).is_none(), "forgotten");
    assert_eq!(b.poll_timeout(), None);
    assert_eq!(b.mark_attempt(t0, &a.id), Err(Rejected::Unknown));

    // A success clears the failures.
    let c = na(2);
    b.add_address(t0, c, src("30.0.0.1")).unwrap();
    b.mark_attempt(t0, &c.id).unwrap();
    b.mark_attempt(t0, &c.id).unwrap();
    b.mark_good(t0 + secs(1), c).unwrap();
    assert_eq!(b.get(&c.id).unwrap().attempts, 0);

    // Persistent addresses are never marked bad nor forgotten.
    let p = na(3);
    b.add_persistent(p).unwrap();
    for i in 0..100 {
        b.mark_attempt(t0 + secs(i), &p.id).unwrap();
    }
    b.handle_timeout(t0 + secs(100_000));
    let e = b.get(&p.id).unwrap();
    assert_eq!(
        (e.place, e.attempts, e.is_bad()),
        (Place::Persistent, 100, false)
    );
    // …and not offered for dialing (the peer manager redials them itself).
    let only_persistent = {
        let mut q = book();
        q.add_persistent(p).unwrap();
        q.pick_address(t0, 50, &HashSet::new())
    };
    assert_eq!(only_persistent, None);
    b.check().unwrap();
}

#[test]
fn bans_hold_until_their_instant() {
    let t0 = Instant::now();
    let mut b = book();
    let a = na(1);
    b.add_address(t0, a, src("30.0.0.1")).unwrap();
    b.ban(&a.id, t0 + secs(10)).unwrap();
    b.ban(&a.id, t0 + secs(5)).unwrap(); // an earlier end does not shorten it
    assert_eq!(b.pick_address(t0 + secs(9), 50, &HashSet::new()), None);
    assert!(b.sample(t0 + secs(9), 10).is_empty());
    assert_eq!(b.poll_timeout(), Some(t0 + secs(10)));
    assert_eq!(b.pick_address(t0 + secs(10), 50, &HashSet::new()), Some(a));
    b.handle_timeout(t0 + secs(10));
    assert_eq!(b.get(&a.id).unwrap().banned_until, None);
    assert_eq!(b.poll_timeout(), None);
    assert_eq!(b.ban(&id(99), t0), Err(Rejected::Unknown));
}

#[test]
fn full_buckets_evict_the_worst_and_tried_overflow_goes_back_to_new() {
    let t0 = Instant::now();
    // One new bucket of 4, one tried bucket of 2.
    let mut b = AddrBook::new(BookConfig::new([42; 32], 7).with_tables(1, 1, 4));
    for n in 0..4 {
        b.add_address(t0, na(n * 256), src("30.0.0.1")).unwrap();
    }
    b.mark_attempt(t0, &id(256)).unwrap();
    b.mark_attempt(t0, &id(256)).unwrap();
    let r = b.add_address(t0, na(4 * 256), src("30.0.0.1")).unwrap();
    assert_eq!(
        r,
        Added::New {
            evicted: Some(na(256))
        },
        "most failures go first"
    );
    assert_eq!(b.new_count(), 4);

    let mut b = AddrBook::new(BookConfig::new([42; 32], 7).with_tables(1, 1, 2));
    for n in 0..3 {
        b.mark_good(t0 + secs(u64::from(n)), na(n * 256)).unwrap();
    }
    // The stalest success was sent back to new.
    assert_eq!(b.tried_count(), 2);
    assert!(matches!(b.get(&id(0)).unwrap().place, Place::New(_)));
    b.check().unwrap();
}

#[test]
fn samples_are_bounded_random_and_distinct() {
    let t0 = Instant::now();
    let mut b = book();
    for n in 0..1_000 {
        b.add_address(t0, na(n * 3), src("30.0.0.1"))
            .unwrap_or_else(|e| panic!("{n}: {e}"));
    }
    let held = b.len();
    let s = b.sample(t0, 250);
    assert_eq!(s.len(), (held * 23).div_ceil(100).min(250));
    assert_eq!(
        s.iter().collect::<HashSet<_>>().len(),
        s.len(),
        "no duplicates"
    );
    assert_eq!(b.sample(t0, 5).len(), 5);
    assert_ne!(b.sample(t0, 100), b.sample(t0, 100), "random");

    let mut small = book();
    for n in 0..10 {
        small.add_address(t0, na(n * 256), src("30.0.0.1")).unwrap();
    }
    assert_eq!(
        small.sample(t0, 250).len(),
        10,
        "a small book shares what it has"
    );
}

#[test]
fn dirty_ids_report_what_to_persist() {
    let t0 = Instant::now();
    let mut b = book();
    b.add_address(t0, na(1), src("30.0.0.1")).unwrap();
    b.add_address(t0, na(2), src("30.0.0.1")).unwrap();
    assert_eq!(b.take_dirty(), vec![id(1), id(2)]);
    assert!(b.take_dirty().is_empty());
    b.mark_attempt(t0, &id(1)).unwrap();
    b.remove(&id(2));
    assert_eq!(b.take_dirty(), vec![id(1), id(2)]);
    assert!(b.get(&id(2)).is_none());
}

#[test]
fn empty_and_one_sided_books() {
    let t0 = Instant::now();
    let mut b = book();
    let none = HashSet::new();
    assert_eq!(b.pick_address(t0, 50, &none), None);
    assert!(b.sample(t0, 100).is_empty());
    assert_eq!(b.poll_timeout(), None);
    // Only new: even a full tried bias picks from new.
    b.add_address(t0, na(1), src("30.0.0.1")).unwrap();
    assert_eq!(b.pick_address(t0, 100, &none), Some(na(1)));
    // Only tried: even a zero tried bias picks from tried.
    let mut t = book();
    t.mark_good(t0, na(2)).unwrap();
    assert_eq!(t.pick_address(t0, 0, &none), Some(na(2)));
    // A usable tried entry is found when new holds only unusable ones.
    t.add_address(t0, na(3), src("30.0.0.1")).unwrap();
    t.ban(&id(3), t0 + secs(60)).unwrap();
    for _ in 0..20 {
        assert_eq!(t.pick_address(t0, 0, &none), Some(na(2)));
    }
}

#[test]
fn restoring_into_a_stricter_book_refuses_what_it_no_longer_takes() {
    let t0 = Instant::now();
    let mut lenient = AddrBook::new(BookConfig::new([1; 32], 1).lenient());
    lenient
        .add_address(t0, at(1, "127.0.0.1"), src("127.0.0.1"))
        .unwrap();
    lenient
        .add_address(t0, at(2, "20.0.0.2"), src("127.0.0.1"))
        .unwrap();
    let anchor = TimeAnchor::from_unix(t0, 1_700_000_000);
    let records: Vec<AddrRecord> = lenient
        .iter()
        .map(|e| AddrRecord::from_entry(e, &anchor))
        .collect();
    let mut strict = AddrBook::new(BookConfig::new([1; 32], 1));
    let refused = restore_book(&mut strict, &anchor, &records);
    assert_eq!(refused.len(), 1);
    assert_eq!(
        (refused[0].0.addr, refused[0].1),
        (at(1, "127.0.0.1"), Rejected::NotRoutable)
    );
    assert_eq!(strict.len(), 1);
}

#[derive(Debug, Clone)]
enum Op {
    Add(u8, u8),
    Good(u8),
    Attempt(u8),
    Remove(u8),
    Ban(u8, u8),
    Persistent(u8),
    Ours(u8),
    Tick(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (any::<u8>(), any::<u8>()).prop_map(|(a, s)| Op::Add(a, s)),
        2 => any::<u8>().prop_map(Op::Good),
        2 => any::<u8>().prop_map(Op::Attempt),
        1 => any::<u8>().prop_map(Op::Remove),
        1 => (any::<u8>(), any::<u8>()).prop_map(|(a, s)| Op::Ban(a, s)),
        1 => any::<u8>().prop_map(Op::Persistent),
        1 => any::<u8>().prop_map(|a| Op::Ours(a % 8)),
        1 => any::<u8>().prop_map(Op::Tick),
    ]
}

/// 64 ids; id `n` lives at one of a few addresses in a few /16s, so ids move, collide
/// and buckets fill.
fn fuzz_addr(n: u8, variant: u8) -> NetAddr {
    let n = n % 64;
    let ip = Ipv4Addr::new(20 + (n % 3), variant % 2, n / 3, 1 + variant % 3);
    NetAddr::new(id(u32::from(n)), SocketAddr::new(IpAddr::V4(ip), 26656))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn random_operations_keep_the_book_consistent(ops in proptest::collection::vec(op(), 1..300)) {
        let t0 = Instant::now();
        let mut cfg = BookConfig::new([3; 32], 11).with_tables(4, 2, 3);
        cfg.new_buckets_per_source_group = 2;
        cfg.tried_buckets_per_group = 1;
        cfg.max_attempts = 3;
        cfg.bad_for = secs(30);
        cfg.private_ids.insert(id(63));
        let mut b = AddrBook::new(cfg);
        let mut now = t0;
        let mut ours = HashSet::new();
        for op in ops {
            match op {
                Op::Add(a, s) => {
                    let _ = b.add_address(now, fuzz_addr(a, s), IpAddr::V4(Ipv4Addr::new(30 + s % 4, s, 0, 1)));
                }
                Op::Good(a) => { let _ = b.mark_good(now, fuzz_addr(a, a / 64)); }
                Op::Attempt(a) => { let _ = b.mark_attempt(now, &id(u32::from(a % 64))); }
                Op::Remove(a) => { b.remove(&id(u32::from(a % 64))); }
                Op::Ban(a, s) => { let _ = b.ban(&id(u32::from(a % 64)), now + secs(u64::from(s))); }
                Op::Persistent(a) => { let _ = b.add_persistent(fuzz_addr(a, 0)); }
                Op::Ours(a) => { let me = fuzz_addr(a, 1); ours.insert(me); b.add_our_address(me); }
                Op::Tick(s) => { now += secs(u64::from(s)); b.handle_timeout(now); }
            }
            prop_assert_eq!(b.check(), Ok(()));
            let cfg = b.config();
            prop_assert!(b.new_count() <= cfg.new_buckets * cfg.bucket_size);
            prop_assert!(b.tried_count() <= cfg.tried_buckets * cfg.bucket_size);
            let persistent = b.iter().filter(|e| e.place == Place::Persistent).count();
            prop_assert_eq!(b.new_count() + b.tried_count() + persistent, b.len());
            prop_assert!(b.get(&id(63)).is_none(), "private id stored");
            for me in &ours {
                prop_assert!(b.get(&me.id).is_none(), "own id stored");
                prop_assert!(b.iter().all(|e| e.addr.addr != me.addr), "own address stored");
            }
            let none = HashSet::new();
            if let Some(p) = b.pick_address(now, 50, &none) {
                let e = b.get(&p.id).unwrap();
                prop_assert!(e.is_usable(now) && e.place != Place::Persistent);
            }
            for s in b.sample(now, 8) {
                prop_assert!(b.get(&s.id).unwrap().is_usable(now));
            }
        }
        // What the store would keep rebuilds the same book: every entry in the same place.
        let anchor = TimeAnchor::from_unix(t0, 1_700_000_000);
        let records: Vec<AddrRecord> = b.iter().map(|e| AddrRecord::from_entry(e, &anchor)).collect();
        let mut again = AddrBook::new(b.config().clone());
        prop_assert!(restore_book(&mut again, &anchor, &records).is_empty());
        prop_assert_eq!(again.check(), Ok(()));
        prop_assert_eq!(again.len(), b.len());
        for e in b.iter() {
            let r = again.get(&e.addr.id);
            prop_assert_eq!(r, Some(e));
        }
    }
}

/// Rough operations per second at 10,000 addresses (`cargo test -p switchyard-pex
/// --release -- --ignored --nocapture book_ops_per_second`); prints, asserts nothing.
#[test]
#[ignore = "timing; run by hand"]
fn book_ops_per_second() {
    let t0 = Instant::now();
    let mut b = book();
    let start = Instant::now();
    let mut added = 0;
    for n in 0..10_000u32 {
        let s = routable(n.wrapping_mul(2_654_435_761) % 1_000_000);
        if b.add_address(t0, na(n * 5), s).is_ok() {
            added += 1;
        }
    }
    let add = start.elapsed();
    let none = HashSet::new();
    let start = Instant::now();
    let picks = 100_000;
    for _ in 0..picks {
        std::hint::black_box(b.pick_address(t0, 50, &none));
    }
    let pick = start.elapsed();
    let start = Instant::now();
    let samples = 1_000;
    for _ in 0..samples {
        std::hint::black_box(b.sample(t0, 250));
    }
    let sample = start.elapsed();
    println!(
        "book at {} addresses: add {:.0}/s, pick {:.0}/s, sample(250) {:.0}/s",
        b.len(),
        f64::from(added) / add.as_secs_f64(),
        f64::from(picks) / pick.as_secs_f64(),
        f64::from(samples) / sample.as_secs_f64(),
    );
}
