//! Discovery at scale on the pure parts (testing tier 4 of the design): hundreds of
//! nodes, each with its own address book, PEX exchange and peer manager, over a
//! simulated network with virtual time and one seed for every random choice, so a run
//! replays exactly. See `sim/mod.rs` for what is modelled.
//!
//! Run with `--nocapture` to see the measured figures.

mod sim;

use std::time::Duration;

use sim::{Attack, Params, Sim};

const SECOND: Duration = Duration::from_secs(1);

/// Bootstrap from the seeds, then churn; the figures measured, asserted against bounds
/// with margin.
fn discovery(honest: usize, groups: usize, rng_seed: u64, to_target: Duration, refill: Duration) {
    let mut s = Sim::new(Params::new(honest, 2, groups, rng_seed));
    let target = s.target();

    // Every node reaches its outbound target.
    let all = s.run_until(Duration::from_secs(1800), SECOND, Sim::all_at_target);
    let worst = s
        .honest_up()
        .map(|i| {
            let n = &s.nodes[i];
            n.reached_target.expect("reached") - n.starts_at
        })
        .max()
        .unwrap();
    println!(
        "[{honest} nodes, {groups} groups] all at target {target} at {all:?}; slowest node took {worst:?} from its start"
    );
    let all = all.expect("every node reaches its outbound target");
    assert!(
        all <= to_target,
        "all nodes at target only at {all:?} (bound {to_target:?})"
    );

    // Let it settle past the seeds' hold, then look at the graph.
    s.run_for(Duration::from_secs(120));
    let components = s.honest_components();
    let per_group = s.max_outbound_per_group();
    let seed_inbound: Vec<usize> = (0..2).map(|i| s.nodes[i].inbound()).collect();
    let seed_outbound_held = s
        .honest_up()
        .flat_map(|i| s.nodes[i].conns.iter().filter(|(_, l)| l.outbound))
        .filter(|(id, _)| s.nodes[..2].iter().any(|n| n.addr.id == **id))
        .count();
    let max_inbound = s.honest_up().map(|i| s.nodes[i].inbound()).max().unwrap();
    println!(
        "  components {components}; max outbound peers in one /16 {per_group}; max inbound {max_inbound}; \
         seeds' inbound now {seed_inbound:?}, longest a seed held an inbound peer {:?}; stats {:?}",
        s.stats.seed_max_hold, s.stats
    );
    assert_eq!(components, 1, "the honest graph is connected");
    assert!(
        per_group <= 2,
        "outbound peers spread across groups: {per_group} in one /16"
    );
    assert!(s.all_at_target(), "the target holds once reached");
    let hold = s.p.manager.seed_hold + s.p.manager.tick + SECOND;
    assert!(
        s.stats.seed_max_hold <= hold,
        "a seed held an inbound peer {:?} (seed_hold + tick = {hold:?})",
        s.stats.seed_max_hold
    );
    assert_eq!(
        seed_outbound_held, 0,
        "no node keeps a seed as an outbound peer"
    );
    assert!(
        seed_inbound.iter().all(|&n| n <= 4),
        "seeds let their inbound peers go: {seed_inbound:?}"
    );
    assert_eq!(s.stats.faults, 0, "honest nodes never ask too soon");
    for i in 0..s.nodes.len() {
        s.nodes[i].book.check().expect("book consistent");
    }

    // Churn: the seeds and a quarter of the nodes go; the rest refill from their books.
    let before = s.elapsed();
    for i in 0..2 {
        s.take_down(i);
    }
    let mut up: Vec<usize> = s.honest_up().collect();
    for _ in 0..honest / 4 {
        let k = s.below(up.len());
        let i = up.swap_remove(k);
        s.take_down(i);
    }
    let short = s
        .honest_up()
        .filter(|&i| s.nodes[i].manager.outbound() < target)
        .count();
    let refilled = s
        .run_until(Duration::from_secs(1800), SECOND, Sim::all_at_target)
        .map(|t| t - before);
    println!(
        "  churn: seeds and {} nodes down, {short} of {} short; all back at target after {refilled:?}; \
         components {}, max outbound in one /16 {}",
        honest / 4,
        s.honest_up().count(),
        s.honest_components(),
        s.max_outbound_per_group()
    );
    let refilled = refilled.expect("the rest refill their targets without the seeds");
    assert!(
        refilled <= refill,
        "refilled only after {refilled:?} (bound {refill:?})"
    );
    assert_eq!(s.honest_components(), 1, "still connected after churn");
}

#[test]
fn two_hundred_nodes_find_each_other_from_two_seeds_and_survive_churn() {
    discovery(
        200,
        90,
        0x5eed_0200,
        Duration::from_secs(60),
        Duration::from_secs(300),
    );
}

#[test]
fn sixty_nodes_find_each_other_fast() {
    discovery(
        60,
        40,
        0x5eed_0060,
        Duration::from_secs(60),
        Duration::from_secs(300),
    );
}

/// The figures of a run, to compare two runs.
fn fingerprint(rng_seed: u64) -> (Option<Duration>, u64, u64, Vec<usize>) {
    let mut s = Sim::new(Params::new(30, 1, 20, rng_seed));
    let t = s.run_until(Duration::from_secs(600), SECOND, Sim::all_at_target);
    let degrees = (0..s.nodes.len()).map(|i| s.nodes[i].inbound()).collect();
    (t, s.stats.events, s.stats.dials, degrees)
}

