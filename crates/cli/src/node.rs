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
    /// Extra private peer ids (never stored or shared by discovery).
    pub private_peer_ids: Vec<switchyard::NodeId>,
}

/// Discovery's config for a node of `config` living in `home`: the store in the home
/// (the addresses and the Switch's bans and scores), strict (public addresses only)
/// unless the node listens on a non-routable address (a local or private network),
/// persistent peers given by IP kept out of its dials, private peer ids never stored
/// or shared. `None` when discovery is off.
fn discovery_config(
    opts: &NodeOptions,
    config: &switchyard::NodeConfig,
) -> Option<DiscoveryConfig> {
    if !opts.discovery {
        return None;
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
    cfg.manager.max_outbound_per_group = config.outbound_per_group;
    cfg.persistent = config
        .persistent_peers
        .iter()
        .filter_map(|p| {
            let ip = p.host.parse().ok()?;
            Some(NetAddr::new(p.id?, std::net::SocketAddr::new(ip, p.port)))
        })
        .collect();
    cfg.private_ids = config.private_peer_ids.iter().copied().collect();
    Some(cfg)
}

/// Starts discovery as [`discovery_config`] says.
fn discovery(
    opts: &NodeOptions,
    config: &switchyard::NodeConfig,
) -> Result<Option<(switchyard::Service, DiscoveryHandle)>, String> {
    let Some(cfg) = discovery_config(opts, config) else {
        return Ok(None);
    };
    let (service, handle) = Discovery::new(cfg).start().map_err(|e| e.to_string())?;
    match handle.origin {
        Origin::Store(n) => log::info!("discovery: {n} addresses from the peer store"),
        Origin::Seeds(n) => log::info!("discovery: empty peer store, {n} initial peers"),
    }
    Ok(Some((service, handle)))
}

/// The command line's overrides and additions to the config file's `config`.
fn apply_flags(opts: &NodeOptions, config: &mut switchyard::NodeConfig) {
    if let Some(listen) = opts.listen {
        config.listen = Some(listen);
    }
    for peer in opts.peers.iter().cloned() {
        // The same peer in the config and on the command line is dialed once.
        if !config.persistent_peers.contains(&peer) {
            config.persistent_peers.push(peer);
        }
    }
    for id in &opts.private_peer_ids {
        if !config.private_peer_ids.contains(id) {
            config.private_peer_ids.push(*id);
        }
    }
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
    apply_flags(&opts, &mut config);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch home for one test.
    fn home(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("switchyard-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn private_peer_ids_from_the_config_file_reach_the_book() {
        let home = home("private");
        let private = "66687aadf862bd776c8fc18b8e9f8e2008971485";
        let public = "ab".repeat(20);
        let seeds = home.join("seeds.txt");
        std::fs::write(
            &seeds,
            format!("{private}@20.1.2.3:26656\n{public}@20.4.5.6:26656\n"),
        )
        .unwrap();
        let config = config_file::parse(&format!(
            "listen = \"20.0.0.1:26656\"\nprivate_peer_ids = [\"{private}\"]\n\
             persistent_peers = [\"{private}@20.1.2.3:26656\"]\n"
        ))
        .unwrap();
        let opts = NodeOptions {
            home: home.clone(),
            config: None,
            listen: None,
            peers: Vec::new(),
            discovery: true,
            seeds: Some(seeds),
            seed_mode: false,
            private_peer_ids: Vec::new(),
        };
        let cfg = discovery_config(&opts, &config).unwrap();
        let private_id: switchyard::NodeId = private.parse().unwrap();
        assert!(cfg.private_ids.contains(&private_id));
        assert_eq!(cfg.manager.max_outbound_per_group, 1, "the default");
        let raised = config_file::parse(
            "outbound_per_group = 10
",
        )
        .unwrap();
        let raised = discovery_config(&opts, &raised).unwrap();
        assert_eq!(raised.manager.max_outbound_per_group, 10);
        let ids = actix::System::new().block_on(async {
            let (_service, handle) = discovery(&opts, &config).unwrap().unwrap();
            let ids: Vec<String> = handle
                .entries()
                .await
                .iter()
                .map(|e| e.addr.id.to_string())
                .collect();
            handle.stop().await;
            ids
        });
        assert_eq!(
            ids,
            vec![public.clone()],
            "the private seed is not in the book"
        );
        // The command line adds to the file's ids, once each.
        let flagged = NodeOptions {
            private_peer_ids: vec![private_id, public.parse().unwrap()],
            ..opts.clone()
        };
        let mut merged = config.clone();
        apply_flags(&flagged, &mut merged);
        assert_eq!(merged.private_peer_ids.len(), 2);
        assert_eq!(
            discovery_config(&flagged, &merged)
                .unwrap()
                .private_ids
                .len(),
            2
        );
        let off = NodeOptions {
            discovery: false,
            ..opts
        };
        assert!(discovery_config(&off, &config).is_none());
        let _ = std::fs::remove_dir_all(&home);
    }
}
