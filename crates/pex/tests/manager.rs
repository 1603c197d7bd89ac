//! The peer manager's policy with virtual time: filling the outbound target, backoff
//! per address, asking when the book is thin, spreading across groups, crawling.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use switchyard_pex::book::{AddrBook, BookConfig};
use switchyard_pex::manager::{Action, DialOutcome, Manager, ManagerConfig};
use switchyard_pex::{Group, NetAddr};
use switchyard_proto::NodeId;

fn t0() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

fn id(n: u16) -> NodeId {
    let mut raw = [0u8; 20];
    raw[..2].copy_from_slice(&n.to_be_bytes());
    raw[19] = 1;
    NodeId(raw)
}

/// Address `n` in group `20.g.0.0/16`.
fn addr(n: u16, g: u8) -> NetAddr {
    let ip: IpAddr = format!("20.{g}.{}.{}", n / 256, n % 256).parse().unwrap();
    NetAddr::new(id(n), SocketAddr::new(ip, 26656))
}

fn config() -> ManagerConfig {
    let mut c = ManagerConfig::default();
    c.target_outbound = 4;
    c.max_dialing = 2;
    c.tick = Duration::from_secs(1);
    c.thin_book = 0;
    c.seed = 42;
    c
}

fn drain(m: &mut Manager) -> Vec<Action> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

fn dials(actions: &[Action]) -> Vec<NetAddr> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Dial(a) => Some(*a),
            _ => None,
        })
        .collect()
}

fn book(n: u16, groups: u8, now: Instant) -> AddrBook {
    let mut b = AddrBook::new(BookConfig::new([3; 32], 9));
    for i in 0..n {
        let a = addr(i, (i % u16::from(groups)) as u8 + 1);
        b.add_address(now, a, a.addr.ip()).unwrap();
    }
    b
}

#[test]
fn fills_the_target_within_the_dial_limit_and_records_successes() {
    let t = t0();
    let mut b = book(40, 20, t);
    let mut m = Manager::new(config(), t);
    let mut now = t;
    let mut ticks = 0;
    while m.outbound() < 4 {
        m.handle_timeout(now, &mut b);
        let d = dials(&drain(&mut m));
        assert!(m.dialing() <= 2, "at most max_dialing in flight");
        for a in d {
            m.handle_dialed(now, &mut b, a, DialOutcome::Connected);
            m.handle_peer_up(now, a.id, a.addr, true);
        }
        now += Duration::from_secs(1);
        ticks += 1;
        assert!(ticks < 10, "target not reached");
    }
    assert_eq!(m.outbound(), 4);
    assert_eq!(b.tried_count(), 4, "each success moved to tried");
    // At the target: nothing more is dialed.
    m.handle_timeout(now, &mut b);
    assert!(dials(&drain(&mut m)).is_empty());
    // One goes: it is replaced.
    let gone = b.iter().find(|e| e.place.is_tried()).unwrap().addr;
    m.handle_peer_down(now, gone.id);
    m.handle_timeout(now + Duration::from_secs(1), &mut b);
    assert_eq!(dials(&drain(&mut m)).len(), 1);
}

#[test]
fn outbound_peers_spread_across_groups() {
    let t = t0();
    // 60 addresses in 3 groups; a target of 3 takes one of each.
    let mut b = book(60, 3, t);
    let mut cfg = config();
    cfg.target_outbound = 3;
    cfg.max_dialing = 3;
    let mut m = Manager::new(cfg, t);
    m.handle_timeout(t, &mut b);
    let d = dials(&drain(&mut m));
    assert_eq!(d.len(), 3);
    let groups: HashSet<Group> = d.iter().map(NetAddr::group).collect();
    assert_eq!(groups.len(), 3, "{d:?}");
}

