//! The discovery step: nodes finding each other from one seed, the address book's
//! add and select rates, and the peer store's write throughput, each beside a
//! baseline from the same run.

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use actix::prelude::*;
use rand::RngCore;
use switchyard::{GetInfo, NodeConfig, PeerAddr, Switch, SwitchExt};
use switchyard_pex::book::dial_bias;
use switchyard_pex::discovery::{Discovery, DiscoveryConfig, DiscoveryHandle};
use switchyard_pex::store::{AddrRecord, Change, PeerStore, TableKind};
use switchyard_pex::{AddrBook, BookConfig, NetAddr};
use switchyard_proto::id::NODE_ID_LEN;
use switchyard_proto::NodeId;

use super::{BenchOptions, Row};

/// The peer manager's tick in the discovery run: the integration test's.
const TICK: Duration = Duration::from_millis(50);
/// How long the nodes may take before the run fails.
const BOUND: Duration = Duration::from_secs(30);
/// Records per peer-store transaction.
const BATCH: usize = 100;

/// Every row of the discovery step.
pub async fn discovery(opts: &BenchOptions) -> Result<Vec<Row>, String> {
    let mut rows = vec![from_one_seed(opts).await?];
    rows.extend(book_ops(opts));
    rows.push(store_writes(opts)?);
    Ok(rows)
}

/// The config of every node of the discovery run (`make run`'s: Noise, one arbiter).
fn node_config() -> NodeConfig {
    NodeConfig {
        arbiters: 1,
        ..NodeConfig::local()
    }
}

/// Nodes that know only a seed reaching their outbound target through PEX, against
/// the same number of nodes making the same outbound connections by dials wired by
/// hand (each node dials the next `target` nodes of a ring, all at once).
async fn from_one_seed(opts: &BenchOptions) -> Result<Row, String> {
    let (n, target) = if opts.smoke { (6, 2) } else { (20, 4) };

    // Baseline: no discovery, every connection dialed by hand.
    let mut plain = Vec::with_capacity(n);
    for _ in 0..n {
        let switch = Switch::builder(node_config())
            .start()
            .map_err(|e| e.to_string())?;
        let info = switch.send(GetInfo).await.map_err(|e| e.to_string())?;
        let addr = info.listen_addr.ok_or("node not listening")?;
        let id = info.id;
        plain.push((switch, PeerAddr::new(Some(id), addr)));
    }
    let t0 = Instant::now();
    let mut dials = Vec::with_capacity(n * target);
    for (i, (switch, _)) in plain.iter().enumerate() {
        for k in 1..=target {
            dials.push(switch.dial(plain[(i + k) % n].1.clone()));
        }
    }
    for d in futures_util::future::join_all(dials).await {
        d.map_err(|e| format!("hand-wired dial: {e}"))?;
    }
    let base = t0.elapsed().as_secs_f64();
    for (s, _) in &plain {
        s.shutdown().await;
    }

    // Switchyard: a seed and nodes that know only the seed.
    let start = |cfg: DiscoveryConfig| async move {
        let (pex, handle) = Discovery::new(cfg).start().map_err(|e| e.to_string())?;
        let switch = Switch::builder(node_config())
            .service(pex)
            .start()
            .map_err(|e| e.to_string())?;
        let info = switch.send(GetInfo).await.map_err(|e| e.to_string())?;
        let addr = NetAddr::new(info.id, info.listen_addr.ok_or("node not listening")?);
        Ok::<(Addr<Switch>, DiscoveryHandle, NetAddr), String>((switch, handle, addr))
    };
    let seed = start(DiscoveryConfig::default().seed_mode().quick(TICK)).await?;
    seed.1.start(seed.0.clone());
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        let mut cfg = DiscoveryConfig::default().quick(TICK);
        cfg.manager.target_outbound = target;
        cfg.seeds = vec![seed.2];
        nodes.push(start(cfg).await?);
    }
    // Every node is listening before the first one looks for peers.
    let t0 = Instant::now();
    for (switch, handle, _) in &nodes {
        handle.start(switch.clone());
    }
    // A node every other one dialed has nobody left to dial: its peer set is full.
    for (i, (_, handle, _)) in nodes.iter().enumerate() {
        let mut rx = handle.status();
        let full =
            |s: &switchyard_pex::service::Status| s.outbound >= target || s.connected >= n - 1;
        let reached = matches!(
            tokio::time::timeout(BOUND, rx.wait_for(full)).await,
            Ok(Ok(_))
        );
        if !reached {
            return Err(format!(
                "discovery: node{i} did not reach {target} outbound peers"
            ));
        }
    }
    let ours = t0.elapsed().as_secs_f64();
    for (s, _, _) in nodes.iter().chain([&seed]) {
        s.shutdown().await;
    }
    Ok(Row::new(
        "discovery: nodes from one seed reach their outbound target",
        &format!("{n} nodes, target {target}"),
        base,
        ours,
        "s",
        &format!(
            "baseline: the same number of nodes, each dialing {target} others by hand at once (no discovery); PEX tick {} ms",
            TICK.as_millis()
        ),
    ))
}