#[test]
fn a_run_replays_from_its_seed() {
    assert_eq!(fingerprint(7), fingerprint(7));
    assert_ne!(fingerprint(7).3, fingerprint(8).3);
}

/// The attacker of the eclipse tests: 2 × 2,500 addresses in two /16 groups, four
/// inbound connections to every node, 8 full answers (2,000 addresses) pushed into
/// every honest book when it connects, and a full answer whenever it is asked.
fn attack(starts_at: Duration) -> Attack {
    Attack {
        groups: [200, 201],
        per_group: 2500,
        inbound_per_node: 4,
        flood_answers: 8,
        starts_at,
    }
}

/// What the attacker got: (most attacker outbound peers any honest node held at any
/// time, attacker entries per honest book (min, max)).
fn eclipse_figures(s: &Sim, label: &str) -> (usize, usize, usize) {
    let honest: Vec<usize> = s.honest_up().collect();
    let in_book: Vec<usize> = honest
        .iter()
        .map(|&i| {
            s.nodes[i]
                .book
                .iter()
                .filter(|e| s.is_attacker(&e.addr.id))
                .count()
        })
        .collect();
    let book_len: Vec<usize> = honest.iter().map(|&i| s.nodes[i].book.len()).collect();
    let now_max = honest
        .iter()
        .map(|&i| s.attacker_outbound(i))
        .max()
        .unwrap();
    let now_mean = honest
        .iter()
        .map(|&i| s.attacker_outbound(i))
        .sum::<usize>() as f64
        / honest.len() as f64;
    let ever_max = s.stats.attacker_outbound_max;
    let (min, max) = (
        *in_book.iter().min().unwrap(),
        *in_book.iter().max().unwrap(),
    );
    println!(
        "[{label}] attacker handed out {} addresses; attacker entries per honest book {min}..{max} \
         (books of {}..{}); attacker outbound peers per node now: max {now_max}, mean {now_mean:.2}; \
         at any time: max {ever_max} of {} = share {:.2}; stats {:?}",
        s.stats.attacker_addrs_sent,
        book_len.iter().min().unwrap(),
        book_len.iter().max().unwrap(),
        s.target(),
        ever_max as f64 / s.target() as f64,
        s.stats
    );
    (ever_max, min, max)
}

/// An attacker with thousands of addresses in two /16 groups joins a running network
/// (connected to every node and answering every request with its own addresses), then
/// a quarter of the nodes and the seeds go, so every survivor redials from a book the
/// attacker gossiped into: the attacker holds only a small share of any honest node's
/// outbound peers.
#[test]
fn an_eclipse_attempt_from_two_groups_gets_a_small_share() {
    let mut p = Params::new(200, 2, 90, 0xec11_95e0);
    p.attack = Some(attack(Duration::from_secs(60)));
    let mut s = Sim::new(p);
    let target = s.target();
    let formed = s.run_until(Duration::from_secs(600), SECOND, Sim::all_at_target);
    assert!(
        formed.is_some_and(|t| t < Duration::from_secs(60)),
        "formed before the attack: {formed:?}"
    );
    s.run_for(Duration::from_secs(120));
    for i in 0..2 {
        s.take_down(i);
    }
    let mut up: Vec<usize> = s.honest_up().collect();
    for _ in 0..50 {
        let k = s.below(up.len());
        let i = up.swap_remove(k);
        s.take_down(i);
    }
    let before = s.elapsed();
    let refilled = s
        .run_until(Duration::from_secs(1800), SECOND, Sim::all_at_target)
        .map(|t| t - before);
    s.run_for(Duration::from_secs(120));
    println!("[eclipse after bootstrap] formed at {formed:?}; after churn all at target {target} again after {refilled:?}");
    let (ever_max, min_in_book, _) = eclipse_figures(&s, "eclipse after bootstrap");
    assert!(
        refilled.is_some(),
        "honest nodes still refill their targets"
    );
    assert!(
        s.stats.attacker_addrs_sent >= 200 * 2000,
        "the attack is real: thousands of addresses to every node"
    );
    assert!(min_in_book >= 100, "and hundreds of them in every book");
    assert!(
        ever_max <= 3,
        "an attacker in two groups held {ever_max} of {target} outbound peers"
    );
    assert_eq!(s.honest_components(), 1, "the honest graph stays connected");
}

/// The same attacker present from the start, when a node's book is empty: its
/// inbound connections are the first peers a node has and are asked first, and its
/// answers fill the book. Before outbound peers were capped per group
/// (`max_outbound_per_group`) it took all 10 outbound peers of some nodes (7 on
/// average); the cap leaves it one per group of its two.
#[test]
fn an_eclipse_attempt_at_bootstrap_gets_a_small_share() {
    let mut p = Params::new(200, 2, 90, 0xec11_95e0);
    p.attack = Some(attack(Duration::ZERO));
    let mut s = Sim::new(p);
    let all = s.run_until(Duration::from_secs(1800), SECOND, Sim::all_at_target);
    s.run_for(Duration::from_secs(120));
    println!("[eclipse at bootstrap] all at target at {all:?}");
    let (ever_max, _, _) = eclipse_figures(&s, "eclipse at bootstrap");
    assert!(
        ever_max <= 3,
        "an attacker in two groups held {ever_max} of {} outbound peers",
        s.target()
    );
}
