//! Peer sockets: their options (no Nagle delay, the optional fixed kernel buffers,
//! and `TCP_NOTSENT_LOWAT`, which keeps little unsent data in the kernel so that the
//! connection's scheduler, not the kernel, decides what goes next), and the one
//! non-blocking vectored write that the driver and inline senders share.

use std::io::IoSlice;
use std::net::TcpStream;

use switchyard_proto::{Config, Transmit};

/// Most slices handed to one vectored write.
const MAX_IOVECS: usize = 64;

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

/// Writes as much of `t` as the socket takes now, without waiting: the bytes written.
pub(crate) fn write_now(io: &tokio::net::TcpStream, t: &mut Transmit) -> std::io::Result<usize> {
    let mut total = 0;
    while !t.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let count = t.io_slices(&mut slices);
        match io.try_write_vectored(&slices[..count]) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                t.advance(n);
                total += n;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    Ok(total)
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
