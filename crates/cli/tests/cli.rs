//! The `switchyard` binary: arguments, config errors, keygen, node + status, testnet.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_switchyard"))
}

fn temp_home(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchyard-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A fresh home with an identity and the default config.
fn keygen(name: &str) -> PathBuf {
    let home = temp_home(name);
    assert!(bin()
        .args(["keygen", "--home"])
        .arg(&home)
        .status()
        .unwrap()
        .success());
    home
}

#[test]
fn bad_arguments_are_usage_errors() {
    let out = bin().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = bin().args(["status", "not-an-address"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected ID@HOST:PORT"));
    // A timeout that would overflow the clock is a usage error, not a panic.
    let out = bin()
        .args([
            "status",
            "0000000000000000000000000000000000000000@127.0.0.1:1",
            "--timeout",
            "18446744073709551615",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A bad private peer id is named.
    let out = bin()
        .args([
            "node",
            "--home",
            "unused",
            "--private-peer-ids",
            "abcd,nothex",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("abcd") && err.contains("--private-peer-ids"),
        "{err}"
    );
    let out = bin().args(["testnet", "--nodes", "many"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = bin().args(["testnet", "--nodes", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--nodes must be between 2 and 64"));
}

#[test]
fn keygen_writes_identity_and_commented_config_once() {
    let home = temp_home("keygen");
    let out = bin()
        .args(["keygen", "--home"])
        .arg(&home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("node id "));
    let config = std::fs::read_to_string(home.join("config.toml")).unwrap();
    assert!(config.contains("# Time a ping may go unanswered"));
    let key = std::fs::read_to_string(home.join("node_key")).unwrap();
    assert_eq!(key.trim().len(), 64);
    let again = bin()
        .args(["keygen", "--home"])
        .arg(&home)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn config_errors_name_the_file_and_the_field() {
    let home = keygen("badconfig");
    let cases = [
        (
            "[limits]\nping_interval = \"1s\"\npong_timeout = \"5s\"\n",
            "limits.pong_timeout",
        ),
        ("[limits]\nmax_inbound = -3\n", "max_inbound"),
        ("listen = \"nowhere\"\n", "listen"),
        ("[limits]\nlinger = \"500000000000y\"\n", "limits.linger"),
        ("arbiters = 1000000\n", "arbiters"),
        ("insecure_plaintext = 3\n", "insecure_plaintext"),
        (
            "[limits]\nhandshake_timeout = \"soon\"\n",
            "handshake_timeout",
        ),
        ("private_peer_ids = [\"nothex\"]\n", "nothex"),
        ("this is not toml", "config"),
    ];
    for (i, (text, field)) in cases.iter().enumerate() {
        let file = home.join(format!("bad{i}.toml"));
        let body = if text.starts_with("insecure_plaintext") {
            text.to_string()
        } else {
            format!("insecure_plaintext = true\n{text}")
        };
        std::fs::write(&file, body).unwrap();
        let out = bin()
            .args(["node", "--home"])
            .arg(&home)
            .arg("--config")
            .arg(&file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(
            err.contains(&file.display().to_string()),
            "names the file: {err}"
        );
        if *field != "config" {
            assert!(err.contains(field), "names {field}: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
    }
    let out = bin()
        .args(["node", "--home"])
        .arg(home.join("missing"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("keygen"));
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn status_reports_a_running_node() {
    let (mut node, addr, home) = start_node("status", None, false);
    let out = bin()
        .args(["status", &addr, "--timeout", "5"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = addr.split('@').next().unwrap();
    assert!(text.contains(id), "{text}");
    assert!(text.contains("network     switchyard-local"), "{text}");
    assert!(text.contains("ping        "), "{text}");
    // Wrong network: the node refuses and status says why, at once (not after the
    // linger time, which is longer than this timeout).
    let out = bin()
        .args(["status", &addr, "--network", "other", "--timeout", "2"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("other network"), "{err}");
    let _ = node.kill();
    let _ = node.wait();
    std::fs::remove_dir_all(&home).unwrap();
}

/// `status --json` against a running node prints its introspection, asked over
/// channel 0: the node, and its peers (another node dialing it, and the status
/// client itself).
#[test]
fn status_json_prints_the_node_introspection() {
    let (mut a, a_addr, a_home) = start_node("intro-a", None, true);
    let (mut b, b_addr, b_home) = start_node("intro-b", Some(&a_addr), false);
    let a_id = a_addr.split('@').next().unwrap().to_owned();
    let b_id = b_addr.split('@').next().unwrap().to_owned();
    let mut a_log = BufReader::new(a.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok);
    wait_for_log(&mut a_log, &["peer up:", &b_id]);
    std::thread::spawn(move || a_log.count());

    let out = bin()
        .args(["status", &a_addr, "--timeout", "5", "--json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let node = &json["introspection"];
    assert_eq!(node["node_id"], a_id.as_str(), "{text}");
    assert_eq!(
        json["version"]["node_id"],
        a_id.as_str(),
        "hex, like the rest"
    );
    assert_eq!(node["network"], "switchyard-local");
    assert!(node["user_agent"]
        .as_str()
        .unwrap()
        .starts_with("switchyard/"));
    assert!(node["uptime_ms"].is_u64());
    assert_eq!(node["peers_total"], 2, "{text}");
    assert_eq!(node["truncated"], false);
    let peers = node["peers"].as_array().unwrap();
    let from_b = peers
        .iter()
        .find(|p| p["node_id"] == b_id.as_str())
        .expect("B listed");
    assert_eq!(from_b["direction"], "Inbound");
    assert!(from_b["bytes_read"].as_u64().unwrap() > 0);
    // The text form has the tables.
    let out = bin()
        .args(["status", &a_addr, "--timeout", "5"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.contains("SERVICES (0)"), "{text}");
    assert!(text.contains("PEERS (2 of 2)"), "{text}");
    assert!(text.contains(&b_id), "{text}");

    for node in [&mut a, &mut b] {
        let _ = node.kill();
        let _ = node.wait();
    }
    std::fs::remove_dir_all(&a_home).unwrap();
    std::fs::remove_dir_all(&b_home).unwrap();
}

/// A node that refuses the status client (its handshake slots are full) is reported
/// with its reason at once, not after the linger time (5 s, longer than the timeout).
#[test]
fn status_reports_a_refusal_with_its_reason() {
    let (mut node, addr, home) =
        start_node_with("status-full", None, false, "[limits]\nmax_handshakes = 1\n");
    // One connection that never speaks holds the only handshake slot (it could not
    // take an inbound peer's slot: those are for completed handshakes).
    let _holder = std::net::TcpStream::connect(addr.split('@').nth(1).unwrap()).unwrap();
    let out = bin()
        .args(["status", &addr, "--timeout", "3"])
        .output()
        .unwrap();
    let _ = node.kill();
    let _ = node.wait();
    std::fs::remove_dir_all(&home).unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refused us") && err.contains("handshakes"),
        "{err}"
    );
}

#[test]
fn testnet_summary_and_dot_file() {
    let dot = temp_home("dot").with_extension("dot");
    let out = bin()
        .args([
            "testnet",
            "--nodes",
            "3",
            "--messages",
            "50",
            "--duration",
            "30",
            "--dot",
        ])
        .arg(&dot)
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.lines().any(|l| l
            == "testnet: 3 nodes, 3 connections, 300 messages delivered, 0 lost, 0 duplicated"),
        "{text}"
    );
    let graph = std::fs::read_to_string(&dot).unwrap();
    assert!(
        graph.starts_with("graph testnet {") && graph.contains("node0 -- node1"),
        "{graph}"
    );
    std::fs::remove_file(&dot).unwrap();
    let _ = Duration::ZERO;
}

#[test]
fn a_node_with_a_bad_initial_peers_file_names_the_file_and_line() {
    let home = keygen("badseeds");
    let seeds = home.join("seeds.txt");
    std::fs::write(&seeds, "# seeds\nnot-an-address\n").unwrap();
    let out = bin()
        .args(["node", "--listen", "127.0.0.1:0", "--home"])
        .arg(&home)
        .arg("--seeds")
        .arg(&seeds)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:2: ", seeds.display())) && err.contains("not-an-address"),
        "{err}"
    );
    std::fs::remove_dir_all(&home).unwrap();
}

#[test]
fn testnet_discovery_finds_peers_through_the_seed() {
    let out = bin()
        .args([
            "testnet",
            "--discovery",
            "--nodes",
            "5",
            "--target",
            "2",
            "--messages",
            "20",
            "--duration",
            "60",
        ])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.lines().any(|l| l.starts_with("seed: ")), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    let found = lines
        .iter()
        .position(|l| {
            l.starts_with("discovery: 5 nodes reached their outbound target in ")
                && l.ends_with(" s")
        })
        .unwrap_or_else(|| panic!("no discovery line: {text}"));
    let summary = lines
        .iter()
        .position(|l| l.starts_with("testnet: 5 nodes, ") && l.ends_with(" 0 lost, 0 duplicated"))
        .unwrap_or_else(|| panic!("no summary: {text}"));
    assert!(found < summary, "{text}");
}

/// Starts `switchyard node` on a fresh home listening on port 0; returns the child
/// (its stderr piped when `log`) and its `ID@HOST:PORT` (the first line it prints).
fn start_node(
    name: &str,
    peers: Option<&str>,
    log: bool,
) -> (std::process::Child, String, PathBuf) {
    start_node_with(name, peers, log, "")
}

/// [`start_node`] with `extra` appended to its config file.
fn start_node_with(
    name: &str,
    peers: Option<&str>,
    log: bool,
    extra: &str,
) -> (std::process::Child, String, PathBuf) {
    let home = keygen(name);
    let config = home.join("run.toml");
    std::fs::write(
        &config,
        format!("arbiters = 1\nlisten = \"127.0.0.1:0\"\n{extra}"),
    )
    .unwrap();
    let mut cmd = bin();
    cmd.args(["node", "--home"])
        .arg(&home)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(if log { Stdio::piped() } else { Stdio::null() });
    if let Some(peers) = peers {
        cmd.args(["--peers", peers]);
    }
    let mut node = cmd.spawn().unwrap();
    let mut line = String::new();
    let mut out = BufReader::new(node.stdout.take().unwrap());
    out.read_line(&mut line).unwrap();
    let addr = line.trim().rsplit(' ').next().unwrap().to_owned();
    assert!(addr.contains('@'), "{line}");
    // Keep draining stdout so the node never blocks on a full pipe.
    std::thread::spawn(move || out.lines().map_while(Result::ok).count());
    (node, addr, home)
}

/// Reads log lines until one contains every one of `needles`.
fn wait_for_log(lines: &mut impl Iterator<Item = String>, needles: &[&str]) -> String {
    for line in lines.by_ref() {
        if needles.iter().all(|n| line.contains(n)) {
            return line;
        }
    }
    panic!("log ended before a line with {needles:?}");
}

#[test]
fn node_shuts_down_gracefully_on_ctrl_c() {
    let (mut a, a_addr, a_home) = start_node("ctrlc-a", None, false);
    let (mut b, _, b_home) = start_node("ctrlc-b", Some(&a_addr), true);
    let a_id = a_addr.split('@').next().unwrap().to_owned();
    let mut b_log = BufReader::new(b.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok);
    wait_for_log(&mut b_log, &["peer up:", &a_id]);

    // Ctrl-C (SIGINT) to A: it closes its peers with reason `shutdown` and exits 0.
    assert!(Command::new("kill")
        .args(["-INT", &a.id().to_string()])
        .status()
        .unwrap()
        .success());
    let line = wait_for_log(&mut b_log, &["peer down:", &a_id]);
    assert!(
        line.contains("remote closed the connection: node shutting down"),
        "{line}"
    );
    let status = a.wait().unwrap();
    assert!(status.success(), "{status:?}");

    let _ = b.kill();
    let _ = b.wait();
    std::fs::remove_dir_all(&a_home).unwrap();
    std::fs::remove_dir_all(&b_home).unwrap();
}
