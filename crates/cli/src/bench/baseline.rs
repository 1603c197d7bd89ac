//! The raw-TCP baseline: tokio with `LengthDelimitedCodec`, the best a hand-written
//! sender could do (many frames written per flush), each side on its own thread.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

/// Runs `f` on a new thread with its own single-threaded tokio runtime.
pub(crate) fn on_thread<T, F>(f: impl FnOnce() -> F + Send + 'static) -> std::thread::JoinHandle<T>
where
    F: std::future::Future<Output = T>,
    T: Send + 'static,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(f())
    })
}

fn codec(max: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max + 16)
        .new_codec()
}

async fn listener() -> (std::net::TcpListener, SocketAddr) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.set_nonblocking(true).expect("nonblocking");
    let addr = l.local_addr().expect("addr");
    (l, addr)
}

/// Read buffer of the baseline's throughput receiver.
const BULK_READ_BUFFER: usize = 256 << 10;

/// Seconds to move `count` frames of `size` bytes one way.
pub async fn throughput(size: usize, count: u64) -> f64 {
    let (l, addr) = listener().await;
    let receiver = on_thread(move || async move {
        let l = TcpListener::from_std(l).expect("listener");
        let (s, _) = l.accept().await.expect("accept");
        // A read buffer sized for bulk, as a hand-tuned receiver would have: with
        // FramedRead's default 8 KiB start, each read is at most one frame.
        let mut frames = FramedRead::with_capacity(s, codec(size), BULK_READ_BUFFER);
        let mut n = 0u64;
        while n < count {
            match frames.next().await {
                Some(Ok(_)) => n += 1,
                _ => break,
            }
        }
        Instant::now()
    });
    let payload = Bytes::from(vec![0x5a; size]);
    let start = on_thread(move || async move {
        let s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let mut sink = FramedWrite::new(s, codec(size));
        let t0 = Instant::now();
        for i in 0..count {
            sink.feed(payload.clone()).await.expect("feed");
            if i % 64 == 63 {
                SinkExt::<Bytes>::flush(&mut sink).await.expect("flush");
            }
        }
        SinkExt::<Bytes>::flush(&mut sink).await.expect("flush");
        // Keep the connection open until the receiver is done.
        t0
    })
    .join()
    .expect("sender");
    let end = receiver.join().expect("receiver");
    end.duration_since(start).as_secs_f64()
}

/// Round trips of 64-byte frames, one outstanding at a time.
pub async fn rtt(count: u64) -> Vec<Duration> {
    let (l, addr) = listener().await;
    let _echo = on_thread(move || async move {
        let l = TcpListener::from_std(l).expect("listener");
        let (s, _) = l.accept().await.expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let (rd, wr) = s.into_split();
        let mut rd = FramedRead::new(rd, codec(64));
        let mut wr = FramedWrite::new(wr, codec(64));
        while let Some(Ok(frame)) = rd.next().await {
            if wr.send(frame.freeze()).await.is_err() {
                break;
            }
        }
    });
    on_thread(move || async move {
        let s = TcpStream::connect(addr).await.expect("connect");
        s.set_nodelay(true).expect("nodelay");
        let (rd, wr) = s.into_split();
        let mut rd = FramedRead::new(rd, codec(64));
        let mut wr = FramedWrite::new(wr, codec(64));
        let payload = Bytes::from(vec![1u8; 64]);
        let mut out = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let t0 = Instant::now();
            wr.send(payload.clone()).await.expect("send");
            let _ = rd.next().await;
            out.push(t0.elapsed());
        }
        out
    })
    .join()
    .expect("client")
}

/// Seconds to send `count` frames of `size` bytes to each of `peers` connections
/// (frames counted at the receivers).
pub async fn broadcast(peers: usize, size: usize, count: u64) -> f64 {
    let (l, addr) = listener().await;
    let receiver = on_thread(move || async move {
        let l = TcpListener::from_std(l).expect("listener");
        let mut tasks = Vec::new();
        for _ in 0..peers {
            let (s, _) = l.accept().await.expect("accept");
            tasks.push(tokio::spawn(async move {
                let mut frames = FramedRead::new(s, codec(size));
                let mut n = 0;
                while n < count {
                    match frames.next().await {
                        Some(Ok(_)) => n += 1,
                        _ => break,
                    }
                }
            }));
        }
        for t in tasks {
            let _ = t.await;
        }
        Instant::now()
    });
    let payload = Bytes::from(vec![0x5a; size]);
    let start = on_thread(move || async move {
        let mut sinks = Vec::new();
        for _ in 0..peers {
            let s = TcpStream::connect(addr).await.expect("connect");
            s.set_nodelay(true).expect("nodelay");
            sinks.push(FramedWrite::new(s, codec(size)));
        }
        let t0 = Instant::now();
        for i in 0..count {
            for sink in &mut sinks {
                sink.feed(payload.clone()).await.expect("feed");
                if i % 64 == 63 {
                    SinkExt::<Bytes>::flush(sink).await.expect("flush");
                }
            }
        }
        for sink in &mut sinks {
            SinkExt::<Bytes>::flush(sink).await.expect("flush");
        }
        t0
    })
    .join()
    .expect("sender");
    receiver
        .join()
        .expect("receiver")
        .duration_since(start)
        .as_secs_f64()
}

/// Times of plain TCP connects to a listener (accepted on another thread).
pub async fn connect(count: u64) -> Vec<Duration> {
    let (l, addr) = listener().await;
    let _acceptor = on_thread(move || async move {
        let l = TcpListener::from_std(l).expect("listener");
        let mut held = Vec::new();
        for _ in 0..count {
            if let Ok((s, _)) = l.accept().await {
                held.push(s);
            }
        }
        // Wait for the clients to close.
        for mut s in held {
            let mut b = [0u8; 1];
            let _ = s.read(&mut b).await;
        }
    });
    on_thread(move || async move {
        let mut out = Vec::with_capacity(count as usize);
        let mut streams = Vec::new();
        for _ in 0..count {
            let t0 = Instant::now();
            let s = TcpStream::connect(addr).await.expect("connect");
            out.push(t0.elapsed());
            streams.push(s);
        }
        for mut s in streams {
            let _ = s.shutdown().await;
        }
        out
    })
    .join()
    .expect("client")
}
