//! The raw-TCP baselines: the fastest honest raw framed TCP we could make on this
//! machine (see [`Variant`]); each throughput row takes the best of them in the same
//! run, and the round-trip, broadcast and connect rows use tokio with
//! `LengthDelimitedCodec`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::io::IoSlice;

use bytes::{Buf, Bytes, BytesMut};
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

/// Read buffer of the baseline's throughput receivers.
const BULK_READ_BUFFER: usize = 256 << 10;

/// Bytes the baseline's senders gather before each flush (or vectored write).
const FLUSH_BYTES: usize = 256 << 10;

/// The raw framed-TCP senders and receivers the throughput rows compare against; each
/// row reports the fastest of them in the same run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// `LengthDelimitedCodec` on a tokio multi-thread runtime with 2 workers (sender
    /// and receiver tasks on the same runtime), ~256 KiB fed per flush, a 256 KiB read
    /// buffer.
    CodecMultiThread,
    /// The same codec and batching, each side on its own single-thread runtime.
    CodecThreads,
    /// Hand-written: length prefixes and payloads handed to `write_vectored` without
    /// copying payloads, ~256 KiB per write; the receiver parses frames out of a
    /// 256 KiB read buffer as zero-copy slices.
    Vectored,
}

impl Variant {
    /// Every variant.
    pub const ALL: [Variant; 3] = [
        Variant::CodecMultiThread,
        Variant::CodecThreads,
        Variant::Vectored,
    ];

    /// Short name for the notes of the table.
    pub fn name(self) -> &'static str {
        match self {
            Variant::CodecMultiThread => "tokio multi-thread (2 workers) + LengthDelimitedCodec",
            Variant::CodecThreads => "tokio, one thread per side + LengthDelimitedCodec",
            Variant::Vectored => "hand-written zero-copy vectored writes",
        }
    }
}

async fn codec_receiver(l: std::net::TcpListener, size: usize, count: u64) -> Instant {
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
}

async fn codec_sender(addr: SocketAddr, size: usize, count: u64) -> Instant {
    let payload = Bytes::from(vec![0x5a; size]);
    let s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut sink = FramedWrite::new(s, codec(size));
    // FramedWrite writes out whenever its buffer passes 8 KiB by default; let it
    // gather the whole batch so each flush is one large write, as intended.
    sink.set_backpressure_boundary(FLUSH_BYTES + size + 4);
    let per_flush = (FLUSH_BYTES / (size + 4)).max(1) as u64;
    let t0 = Instant::now();
    for i in 0..count {
        sink.feed(payload.clone()).await.expect("feed");
        if i % per_flush == per_flush - 1 {
            SinkExt::<Bytes>::flush(&mut sink).await.expect("flush");
        }
    }
    SinkExt::<Bytes>::flush(&mut sink).await.expect("flush");
    // Everything is in the kernel; closing now sends FIN after the data.
    t0
}

async fn vectored_receiver(l: std::net::TcpListener, count: u64) -> Instant {
    let l = TcpListener::from_std(l).expect("listener");
    let (mut s, _) = l.accept().await.expect("accept");
    let mut buf = BytesMut::with_capacity(BULK_READ_BUFFER);
    let mut n = 0u64;
    while n < count {
        // Every complete frame in the buffer, as a zero-copy slice.
        loop {
            if buf.len() < 4 {
                break;
            }
            let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            if buf.len() < 4 + len {
                buf.reserve(4 + len - buf.len());
                break;
            }
            buf.advance(4);
            let frame = buf.split_to(len).freeze();
            std::hint::black_box(frame);
            n += 1;
        }
        if n >= count {
            break;
        }
        if buf.capacity() - buf.len() < BULK_READ_BUFFER / 4 {
            buf.reserve(BULK_READ_BUFFER);
        }
        match s.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Instant::now()
}

async fn vectored_sender(addr: SocketAddr, size: usize, count: u64) -> Instant {
    let payload = Bytes::from(vec![0x5a; size]);
    let header = (size as u32).to_be_bytes();
    let mut s = TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let per_write = (FLUSH_BYTES / (size + 4)).clamp(1, 512);
    let t0 = Instant::now();
    let mut left = count as usize;
    // Small frames are copied together (a copy is cheaper than an iovec each); large
    // ones go out as [header, payload] slices of the caller's buffer.
    let mut small = BytesMut::new();
    while left > 0 {
        let n = left.min(per_write);
        if size < 4096 {
            small.clear();
            for _ in 0..n {
                small.extend_from_slice(&header);
                small.extend_from_slice(&payload);
            }
            s.write_all(&small).await.expect("write");
        } else {
            let mut parts: Vec<&[u8]> = Vec::with_capacity(2 * n);
            for _ in 0..n {
                parts.push(&header);
                parts.push(&payload);
            }
            let mut skip = 0usize;
            let total = n * (size + 4);
            while skip < total {
                let mut slices = Vec::with_capacity(parts.len());
                let mut offset = skip;
                for p in &parts {
                    if offset >= p.len() {
                        offset -= p.len();
                        continue;
                    }
                    slices.push(IoSlice::new(&p[offset..]));
                    offset = 0;
                }
                skip += s.write_vectored(&slices).await.expect("write");
            }
        }
        left -= n;
    }
    t0
}

/// Seconds one variant takes to move `count` frames of `size` bytes one way.
pub async fn throughput_with(variant: Variant, size: usize, count: u64) -> f64 {
    let (l, addr) = listener().await;
    let (start, end) = match variant {
        Variant::CodecMultiThread => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("tokio runtime");
            let got = std::thread::spawn(move || {
                rt.block_on(async move {
                    let receiver = tokio::spawn(codec_receiver(l, size, count));
                    let sender = tokio::spawn(codec_sender(addr, size, count));
                    let start = sender.await.expect("sender");
                    (start, receiver.await.expect("receiver"))
                })
            });
            got.join().expect("runtime thread")
        }
        Variant::CodecThreads => {
            let receiver = on_thread(move || codec_receiver(l, size, count));
            let start = on_thread(move || codec_sender(addr, size, count))
                .join()
                .expect("sender");
            (start, receiver.join().expect("receiver"))
        }
        Variant::Vectored => {
            let receiver = on_thread(move || vectored_receiver(l, count));
            let start = on_thread(move || vectored_sender(addr, size, count))
                .join()
                .expect("sender");
            (start, receiver.join().expect("receiver"))
        }
    };
    end.duration_since(start).as_secs_f64()
}

/// The fastest variant for `count` frames of `size` bytes, and its seconds.
pub async fn throughput(size: usize, count: u64) -> (Variant, f64) {
    let mut best = (Variant::CodecMultiThread, f64::INFINITY);
    for v in Variant::ALL {
        let secs = throughput_with(v, size, count).await;
        log::info!("baseline {}: {size} B x {count}: {secs:.3} s", v.name());
        if secs < best.1 {
            best = (v, secs);
        }
    }
    best
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
