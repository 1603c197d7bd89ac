//! Socket options of peer connections: no Nagle delay, the optional fixed kernel
//! buffers, and `TCP_NOTSENT_LOWAT`, which keeps little unsent data in the kernel so
//! that the connection's scheduler, not the kernel, decides what goes next.

use std::net::TcpStream;

use switchyard_proto::Config;

/// Applies the limits' socket options to a peer's stream. A failure only costs
/// latency or throughput, so it is logged (at debug) and the connection goes on.
pub(crate) fn tune(stream: &TcpStream, limits: &Config, label: &dyn std::fmt::Display) {
    let sock = socket2::SockRef::from(stream);
    if let Err(e) = sock.set_tcp_nodelay(true) {
        log::debug!("{label}: cannot set TCP_NODELAY: {e}");
    }
    if let Some(size) = limits.socket_buffer {
        if let Err(e) = sock
            .set_send_buffer_size(size)
            .and_then(|()| sock.set_recv_buffer_size(size))
        {
            log::debug!("{label}: cannot size socket buffers: {e}");
        }
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if limits.notsent_lowat > 0 {
        let lowat = u32::try_from(limits.notsent_lowat).unwrap_or(u32::MAX);
        if let Err(e) = sock.set_tcp_notsent_lowat(lowat) {
            log::debug!("{label}: cannot set TCP_NOTSENT_LOWAT: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (TcpStream, TcpStream) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let a = TcpStream::connect(l.local_addr().expect("addr")).expect("connect");
        let (b, _) = l.accept().expect("accept");
        (a, b)
    }

    #[test]
    fn the_default_limits_set_nodelay_and_notsent_lowat() {
        let (a, _b) = pair();
        let limits = Config::default();
        tune(&a, &limits, &"test");
        let sock = socket2::SockRef::from(&a);
        assert!(sock.tcp_nodelay().expect("nodelay"));
        #[cfg(any(target_os = "linux", target_os = "android"))]
        assert_eq!(
            sock.tcp_notsent_lowat().expect("lowat"),
            limits.notsent_lowat as u32
        );
    }

    #[cfg(any(target_os = "linux", target_os = "android"))]
    #[test]
    fn zero_leaves_the_os_default_and_socket_buffer_sizes_both_buffers() {
        let (a, _b) = pair();
        let before = socket2::SockRef::from(&a)
            .tcp_notsent_lowat()
            .expect("lowat");
        let limits = Config {
            notsent_lowat: 0,
            socket_buffer: Some(64 << 10),
            ..Config::default()
        };
        tune(&a, &limits, &"test");
        let sock = socket2::SockRef::from(&a);
        assert_eq!(sock.tcp_notsent_lowat().expect("lowat"), before);
        // Linux doubles what it is given, for its bookkeeping.
        assert!(sock.send_buffer_size().expect("sndbuf") >= 64 << 10);
        assert!(sock.recv_buffer_size().expect("rcvbuf") >= 64 << 10);
    }
}