/// `count` distinct routable addresses, one /16 group each, and the IP of the peer
/// that told us of each (one source per 100 addresses).
fn addresses(count: usize) -> Vec<(NetAddr, IpAddr)> {
    let mut rng = rand::thread_rng();
    (0..count)
        .map(|i| {
            let mut id = [0u8; NODE_ID_LEN];
            rng.fill_bytes(&mut id);
            // 11.0.0.0 onward, a /16 each: past 10/8, short of 127/8 for 10,000.
            let ip = Ipv4Addr::from(0x0B00_0001u32 + ((i as u32) << 16));
            let src = Ipv4Addr::from(0x0B00_0002u32 + (((i / 100) as u32) << 16));
            (
                NetAddr::new(NodeId(id), SocketAddr::new(IpAddr::V4(ip), 26656)),
                IpAddr::V4(src),
            )
        })
        .collect()
}

/// Operations per second of `f` run `count` times.
fn rate(count: usize, mut f: impl FnMut(usize)) -> f64 {
    let t0 = Instant::now();
    for i in 0..count {
        f(i);
    }
    count as f64 / t0.elapsed().as_secs_f64().max(1e-9)
}

/// `AddrBook::add_address` and `pick_address` at 10,000 addresses against a plain
/// `HashMap` insert and lookup of the same addresses.
fn book_ops(opts: &BenchOptions) -> Vec<Row> {
    let count = opts.scale(10_000) as usize;
    let addrs = addresses(count);
    let now = Instant::now();
    let mut key = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut key);
    let mut book = AddrBook::new(BookConfig::new(key, 7));
    let mut map: HashMap<NodeId, SocketAddr> = HashMap::new();

    let base_add = rate(count, |i| {
        map.insert(addrs[i].0.id, addrs[i].0.addr);
    });
    let ours_add = rate(count, |i| {
        let _ = std::hint::black_box(book.add_address(now, addrs[i].0, addrs[i].1));
    });
    let kept = book.len();

    // Lookups in a scattered order, the way a random pick lands.
    let order: Vec<usize> = (0..count).map(|i| (i * 7919) % count).collect();
    let base_pick = rate(count, |i| {
        std::hint::black_box(map.get(&addrs[order[i]].0.id));
    });
    let exclude = HashSet::new();
    let bias = dial_bias(2, 10);
    let ours_pick = rate(count, |_| {
        std::hint::black_box(book.pick_address(now, bias, &exclude));
    });
    let size = format!("{count} addresses");
    vec![
        Row::new(
            "address book add",
            &size,
            base_add,
            ours_add,
            "ops/s",
            &format!(
                "baseline: HashMap<NodeId, SocketAddr> insert of the same addresses; the book kept {kept} (full buckets evict)"
            ),
        ),
        Row::new(
            "address book select (pick_address)",
            &size,
            base_pick,
            ours_pick,
            "ops/s",
            "baseline: HashMap lookup of the same addresses in a scattered order",
        ),
    ]
}

/// `PeerStore::apply` of batches of 100 records against appending the same number
/// of records' bytes to a file with an fsync per batch.
fn store_writes(opts: &BenchOptions) -> Result<Row, String> {
    let count = (opts.scale(20_000) as usize).div_ceil(BATCH) * BATCH;
    let dir = std::env::temp_dir().join(format!("switchyard-bench-store-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let records: Vec<AddrRecord> = addresses(count)
        .into_iter()
        .map(|(addr, src)| AddrRecord {
            addr,
            src,
            table: TableKind::New,
            attempts: 1,
            last_attempt: Some(1_700_000_000),
            last_success: None,
            bad_until: None,
            banned_until: None,
        })
        .collect();
    let result = (|| {
        // Baseline: key and a value of the store's layout (about 50 bytes) per record,
        // one write and one fsync per batch.
        let path = dir.join("plain.bin");
        let mut file = std::fs::File::create(&path).map_err(|e| e.to_string())?;
        // Created and synced before the clock starts, like the store opened below.
        file.sync_all().map_err(|e| e.to_string())?;
        let mut buf = Vec::with_capacity(BATCH * 96);
        let t0 = Instant::now();
        for batch in records.chunks(BATCH) {
            buf.clear();
            for r in batch {
                buf.extend_from_slice(&r.addr.id.0);
                buf.extend_from_slice(&[1, 0]);
                buf.extend_from_slice(&r.attempts.to_le_bytes());
                buf.push(1);
                buf.extend_from_slice(&[0u8; 32]);
                if let IpAddr::V4(ip) = r.addr.addr.ip() {
                    buf.push(4);
                    buf.extend_from_slice(&ip.octets());
                }
                buf.extend_from_slice(&r.addr.addr.port().to_le_bytes());
                if let IpAddr::V4(ip) = r.src {
                    buf.push(4);
                    buf.extend_from_slice(&ip.octets());
                }
            }
            file.write_all(&buf).map_err(|e| e.to_string())?;
            file.sync_all().map_err(|e| e.to_string())?;
        }
        let base = count as f64 / t0.elapsed().as_secs_f64();

        let store = PeerStore::open(&dir.join("peers.redb")).map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        for batch in records.chunks(BATCH) {
            let changes: Vec<Change> = batch.iter().cloned().map(Change::PutAddr).collect();
            store.apply(&changes).map_err(|e| e.to_string())?;
        }
        let ours = count as f64 / t0.elapsed().as_secs_f64();
        Ok::<_, String>((base, ours))
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let (base, ours) = result?;
    Ok(Row::new(
        "peer store writes (PeerStore::apply)",
        &format!("{count} records, {BATCH} a batch"),
        base,
        ours,
        "records/s",
        "baseline: the same records' bytes appended to a file, one write and fsync per batch",
    ))
}
