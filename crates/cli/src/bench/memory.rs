//! Memory per idle connected peer: the RSS growth of a node when 1,000 light clients
//! (in a child process, so their own memory is not counted) have completed the real
//! handshake, divided by 1,000. The baseline is a raw tokio server holding as many
//! framed connections.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use switchyard::{GetInfo, PeerAddr};
use tokio::net::TcpListener;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

use super::sy::{self, Mode};
use super::{baseline, BenchOptions, Row};

/// Resident memory of this process, in bytes.
fn rss() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<u64>().ok())
        })
        .map_or(0, |pages| pages * 4096)
}

fn raise_fd_limit(want: u64) {
    if let Err(e) = rlimit::increase_nofile_limit(want) {
        log::warn!("cannot raise the open-files limit: {e}");
    }
}

/// Starts the client process; returns it once every client is connected (and, with
/// `handshake`, admitted).
fn spawn_clients(addr: &str, count: u64, handshake: bool) -> Result<std::process::Child, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut child = Command::new(exe)
        .args(["bench-clients", addr, "--count", &count.to_string()])
        .args(if handshake {
            &["--handshake"][..]
        } else {
            &[][..]
        })
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    if line.trim() != "ready" {
        let _ = child.kill();
        return Err(format!("client process failed: {line:?}"));
    }
    Ok(child)
}

fn finish(mut child: std::process::Child) {
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(b"done\n");
    }
    let _ = child.wait();
}

/// RSS growth per idle peer, baseline and Switchyard.
pub async fn per_peer(opts: &BenchOptions) -> Result<Vec<Row>, String> {
    let count = if opts.smoke { 50 } else { 1000 };
    raise_fd_limit(count * 4 + 256);

    // Baseline: a tokio server with one framed reader task per connection.
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    l.set_nonblocking(true).map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let (tx, rx) = std::sync::mpsc::channel();
    let server = baseline::on_thread(move || async move {
        let l = TcpListener::from_std(l).expect("listener");
        let _ = tx.send(rss());
        let mut tasks = Vec::new();
        for _ in 0..count {
            let Ok((s, _)) = l.accept().await else { break };
            tasks.push(tokio::spawn(async move {
                let mut frames = FramedRead::new(s, LengthDelimitedCodec::new());
                while let Some(Ok(_)) = frames.next().await {}
            }));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let _ = tx.send(rss());
        for t in tasks {
            let _ = t.await;
        }
    });
    let before = rx.recv().map_err(|e| e.to_string())?;
    let target = addr.to_string();
    let child = tokio::task::spawn_blocking(move || spawn_clients(&target, count, false))
        .await
        .map_err(|e| e.to_string())??;
    let base_after = tokio::task::spawn_blocking(move || rx.recv())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    finish(child);
    server.join().map_err(|_| "baseline server panicked")?;
    let base_per = base_after.saturating_sub(before) as f64 / count as f64;

    // Switchyard: one node, `count` light clients doing the real handshake.
    let mut config = sy::bench_config();
    // The light clients never answer a goodbye: the node's shutdown waits this long.
    config.limits.linger = Duration::from_millis(200);
    let node = sy::node(Mode::Batched, config, None, false).await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = rss();
    // The Switch runs on this thread: wait for the clients off it.
    let target = node.addr.host_port();
    let child = tokio::task::spawn_blocking(move || spawn_clients(&target, count, true))
        .await
        .map_err(|e| e.to_string())??;
    let deadline = Instant::now() + Duration::from_secs(60);
    while node
        .switch
        .send(GetInfo)
        .await
        .map_err(|e| e.to_string())?
        .peers
        < count as usize
    {
        if Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let peers = node
        .switch
        .send(GetInfo)
        .await
        .map_err(|e| e.to_string())?
        .peers;
    let after = rss();
    // The node goes first, closing each connection with a goodbye; clients that
    // vanished first would each be a connection reset in the node's log.
    node.stop().await;
    finish(child);
    let per = after.saturating_sub(before) as f64 / peers.max(1) as f64;
    Ok(vec![Row::new(
        "memory per idle peer",
        &format!("{peers} peers"),
        base_per / 1024.0,
        per / 1024.0,
        "KiB",
        "baseline: tokio server, one LengthDelimited reader task per connection",
    )])
}

/// The hidden `bench-clients` command: open `count` connections to `addr` (doing the
/// handshake as a light client when asked), print `ready`, hold them until stdin
/// closes or says anything.
pub fn clients(addr: &str, count: u64, handshake: bool) -> Result<(), String> {
    raise_fd_limit(count * 2 + 256);
    let target: PeerAddr = addr.parse().map_err(|e| format!("{e}"))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let mut sessions = Vec::new();
        let mut plain = Vec::new();
        for _ in 0..count {
            if handshake {
                sessions.push(
                    crate::status::connect_light(
                        &target,
                        "switchyard-local",
                        Duration::from_secs(10),
                        true,
                    )
                    .await?,
                );
            } else {
                let s = tokio::net::TcpStream::connect(target.host_port())
                    .await
                    .map_err(|e| e.to_string())?;
                plain.push(s);
            }
        }
        println!("ready");
        let _ = std::io::stdout().flush();
        let mut line = String::new();
        let _ = tokio::task::spawn_blocking(move || std::io::stdin().read_line(&mut line)).await;
        drop((sessions, plain));
        Ok(())
    })
}