#[test]
fn a_failing_address_backs_off_exponentially() {
    let t = t0();
    let mut b = book(1, 1, t);
    let only = addr(0, 1);
    let mut cfg = config();
    cfg.tick = Duration::from_millis(100);
    cfg.dial_backoff_min = Duration::from_secs(1);
    cfg.dial_backoff_max = Duration::from_secs(60);
    let mut m = Manager::new(cfg, t);
    let mut now = t;
    let mut dial_times = Vec::new();
    while now < t + Duration::from_secs(40) {
        if now >= m.poll_timeout() {
            m.handle_timeout(now, &mut b);
        }
        for a in dials(&drain(&mut m)) {
            assert_eq!(a, only);
            dial_times.push(now);
            m.handle_dialed(now, &mut b, a, DialOutcome::Failed);
        }
        now += Duration::from_millis(100);
    }
    assert_eq!(b.get(&only.id).unwrap().attempts as usize, dial_times.len());
    let gaps: Vec<Duration> = dial_times.windows(2).map(|w| w[1] - w[0]).collect();
    // Each delay lies in [d/2, d] for d = 1, 2, 4, 8, 16 s (plus a tick).
    for (i, gap) in gaps.iter().enumerate() {
        let d = Duration::from_secs(1 << i);
        assert!(
            *gap >= d / 2 && *gap <= d + Duration::from_millis(200),
            "gap {i} = {gap:?}"
        );
    }
    assert!((4..=7).contains(&dial_times.len()), "{dial_times:?}");
    // A success clears the backoff and the failures.
    m.handle_dialed(now, &mut b, only, DialOutcome::Connected);
    assert_eq!(b.get(&only.id).unwrap().attempts, 0);
}

#[test]
fn already_connected_is_not_a_failure_and_connected_peers_are_not_dialed() {
    let t = t0();
    let mut b = book(2, 2, t);
    let mut cfg = config();
    cfg.target_outbound = 2;
    let mut m = Manager::new(cfg, t);
    // addr(0) is connected inbound: only addr(1) may be dialed.
    m.handle_peer_up(t, addr(0, 1).id, "20.1.0.0:5555".parse().unwrap(), false);
    m.handle_timeout(t, &mut b);
    let d = dials(&drain(&mut m));
    assert_eq!(d, vec![addr(1, 2)]);
    m.handle_dialed(t, &mut b, d[0], DialOutcome::AlreadyConnected);
    assert_eq!(b.get(&d[0].id).unwrap().attempts, 0);
}

#[test]
fn a_thin_book_asks_one_peer_per_interval_outbound_first() {
    let t = t0();
    let mut b = book(3, 3, t);
    let mut cfg = config();
    cfg.thin_book = 100;
    cfg.request_interval = Duration::from_secs(10);
    let mut m = Manager::new(cfg, t);
    let (inb, outb) = (id(900), id(901));
    m.handle_peer_up(t, inb, "30.0.0.1:1".parse().unwrap(), false);
    m.handle_peer_up(t, outb, "31.0.0.1:1".parse().unwrap(), true);
    m.handle_timeout(t, &mut b);
    let asks: Vec<Action> = drain(&mut m)
        .into_iter()
        .filter(|a| matches!(a, Action::Ask(_)))
        .collect();
    assert_eq!(asks, vec![Action::Ask(outb)], "the outbound peer first");
    m.handle_answer(t, outb, true);
    // Next tick: the outbound peer was just asked, so the inbound one is.
    m.handle_timeout(t + Duration::from_secs(1), &mut b);
    let asks: Vec<Action> = drain(&mut m)
        .into_iter()
        .filter(|a| matches!(a, Action::Ask(_)))
        .collect();
    assert_eq!(asks, vec![Action::Ask(inb)]);
    m.handle_answer(t, inb, false);
    // Nobody again until their interval passed.
    for s in 2..10 {
        m.handle_timeout(t + Duration::from_secs(s), &mut b);
        assert!(!drain(&mut m).iter().any(|a| matches!(a, Action::Ask(_))));
    }
    m.handle_timeout(t + Duration::from_secs(11), &mut b);
    assert!(drain(&mut m).contains(&Action::Ask(outb)));
}

