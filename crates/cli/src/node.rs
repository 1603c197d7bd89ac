//! `switchyard keygen` and `switchyard node`: create a node's home, run a node.

use std::path::{Path, PathBuf};

use switchyard::{GetInfo, NodeKey, PeerAddr, Shutdown, Switch};
use switchyard_pex::discovery::{Discovery, DiscoveryConfig, DiscoveryHandle, Origin};
use switchyard_pex::NetAddr;

use crate::config_file;

/// File of the identity key inside a node's home.
pub const KEY_FILE: &str = "node_key";
/// File of the config inside a node's home.
pub const CONFIG_FILE: &str = "config.toml";

/// Creates `home` with a fresh identity and the commented default config.
pub fn keygen(home: &Path, force: bool) -> Result<String, String> {
    std::fs::create_dir_all(home).map_err(|e| format!("{}: {e}", home.display()))?;
    let key_path = home.join(KEY_FILE);
    if key_path.exists() && !force {
        return Err(format!(
            "{} already exists (use --force to replace the node's identity)",
            key_path.display()
        ));
    }
    let key = NodeKey::generate();
    key.save(&key_path).map_err(|e| e.to_string())?;
    let config_path = home.join(CONFIG_FILE);
    if !config_path.exists() {
        std::fs::write(&config_path, config_file::DEFAULT_CONFIG)
            .map_err(|e| format!("{}: {e}", config_path.display()))?;
    }
    Ok(format!(
        "node id {}\nkey    {}\nconfig {}",
        key.node_id(),
        key_path.display(),
        config_path.display()
    ))
}

/// Options of `switchyard node`.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// The node's home (key and default config).
    pub home: PathBuf,
    /// Config file instead of `HOME/config.toml`.
    pub config: Option<PathBuf>,
    /// Listen address override.
    pub listen: Option<std::net::SocketAddr>,
    /// Extra persistent peers.
    pub peers: Vec<PeerAddr>,
    /// Run peer discovery (store in the home, bans kept in it too).
    pub discovery: bool,
    /// The initial peers file, read when the peer store is empty.
    pub seeds: Option<PathBuf>,
    /// Discovery in seed mode.
    pub seed_mode: bool,
}

/// Discovery for a node of `config` living in `home`: the store in the home (the
/// addresses and the Switch's bans), strict
/// (public addresses only) unless the node listens on a non-routable address (a
/// local or private network), persistent peers given by IP kept out of its dials.
fn discovery(
    opts: &NodeOptions,
    config: &switchyard::NodeConfig,
) -> Result<Option<(switchyard::Service, DiscoveryHandle)>, String> {
    if !opts.discovery {
        return Ok(None);
    }
    let mut cfg = DiscoveryConfig::default();
    if opts.seed_mode {
        cfg = cfg.seed_mode();
    }
    cfg.dir = Some(opts.home.clone());
    cfg.seeds_file = opts.seeds.clone();
    cfg.strict = config
        .listen
        .is_none_or(|a| switchyard_pex::addr::is_routable(a.ip()));
    cfg.manager.target_outbound = config.limits.max_outbound;
    cfg.persistent = config
        .persistent_peers
        .iter()
        .filter_map(|p| {
            let ip = p.host.parse().ok()?;
            Some(NetAddr::new(p.id?, std::net::SocketAddr::new(ip, p.port)))
        })
        .collect();
    let (service, handle) = Discovery::new(cfg).start().map_err(|e| e.to_string())?;
    match handle.origin {
        Origin::Store(n) => log::info!("discovery: {n} addresses from the peer store"),
        Origin::Seeds(n) => log::info!("discovery: empty peer store, {n} initial peers"),
    }
    Ok(Some((service, handle)))
}

/// Runs a node until Ctrl-C, then shuts it down gracefully.
pub async fn run(opts: NodeOptions) -> Result<(), String> {
    let config_path = opts
        .config
        .clone()
        .unwrap_or_else(|| opts.home.join(CONFIG_FILE));
    let mut config = config_file::load(&config_path).map_err(|e| {
        format!(
            "{e} (create the node's home with `switchyard keygen --home {}`, or pass --config)",
            opts.home.display()
        )
    })?;
    let key_path = opts.home.join(KEY_FILE);
    let key = if key_path.exists() {
        NodeKey::load(&key_path).map_err(|e| {
            format!(
                "{e} (replace it with `switchyard keygen --force --home {}`)",
                opts.home.display()
            )
        })?
    } else {
        // First start: the node makes its identity (readable only by its owner).
        std::fs::create_dir_all(&opts.home).map_err(|e| format!("{}: {e}", opts.home.display()))?;
        let key = NodeKey::generate();
        key.save(&key_path).map_err(|e| e.to_string())?;
        log::info!(
            "created identity {} in {}",
            key.node_id(),
            key_path.display()
        );
        key
    };
    if let Some(listen) = opts.listen {
        config.listen = Some(listen);
    }
    for peer in opts.peers.iter().cloned() {
        // The same peer in the config and on the command line is dialed once.
        if !config.persistent_peers.contains(&peer) {
            config.persistent_peers.push(peer);
        }
    }
    let discovery = discovery(&opts, &config)?;
    let mut builder = Switch::builder(config).key(key);
    let (service, handle) = match discovery {
        Some((s, h)) => (Some(s), Some(h)),
        None => (None, None),
    };
    if let Some(s) = service {
        builder = builder.service(s);
    }
    if let Some(h) = &handle {
        // Bans kept in the peer store: they survive a restart.
        builder = builder.bans(h.bans());
    }
    let switch = builder.start().map_err(|e| e.to_string())?;
    if let Some(h) = &handle {
        h.start(switch.clone());
    }
    let info = switch.send(GetInfo).await.map_err(|e| e.to_string())?;
    match info.listen_addr {
        Some(addr) => println!(
            "node {} listening on {}",
            info.id,
            PeerAddr::new(Some(info.id), addr)
        ),
        None => println!("node {} (not listening)", info.id),
    }
    tokio::signal::ctrl_c().await.map_err(|e| e.to_string())?;
    println!("shutting down");
    switch.send(Shutdown).await.map_err(|e| e.to_string())?;
    if let Some(h) = handle {
        h.stop().await;
    }
    Ok(())
}
