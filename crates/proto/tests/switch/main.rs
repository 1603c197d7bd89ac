//! `SwitchCore` behaviour without sockets: each admission rule with its reason, the
//! duplicate tie-break, persistent redials, bans, the refusal budget and shutdown, and
//! a property test over random sequences of all of them.

mod props;
mod rules;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use switchyard_proto::switch::{Action, SwitchConfig, SwitchCore};
use switchyard_proto::{Config, NodeId};

/// A fixed start instant (the only clock read; everything after is virtual).
pub fn t0() -> Instant {
    #[allow(clippy::disallowed_methods)]
    Instant::now()
}

/// The node id made of byte `b`.
pub fn id(b: u8) -> NodeId {
    NodeId([b; 20])
}

/// This node's id in the tests: between the others, so tie-breaks go both ways.
pub const LOCAL: u8 = 50;

/// The IPv4 address `192.0.<net>.<host>`.
pub fn ip(net: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, net, host))
}

/// A core for `LOCAL` with `limits`.
pub fn core(limits: Config) -> SwitchCore {
    SwitchCore::new(SwitchConfig::new(id(LOCAL), limits))
}

/// Every queued action.
pub fn drain(core: &mut SwitchCore) -> Vec<Action> {
    std::iter::from_fn(|| core.poll_action()).collect()
}
