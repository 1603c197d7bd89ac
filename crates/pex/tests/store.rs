//! The peer store: round trips through the book, bans and misbehaviour scores, and
//! crash safety under a real
//! SIGKILL of a writer process.
#![allow(clippy::disallowed_methods)] // tests read the clock once for their origin

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use switchyard_pex::book::Place;
use switchyard_pex::discovery::{Discovery, DiscoveryConfig, STORE_FILE};
use switchyard_pex::store::{
    book_changes, restore_book, AddrRecord, Change, PeerStore, StoreError, StoredBans, StoredScore,
    TableKind, TimeAnchor,
};
use switchyard_pex::{AddrBook, BookConfig, NetAddr};
use switchyard_proto::switch::{BanKey, BanList};
use switchyard_proto::NodeId;

/// A fresh directory for one test (removed first if a previous run left it).
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-pex-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn id(n: u32) -> NodeId {
    let mut b = [0u8; 20];
    b[..4].copy_from_slice(&n.to_be_bytes());
    b[19] = 1;
    NodeId(b)
}

fn na(n: u32) -> NetAddr {
    let ip = Ipv4Addr::new(
        20 + (n / 65_536 % 60) as u8,
        (n / 256 % 256) as u8,
        (n % 256) as u8,
        1,
    );
    NetAddr::new(id(n), SocketAddr::new(IpAddr::V4(ip), 26656))
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn the_book_round_trips_through_the_store() {
    let dir = scratch("roundtrip");
    let path = dir.join("peers.redb");
    let t0 = Instant::now();
    let anchor = TimeAnchor::from_unix(t0, 1_700_000_000);
    let cfg = BookConfig::new([5; 32], 1);

    // One address per /16, so the 300 spread over many buckets and none is evicted.
    let a = |n: u32| na(n * 256);
    let mut book = AddrBook::new(cfg.clone());
    for n in 0..300 {
        book.add_address(t0, a(n), "31.0.0.1".parse().unwrap())
            .unwrap();
    }
    assert_eq!(book.len(), 300);
    for n in 0..40 {
        book.mark_good(t0 + secs(10), a(n)).unwrap();
    }
    book.mark_attempt(t0 + secs(20), &a(100).id).unwrap();
    book.ban(&a(101).id, t0 + secs(3600)).unwrap();
    book.add_persistent(a(1_000)).unwrap();
    book.remove(&a(299).id);
    {
        let store = PeerStore::open(&path).unwrap();
        let changes = book_changes(&mut book, &anchor);
        assert!(changes.contains(&Change::RemoveAddr(a(299).id)));
        store.apply(&changes).unwrap();
        assert!(book_changes(&mut book, &anchor).is_empty());
    }

    // A restart: a later process, a new origin, the same wall clock.
    let t1 = t0 + secs(100);
    let anchor1 = TimeAnchor::from_unix(t1, 1_700_000_100);
    let store = PeerStore::open(&path).unwrap();
    let snap = store.load().unwrap();
    assert_eq!(snap.addrs.len(), book.len());
    let mut again = AddrBook::new(cfg);
    assert!(restore_book(&mut again, &anchor1, &snap.addrs).is_empty());
    assert_eq!(
        (again.len(), again.tried_count(), again.new_count()),
        (book.len(), book.tried_count(), book.new_count())
    );
    for e in book.iter() {
        let r = again.get(&e.addr.id).unwrap();
        assert_eq!((r.addr, r.src, r.attempts), (e.addr, e.src, e.attempts));
        assert_eq!(r.place, e.place, "same key, same bucket");
        assert_eq!(r.last_success, e.last_success);
        assert_eq!(r.banned_until, e.banned_until);
    }
    assert_eq!(again.get(&a(1_000).id).unwrap().place, Place::Persistent);
    assert!(again.get(&a(299).id).is_none());
    assert!(
        again.take_dirty().is_empty(),
        "restoring writes nothing back"
    );
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bans_survive_a_restart_and_expire() {
    let dir = scratch("bans");
    let path = dir.join("peers.redb");
    let t0 = Instant::now();
    let anchor = TimeAnchor::from_unix(t0, 1_700_000_000);
    let node = BanKey::Node(id(7));
    let ip = BanKey::Ip("20.1.2.3".parse().unwrap());
    {
        let store = PeerStore::open(&path).unwrap();
        let mut bans = StoredBans::new(anchor);
        bans.ban(node, t0 + secs(600));
        bans.ban(ip, t0 + secs(60));
        store.apply(&bans.take_changes()).unwrap();
    }
    let t1 = t0 + secs(30);
    let anchor1 = TimeAnchor::from_unix(t1, 1_700_000_030);
    let store = PeerStore::open(&path).unwrap();
    let snap = store.load().unwrap();
    let mut bans = StoredBans::from_loaded(anchor1, &snap.bans);
    assert!(bans.take_changes().is_empty());
    assert_eq!(bans.len(), 2);
    assert_eq!(bans.banned_until(&node, t1), Some(t0 + secs(600)));
    assert!(bans.banned_until(&ip, t1).is_some());
    bans.expire(t0 + secs(60));
    assert_eq!(bans.take_changes(), vec![Change::Unban(ip)]);
    assert!(bans.banned_until(&ip, t0 + secs(60)).is_none());
    store.apply(&[Change::Unban(ip)]).unwrap();
    assert_eq!(store.load().unwrap().bans, vec![(node, 1_700_000_600)]);
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn scores_survive_a_restart_and_expired_ones_are_forgotten() {
    let dir = scratch("scores");
    let path = dir.join("peers.redb");
    let t0 = Instant::now();
    let anchor = TimeAnchor::from_unix(t0, 1_700_000_000);
    let node = BanKey::Node(id(7));
    let ip = BanKey::Ip("20.1.2.3".parse().unwrap());
    let soon = BanKey::Node(id(8));
    {
        let store = PeerStore::open(&path).unwrap();
        let mut bans = StoredBans::new(anchor);
        assert_eq!(bans.add_points(t0, node, 50, t0 + secs(600)), 50);
        bans.add_points(t0, ip, 10, t0 + secs(600));
        bans.add_points(t0, soon, 1, t0 + secs(20));
        assert_eq!(bans.add_points(t0 + secs(1), ip, 10, t0 + secs(601)), 20);
        // One batch: the later score of `ip` replaces the earlier.
        store.apply(&bans.take_changes()).unwrap();
        let mut stored = store.load().unwrap().scores;
        stored.sort_by_key(|s| s.until);
        assert_eq!(
            stored,
            vec![
                StoredScore {
                    key: soon,
                    points: 1,
                    until: 1_700_000_020
                },
                StoredScore {
                    key: node,
                    points: 50,
                    until: 1_700_000_600
                },
                StoredScore {
                    key: ip,
                    points: 20,
                    until: 1_700_000_601
                },
            ]
        );
    }

    // Reopened 30 s later: `soon` ended while the node was down.
    let t1 = t0 + secs(30);
    let anchor1 = TimeAnchor::from_unix(t1, 1_700_000_030);
    let store = PeerStore::open(&path).unwrap();
    let mut bans = StoredBans::from_snapshot(anchor1, &store.load().unwrap());
    assert_eq!(bans.scored(), 2);
    assert_eq!(bans.score(&node, t1).map(|s| s.points), Some(50));
    assert_eq!(bans.score(&node, t1).map(|s| s.until), Some(t0 + secs(600)));
    assert!(bans.score(&soon, t1).is_none());
    assert_eq!(
        bans.take_changes(),
        vec![Change::Unscore(soon)],
        "an expired score is removed, the others are not written again"
    );
    store.apply(&[Change::Unscore(soon)]).unwrap();
    // The points go on from where they were: 50 + 50 is the default threshold.
    assert_eq!(bans.add_points(t1, node, 50, t1 + secs(600)), 100);
    // Banned: the points go, and that is stored too.
    bans.ban(node, t1 + secs(600));
    bans.clear_points(&node);
    bans.expire(t0 + secs(601));
    let changes = bans.take_changes();
    assert!(changes.contains(&Change::Unscore(node)), "{changes:?}");
    assert!(changes.contains(&Change::Unscore(ip)), "{changes:?}");
    store.apply(&changes).unwrap();
    let snap = store.load().unwrap();
    assert!(snap.scores.is_empty(), "{:?}", snap.scores);
    assert_eq!(snap.bans, vec![(node, 1_700_000_630)]);
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn stored_scores_are_bounded() {
    let dir = scratch("scores-bound");
    let path = dir.join("peers.redb");
    let t0 = Instant::now();
    let anchor = TimeAnchor::from_unix(t0, 1_700_000_000);
    let store = PeerStore::open(&path).unwrap();
    let mut bans = StoredBans::with_score_capacity(anchor, 3);
    for n in 0..10u32 {
        let at = t0 + secs(u64::from(n));
        bans.add_points(at, BanKey::Node(id(n)), 1, at + secs(600));
        store.apply(&bans.take_changes()).unwrap();
    }
    assert_eq!(bans.scored(), 3);
    let stored: HashSet<BanKey> = store.load().unwrap().scores.iter().map(|s| s.key).collect();
    assert_eq!(
        stored,
        (7..10).map(|n| BanKey::Node(id(n))).collect(),
        "the store holds what memory holds: the newest"
    );
    // A store holding more than the capacity (written with a larger one) is cut on
    // load, and the cut ones are removed from it.
    let mut big = StoredBans::new(anchor);
    for n in 20..25u32 {
        big.add_points(t0, BanKey::Node(id(n)), 1, t0 + secs(600 + u64::from(n)));
    }
    store.apply(&big.take_changes()).unwrap();
    let snap = store.load().unwrap();
    assert_eq!(snap.scores.len(), 8);
    let mut small = StoredBans::with_score_capacity(anchor, 3);
    small.load(&snap);
    assert_eq!(small.scored(), 3);
    let kept: HashSet<BanKey> = (20..25)
        .chain(7..10)
        .map(|n| BanKey::Node(id(n)))
        .filter(|k| small.score(k, t0).is_some())
        .collect();
    assert_eq!(
        kept,
        (22..25).map(|n| BanKey::Node(id(n))).collect(),
        "the latest to end are kept"
    );
    let changes = small.take_changes();
    assert_eq!(changes.len(), 5, "{changes:?}");
    store.apply(&changes).unwrap();
    assert_eq!(store.load().unwrap().scores.len(), 3);
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn shared_bans_reach_the_store_on_flush_and_stop() {
    let dir = scratch("shared-bans");
    let node = BanKey::Node(id(9));
    let ip = BanKey::Ip("20.9.9.9".parse().unwrap());
    let start = || {
        let mut cfg = DiscoveryConfig::default();
        cfg.dir = Some(dir.clone());
        let (_service, handle) = Discovery::new(cfg).start().unwrap();
        handle
    };
    actix_rt::System::new().block_on(async {
        let handle = start();
        let mut bans = handle.bans();
        assert!(bans.is_empty());
        bans.ban(node, Instant::now() + secs(600));
        handle.flush().await;
        assert!(
            handle.bans().take_changes().is_empty(),
            "the flush took them"
        );
        bans.ban(ip, Instant::now() + secs(600));
        handle.stop().await;
        let store = PeerStore::open(&dir.join(STORE_FILE)).unwrap();
        let stored: HashSet<BanKey> = store.load().unwrap().bans.iter().map(|b| b.0).collect();
        assert_eq!(
            stored,
            HashSet::from([node, ip]),
            "flush wrote one, stop the other"
        );
        drop(store);

        let handle = start();
        let bans = handle.bans();
        assert_eq!(bans.len(), 2);
        assert!(bans.banned_until(&node, Instant::now()).is_some());
        assert!(
            bans.take_changes().is_empty(),
            "loaded bans are not written again"
        );
        handle.stop().await;
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_book_key_is_kept_and_garbage_is_reported() {
    let dir = scratch("meta");
    let path = dir.join("peers.redb");
    {
        let store = PeerStore::open(&path).unwrap();
        assert_eq!(store.book_key([1; 32]).unwrap(), [1; 32]);
        assert_eq!(store.book_key([2; 32]).unwrap(), [1; 32]);
    }
    {
        let db = redb::Database::create(&path).unwrap();
        let txn = db.begin_write().unwrap();
        {
            let def: redb::TableDefinition<&[u8], &[u8]> = redb::TableDefinition::new("addrs");
            let mut t = txn.open_table(def).unwrap();
            t.insert(&[1u8; 20][..], &[9u8, 9, 9][..]).unwrap();
        }
        txn.commit().unwrap();
    }
    let store = PeerStore::open(&path).unwrap();
    assert!(matches!(
        store.load(),
        Err(StoreError::Corrupt { table: "addrs", .. })
    ));
    let missing = PeerStore::open(Path::new("/nonexistent/dir/peers.redb")).unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/dir/peers.redb"),
        "{missing}"
    );
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}

const CHURN_ENV: &str = "SWITCHYARD_PEX_CHURN_DB";
const BATCH: u32 = 100;

fn churn_record(n: u32, attempts: u32) -> AddrRecord {
    AddrRecord {
        addr: na(n),
        src: "31.0.0.1".parse().unwrap(),
        table: if n.is_multiple_of(3) {
            TableKind::Tried
        } else {
            TableKind::New
        },
        attempts,
        last_attempt: Some(u64::from(attempts)),
        last_success: None,
        bad_until: None,
        banned_until: None,
    }
}

/// Not a test on its own: when the crash test re-executes this binary with
/// `SWITCHYARD_PEX_CHURN_DB` set, this is the child that churns the store until it is
/// killed, printing `committed N` after each commit (every id below N is stored).
#[test]
fn churn_child() {
    let Ok(path) = std::env::var(CHURN_ENV) else {
        return;
    };
    let store = PeerStore::open(Path::new(&path)).unwrap();
    let mut out = std::io::stdout().lock();
    let mut next = 0u32;
    let mut round = 0u32;
    loop {
        round += 1;
        let mut batch = Vec::with_capacity(160);
        for _ in 0..BATCH {
            batch.push(Change::PutAddr(churn_record(next, 0)));
            next += 1;
        }
        // Churn: rewrite some earlier records, and add then drop short-lived ones.
        for k in 0..30 {
            let old = (round.wrapping_mul(2_654_435_761) ^ (k * 40_503)) % next;
            batch.push(Change::PutAddr(churn_record(old, round)));
        }
        let ephemeral = 0x8000_0000 | round;
        batch.push(Change::PutAddr(churn_record(ephemeral, 1)));
        batch.push(Change::RemoveAddr(
            id(0x8000_0000 | round.saturating_sub(1)),
        ));
        store.apply(&batch).unwrap();
        writeln!(out, "committed {next}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn committed_addresses_survive_kill_dash_nine() {
    let dir = scratch("crash");
    let path = dir.join("peers.redb");
    let exe = std::env::current_exe().unwrap();
    for (round, lines_before_kill) in [(1, 25), (2, 7)] {
        let mut child = Command::new(&exe)
            .args(["churn_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHURN_ENV, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut committed = 0u32;
        let mut lines = 0;
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(n) = line.strip_prefix("committed ") {
                committed = n.parse().unwrap();
                lines += 1;
                if lines == lines_before_kill {
                    break;
                }
            }
        }
        // SIGKILL while it is still committing (the pipe lets it run on meanwhile).
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            committed >= BATCH,
            "round {round}: the child committed nothing"
        );

        let store = PeerStore::open(&path).unwrap();
        let snap = store.load().unwrap();
        let ids: HashSet<NodeId> = snap.addrs.iter().map(|r| r.addr.id).collect();
        let missing: Vec<u32> = (0..committed).filter(|n| !ids.contains(&id(*n))).collect();
        assert!(
            missing.is_empty(),
            "round {round}: {} of {committed} committed addresses lost, first {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        for r in &snap.addrs {
            assert_eq!(
                r.addr.addr,
                na(u32::from_be_bytes(r.addr.id.0[..4].try_into().unwrap())).addr
            );
        }
        drop(store);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Rough write throughput of the store (`cargo test -p switchyard-pex --test store --
/// --ignored --nocapture store_writes_per_second`); prints, asserts nothing.
#[test]
#[ignore = "timing; run by hand"]
fn store_writes_per_second() {
    let dir = scratch("throughput");
    let store = PeerStore::open(&dir.join("peers.redb")).unwrap();
    let (batches, per_batch) = (200u32, 100u32);
    let start = Instant::now();
    for b in 0..batches {
        let batch: Vec<Change> = (0..per_batch)
            .map(|i| Change::PutAddr(churn_record(b * per_batch + i, 0)))
            .collect();
        store.apply(&batch).unwrap();
    }
    let took = start.elapsed().as_secs_f64();
    println!(
        "store: {:.0} records/s in batches of {per_batch} ({:.0} commits/s)",
        f64::from(batches * per_batch) / took,
        f64::from(batches) / took
    );
    drop(store);
    std::fs::remove_dir_all(&dir).unwrap();
}
