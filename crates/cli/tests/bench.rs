//! `switchyard bench` runs every scenario and writes the JSON report (tiny counts;
//! figures are checked for shape, never for speed).

use std::process::Command;

#[test]
fn bench_writes_every_scenario_to_json() {
    let path = std::env::temp_dir().join(format!("switchyard-bench-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["bench", "--smoke", "--json"])
        .arg(&path)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("| scenario | size | baseline | switchyard | ratio | unit | note |"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let machine = &report["machine"];
    assert!(machine["cores"].as_u64().unwrap() >= 1);
    assert!(machine["kernel"].is_string() && machine["rustc"].is_string());
    let rows = report["rows"].as_array().unwrap();
    for want in [
        "throughput msgpack per-message",
        "throughput msgpack batched",
        "throughput raw Bytes",
        "per-message delivery vs actix ceiling",
        "idle round trip p50",
        "idle round trip p99",
        "idle round trip p99.9",
        "high-priority round trip p50 under 1 MiB bulk, default settings",
        "high-priority round trip p99 under 1 MiB bulk, default settings",
        "high-priority round trip p50 under 1 MiB bulk, socket_buffer 64 KiB",
        "high-priority round trip p99 under 1 MiB bulk, socket_buffer 64 KiB",
        "high-priority round trip p50 while another channel is stalled",
        "high-priority round trip p99 while another channel is stalled",
        "connection memory with one stalled channel",
        "broadcast to 16 peers (aggregate)",
        "memory per idle peer",
        "connection setup p50 (dial to answer, 1 service)",
        "connection setup p99 (dial to answer, 1 service)",
        "connection setup p50 (dial to answer, 5 services)",
        "connection setup p99 (dial to answer, 5 services)",
        "request round trip p50, idle",
        "request round trip p99, idle",
        "encrypted raw Bytes (AES-256-GCM)",
        "encrypted raw Bytes (ChaCha20-Poly1305)",
        "encrypted msgpack batched (AES-256-GCM)",
        "encrypted msgpack batched (ChaCha20-Poly1305)",
        "connection setup p50 with Noise (dial to answer, 1 service)",
        "connection setup p99 with Noise (dial to answer, 1 service)",
        "handshakes accepted per second (Noise)",
        "discovery: nodes from one seed reach their outbound target",
        "address book add",
        "address book select (pick_address)",
        "peer store writes (PeerStore::apply)",
    ] {
        assert!(rows.iter().any(|r| r["scenario"] == want), "missing {want}");
    }
    for size in ["64 B", "1 KiB", "64 KiB", "1 MiB"] {
        let n = rows
            .iter()
            .filter(|r| {
                r["size"] == size && r["scenario"].as_str().unwrap().starts_with("throughput")
            })
            .count();
        assert_eq!(n, 6, "three modes, MB/s and msgs/s, for {size}");
    }
    for r in rows {
        for key in [
            "scenario",
            "size",
            "baseline",
            "switchyard",
            "ratio",
            "unit",
        ] {
            assert!(!r[key].is_null(), "{key} in {r}");
        }
        if r["scenario"] != "switchyard encrypted" && r["scenario"] != "memory per idle peer" {
            assert!(r["baseline"].as_f64().unwrap() > 0.0, "{r}");
            assert!(r["switchyard"].as_f64().unwrap() > 0.0, "{r}");
        }
    }
    std::fs::remove_file(&path).unwrap();
}
