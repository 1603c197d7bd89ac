//! `PeerCore` behaviour, tested in the `Pair` (two cores, an in-memory link, virtual
//! time) and with `Solo` (one core, the test playing its remote byte by byte). No
//! sockets, no sleeps, no actix: each test runs in milliseconds.

mod batch;
mod close;
mod delivery;
mod direct;
mod drive;
mod flow;
mod handshake;
mod introspect;
mod keepalive;
mod lifecycle;
mod malformed;
mod pair;
mod props;
mod reader;
mod requests;
mod services;
mod writer;