#[test]
fn persistent_peers_are_left_to_the_switch() {
    let t = t0();
    let mut b = AddrBook::new(BookConfig::new([3; 32], 9));
    b.add_persistent(addr(1, 1)).unwrap();
    let mut m = Manager::new(config(), t);
    m.handle_timeout(t, &mut b);
    assert!(dials(&drain(&mut m)).is_empty());
}

#[test]
fn a_crawler_dials_asks_and_lets_go_once_per_interval() {
    let t = t0();
    let mut b = book(5, 5, t);
    let mut cfg = config();
    cfg.crawl = true;
    cfg.max_dialing = 5;
    cfg.crawl_interval = Duration::from_secs(60);
    let mut m = Manager::new(cfg, t);
    m.handle_timeout(t, &mut b);
    let d = dials(&drain(&mut m));
    assert_eq!(d.len(), 5);
    for a in &d {
        m.handle_dialed(t, &mut b, *a, DialOutcome::Connected);
        m.handle_peer_up(t, a.id, a.addr, true);
        assert_eq!(drain(&mut m), vec![Action::Ask(a.id)]);
        m.handle_answer(t, a.id, true);
        assert_eq!(drain(&mut m), vec![Action::Disconnect(a.id)]);
        m.handle_peer_down(t, a.id);
    }
    // Within the crawl interval nothing is crawled again.
    m.handle_timeout(t + Duration::from_secs(30), &mut b);
    assert!(dials(&drain(&mut m)).is_empty());
    m.handle_timeout(t + Duration::from_secs(61), &mut b);
    assert_eq!(dials(&drain(&mut m)).len(), 5);
}

#[test]
fn a_crawler_asks_a_peer_once_even_when_its_peer_up_came_first_and_never_asks_inbound_peers() {
    let t = t0();
    let mut b = book(1, 1, t);
    let mut cfg = config();
    cfg.crawl = true;
    cfg.thin_book = 100;
    let mut m = Manager::new(cfg, t);
    m.handle_timeout(t, &mut b);
    let d = dials(&drain(&mut m));
    assert_eq!(d.len(), 1);
    // Inbound peers of a seed are never asked, however thin the book.
    m.handle_peer_up(t, id(500), "30.0.0.1:1".parse().unwrap(), false);
    m.handle_peer_up(t, d[0].id, d[0].addr, true);
    m.handle_timeout(t, &mut b);
    assert!(!drain(&mut m).iter().any(|a| matches!(a, Action::Ask(_))));
    m.handle_dialed(t, &mut b, d[0], DialOutcome::Connected);
    assert_eq!(drain(&mut m), vec![Action::Ask(d[0].id)]);
    // A second report of the same connection does not ask twice.
    m.handle_dialed(t, &mut b, d[0], DialOutcome::Connected);
    assert!(drain(&mut m).is_empty());
}

#[test]
fn a_peer_that_let_us_go_is_not_redialed_within_the_request_interval() {
    let t = t0();
    let mut b = book(1, 1, t);
    let mut cfg = config();
    cfg.request_interval = Duration::from_secs(10);
    let mut m = Manager::new(cfg, t);
    m.handle_timeout(t, &mut b);
    let d = dials(&drain(&mut m));
    assert_eq!(d.len(), 1);
    m.handle_dialed(t, &mut b, d[0], DialOutcome::Connected);
    m.handle_peer_up(t, d[0].id, d[0].addr, true);
    drain(&mut m);
    // It answers and disconnects us (a seed does).
    m.handle_peer_down(t, d[0].id);
    for s in 1..10 {
        m.handle_timeout(t + Duration::from_secs(s), &mut b);
        assert!(dials(&drain(&mut m)).is_empty(), "redialed after {s} s");
    }
    m.handle_timeout(t + Duration::from_secs(10), &mut b);
    assert_eq!(dials(&drain(&mut m)), d);
}

