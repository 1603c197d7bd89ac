//! `switchyard`: the command line of a Switchyard node operator.
//!
//! * `switchyard keygen --home DIR`: a node identity and a commented default config;
//! * `switchyard node --home DIR [--config FILE] [--listen ADDR] [--peers ID@ADDR,...]`:
//!   run a node until Ctrl-C;
//! * `switchyard testnet --nodes N`: a local testnet in one process (`make run`);
//! * `switchyard status ID@ADDR [--json]`: connect as a peer and print the node's
//!   introspection (services, peers, per-channel counters);
//! * `switchyard bench [--quick] [--json FILE]`: Switchyard beside a raw-TCP baseline.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use switchyard::{NodeId, PeerAddr};

mod bench;
mod config_file;
mod node;
mod status;
mod testnet;

#[derive(Parser, Debug)]
#[command(
    name = "switchyard",
    version,
    about = "Switchyard peer-to-peer node and tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create a node home: identity key and a commented default config.
    Keygen {
        /// Directory to create (or fill).
        #[arg(long)]
        home: PathBuf,
        /// Replace an existing identity.
        #[arg(long)]
        force: bool,
    },
    /// Run a node until Ctrl-C (then shut down gracefully). Logs go to stderr (RUST_LOG).
    Node {
        /// The node's home (from `keygen`).
        #[arg(long)]
        home: PathBuf,
        /// Config file (default: HOME/config.toml).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Listen address, overriding the config.
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Persistent peers to add, comma separated ID@HOST:PORT.
        #[arg(long, value_delimiter = ',')]
        peers: Vec<PeerAddr>,
        /// Run peer discovery (PEX and the peer manager) with this initial peers
        /// file (ID@HOST:PORT a line), read when the peer store HOME/peers.redb is
        /// empty.
        #[arg(long)]
        seeds: Option<PathBuf>,
        /// Run peer discovery from the peer store alone (no initial peers file).
        /// With discovery on, the node's bans are kept in the peer store too.
        #[arg(long)]
        discovery: bool,
        /// Run peer discovery in seed mode: answer each inbound peer once, then let it
        /// go; crawl the network to keep the book fresh.
        #[arg(long)]
        seed_mode: bool,
        /// Node ids (hex) whose addresses discovery never stores or shares, comma
        /// separated; added to the config's `private_peer_ids`.
        #[arg(long, value_delimiter = ',')]
        private_peer_ids: Vec<NodeId>,
    },
    /// Run a local testnet in one process and print a summary.
    Testnet {
        /// Number of nodes.
        #[arg(long, default_value_t = 5)]
        nodes: usize,
        /// Messages each node floods to its peers.
        #[arg(long, default_value_t = 250)]
        messages: u32,
        /// Payload bytes of each message.
        #[arg(long, default_value_t = 256)]
        size: usize,
        /// The longest the run may take, in seconds.
        #[arg(long, default_value_t = 60)]
        duration: u64,
        /// Write the topology as Graphviz DOT to this file.
        #[arg(long)]
        dot: Option<PathBuf>,
        /// Discovery instead of a full mesh: one seed, and nodes that know only the
        /// seed and find each other through PEX before they exchange their messages.
        #[arg(long)]
        discovery: bool,
        /// Discovery: outbound peers each node keeps.
        #[arg(long, default_value_t = 3)]
        target: usize,
        /// Discovery: the peer manager's tick in milliseconds (requests, backoff and
        /// flushes scale from it).
        #[arg(long, default_value_t = 50)]
        tick_ms: u64,
    },
    /// Connect to a node as a peer and print its introspection: the node, its services
    /// and its peers with per-channel counters (asked over channel 0).
    Status {
        /// The node, ID@HOST:PORT (or HOST:PORT).
        addr: PeerAddr,
        /// Network name to present.
        #[arg(long, default_value = "switchyard-local")]
        network: String,
        /// Seconds to wait for the node (1 to 3600).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout: u64,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        /// Talk to a node that runs with `insecure_plaintext` (no encryption).
        #[arg(long)]
        insecure_plaintext: bool,
    },
    /// Measure throughput, latency, broadcast, memory and connection setup against a
    /// raw-TCP baseline in the same run, and print the ratios.
    Bench {
        /// All scenarios in under a minute (smaller counts).
        #[arg(long)]
        quick: bool,
        /// Tiny counts, for the test suite.
        #[arg(long, hide = true)]
        smoke: bool,
        /// Write every figure, with the machine's facts, to this JSON file.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Run only the scenarios whose name contains this text (e.g. "64 B",
        /// "latency", "memory").
        #[arg(long)]
        only: Option<String>,
    },
    /// Light clients for the memory scenario of `bench` (internal).
    #[command(hide = true)]
    BenchClients {
        /// Where to connect.
        addr: String,
        /// How many connections.
        #[arg(long)]
        count: u64,
        /// Complete the handshake on each.
        #[arg(long)]
        handshake: bool,
    },
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("switchyard: {e}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A running node reports its connections; the tools stay quiet unless asked.
    let default_filter = match cli.command {
        Command::Node { .. } => "info",
        _ => "warn",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter))
        .init();
    match cli.command {
        Command::Keygen { home, force } => match node::keygen(&home, force) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        },
        Command::Node {
            home,
            config,
            listen,
            peers,
            seeds,
            discovery,
            seed_mode,
            private_peer_ids,
        } => {
            let opts = node::NodeOptions {
                home,
                config,
                listen,
                peers,
                discovery: discovery || seed_mode || seeds.is_some(),
                seeds,
                seed_mode,
                private_peer_ids,
            };
            match actix::System::new().block_on(node::run(opts)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::Testnet {
            nodes,
            messages,
            size,
            duration,
            dot,
            discovery,
            target,
            tick_ms,
        } => {
            let opts = testnet::TestnetOptions {
                nodes,
                messages,
                size,
                duration: Duration::from_secs(duration),
                dot,
                discovery: discovery.then(|| testnet::DiscoveryOptions {
                    target,
                    tick: Duration::from_millis(tick_ms.max(1)),
                }),
            };
            match actix::System::new().block_on(testnet::run(opts)) {
                Ok(summary) => {
                    println!("{summary}");
                    if summary.lost == 0 && summary.duplicated == 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => fail(e),
            }
        }
        Command::Bench {
            quick,
            smoke,
            json,
            only,
        } => {
            let opts = bench::BenchOptions {
                quick,
                smoke,
                json,
                only,
            };
            match actix::System::new().block_on(bench::run(opts)) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail(e),
            }
        }
        Command::BenchClients {
            addr,
            count,
            handshake,
        } => match bench::clients(&addr, count, handshake) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(e),
        },
        Command::Status {
            addr,
            network,
            timeout,
            json,
            insecure_plaintext,
        } => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return fail(e),
            };
            match rt.block_on(status::query(
                &addr,
                &network,
                Duration::from_secs(timeout),
                insecure_plaintext,
            )) {
                Ok(s) if json => match status::to_json(&s) {
                    Ok(text) => {
                        println!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => fail(e),
                },
                Ok(s) => {
                    println!("{}", status::render(&addr, &s));
                    ExitCode::SUCCESS
                }
                Err(e) => fail(e),
            }
        }
    }
}