#[test]
fn a_seed_lets_go_of_inbound_peers_that_stay_too_long() {
    let t = t0();
    let mut b = AddrBook::new(BookConfig::new([3; 32], 9));
    let mut cfg = config();
    cfg.crawl = true;
    cfg.seed_hold = Duration::from_secs(5);
    let mut m = Manager::new(cfg, t);
    let (early, late, out) = (id(1), id(2), id(3));
    m.handle_peer_up(t, early, "30.0.0.1:1".parse().unwrap(), false);
    m.handle_peer_up(
        t + Duration::from_secs(3),
        late,
        "30.0.0.2:1".parse().unwrap(),
        false,
    );
    m.handle_peer_up(t, out, "30.0.0.3:1".parse().unwrap(), true);
    m.handle_timeout(t + Duration::from_secs(4), &mut b);
    assert!(drain(&mut m).is_empty());
    m.handle_timeout(t + Duration::from_secs(6), &mut b);
    assert_eq!(drain(&mut m), vec![Action::LetGo(early)]);
    // Not told twice while its close is under way.
    m.handle_timeout(t + Duration::from_secs(7), &mut b);
    assert!(drain(&mut m).is_empty());
    m.handle_peer_down(t + Duration::from_secs(7), early);
    m.handle_timeout(t + Duration::from_secs(8), &mut b);
    assert_eq!(drain(&mut m), vec![Action::LetGo(late)]);
}

#[test]
fn one_outbound_peer_per_routable_group_and_asks_when_only_full_groups_are_left() {
    let t = t0();
    // 50 addresses, all in 20.1.0.0/16.
    let mut b = book(50, 1, t);
    let mut m = Manager::new(config(), t);
    m.handle_peer_up(t, id(900), "31.0.0.1:1".parse().unwrap(), false);
    m.handle_timeout(t, &mut b);
    let first = drain(&mut m);
    assert_eq!(dials(&first).len(), 1, "one dial into the group: {first:?}");
    let dialed = dials(&first)[0];
    m.handle_dialed(t, &mut b, dialed, DialOutcome::Connected);
    m.handle_peer_up(t, dialed.id, dialed.addr, true);
    // Short of the target, the group full, nothing else in the book: no dial, an ask.
    m.handle_timeout(t + Duration::from_secs(1), &mut b);
    let next = drain(&mut m);
    assert!(dials(&next).is_empty(), "{next:?}");
    assert!(next.iter().any(|a| matches!(a, Action::Ask(_))), "{next:?}");
    // Addresses of another group are dialed at once, one.
    for i in 100..110 {
        let a = addr(i, 2);
        b.add_address(t, a, a.addr.ip()).unwrap();
    }
    m.handle_timeout(t + Duration::from_secs(2), &mut b);
    let later = dials(&drain(&mut m));
    assert_eq!(later.len(), 1, "{later:?}");
    assert_eq!(later[0].group(), addr(100, 2).group());
}

#[test]
fn loopback_addresses_are_not_capped_by_group() {
    let t = t0();
    let mut b = AddrBook::new(BookConfig::new([3; 32], 9).lenient());
    for i in 0..20u16 {
        let a = NetAddr::new(
            id(i),
            SocketAddr::new("127.0.0.1".parse().unwrap(), 30_000 + i),
        );
        b.add_address(t, a, a.addr.ip()).unwrap();
    }
    let mut m = Manager::new(config(), t);
    m.handle_timeout(t, &mut b);
    // As many dials as `max_dialing` allows, all on 127.0.0.1.
    assert_eq!(dials(&drain(&mut m)).len(), 2);
}

#[test]
fn a_crawler_is_not_capped_by_group() {
    let t = t0();
    let mut b = book(50, 1, t);
    let mut cfg = config();
    cfg.crawl = true;
    let mut m = Manager::new(cfg, t);
    m.handle_timeout(t, &mut b);
    // `max_dialing` crawls at once, all in 20.1.0.0/16.
    assert_eq!(dials(&drain(&mut m)).len(), 2);
}
