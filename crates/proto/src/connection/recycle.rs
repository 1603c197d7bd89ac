//! [`BufferPool`]: the buffers of large received messages, used again once their
//! services drop them.
//!
//! A message cut into several chunks is put together in a buffer of its own, which
//! goes to the service as the message's `Bytes`. The service drops it on its own
//! thread, usually long after. Without reuse, each such message costs a fresh
//! allocation of its whole size: the allocator hands freed large blocks back to the
//! kernel and the next message faults every page in again (on a bulk channel of 1 MiB
//! messages this was a fifth of the receiving thread's time). So the node keeps a
//! few of them: a message buffer frozen through the pool goes back into it when the
//! last reference to its bytes is dropped, wherever that happens, and the next large
//! message of any connection takes it.
//!
//! The pool is node-wide and bounded in bytes ([`Config::recycle_bytes`]); only
//! buffers of at least [`RECYCLE_MIN`] bytes go through it. A buffer is taken only
//! for a message that it fits without wasting more than a quarter of its size, so a
//! partial message never holds much more memory than it declared.
//!
//! [`Config::recycle_bytes`]: crate::Config::recycle_bytes

use std::sync::{Arc, Mutex, PoisonError};

use bytes::{Bytes, BytesMut};

/// Smallest buffer worth keeping: below it, allocation is cheap and messages usually
/// arrive whole in one packet anyway.
pub const RECYCLE_MIN: usize = 64 << 10;

/// Most buffers the pool holds, whatever their sizes.
const MAX_BUFFERS: usize = 64;

/// Freed message buffers kept for the next large messages (see the
/// [module docs](self)). Clones share one pool.
#[derive(Debug, Clone)]
pub struct BufferPool {
    inner: Arc<Mutex<Pool>>,
    /// Most bytes of capacity held (fixed: read without the lock).
    max_bytes: usize,
}

#[derive(Debug)]
struct Pool {
    held: usize,
    buffers: Vec<BytesMut>,
}

impl BufferPool {
    /// A pool holding at most `max_bytes` of buffers (0: none, every buffer is
    /// allocated afresh and freed when dropped).
    #[must_use]
    pub fn new(max_bytes: usize) -> Self {
        BufferPool {
            inner: Arc::new(Mutex::new(Pool {
                held: 0,
                buffers: Vec::new(),
            })),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pool> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An empty buffer with room for `size` bytes: a kept one that fits (at most a
    /// quarter larger, and at most `limit` bytes), or a new one of exactly `size`.
    #[must_use]
    pub fn take(&self, size: usize, limit: usize) -> BytesMut {
        if size >= RECYCLE_MIN {
            let most = size.saturating_add(size / 4).min(limit);
            let mut pool = self.lock();
            let fit = pool
                .buffers
                .iter()
                .position(|b| (size..=most).contains(&b.capacity()));
            if let Some(i) = fit {
                let buf = pool.buffers.swap_remove(i);
                pool.held -= buf.capacity();
                return buf;
            }
        }
        BytesMut::with_capacity(size)
    }

    /// Freezes `buf` into `Bytes`; a buffer of at least [`RECYCLE_MIN`] bytes comes
    /// back to the pool once the last reference to those bytes is dropped.
    #[must_use]
    pub fn freeze(&self, buf: BytesMut) -> Bytes {
        if buf.capacity() < RECYCLE_MIN || self.max_bytes == 0 {
            return buf.freeze();
        }
        Bytes::from_owner(Recycled {
            buf,
            pool: self.clone(),
        })
    }

    /// Keeps `buf` if there is room for it, else drops it.
    fn put(&self, mut buf: BytesMut) {
        let size = buf.capacity();
        let mut pool = self.lock();
        if pool.buffers.len() >= MAX_BUFFERS || pool.held.saturating_add(size) > self.max_bytes {
            return;
        }
        buf.clear();
        pool.held += size;
        pool.buffers.push(buf);
    }

    /// Bytes of buffers held now.
    #[must_use]
    pub fn held_bytes(&self) -> usize {
        self.lock().held
    }

    /// Buffers held now.
    #[must_use]
    pub fn held_buffers(&self) -> usize {
        self.lock().buffers.len()
    }
}

impl Default for BufferPool {
    /// A pool that keeps nothing.
    fn default() -> Self {
        Self::new(0)
    }
}

/// The owner of a frozen message buffer: gives the buffer back to its pool when the
/// last `Bytes` over it is dropped.
struct Recycled {
    buf: BytesMut,
    pool: BufferPool,
}

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        self.pool.put(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(pool: &BufferPool, size: usize) -> Bytes {
        let mut buf = pool.take(size, usize::MAX);
        buf.resize(size, 7);
        pool.freeze(buf)
    }

    #[test]
    fn a_dropped_message_buffer_is_taken_again() {
        let pool = BufferPool::new(8 << 20);
        let msg = filled(&pool, 1 << 20);
        let addr = msg.as_ptr();
        let slice = msg.slice(10..20);
        drop(msg);
        assert_eq!(pool.held_buffers(), 0, "a slice still holds the buffer");
        assert_eq!(&slice[..], &[7u8; 10]);
        drop(slice);
        assert_eq!(pool.held_bytes(), 1 << 20);
        let again = pool.take(1 << 20, usize::MAX);
        assert_eq!(again.as_ptr(), addr, "the same memory");
        assert!(again.is_empty());
        assert_eq!(pool.held_bytes(), 0);
    }

    #[test]
    fn only_a_buffer_that_fits_closely_is_taken() {
        let pool = BufferPool::new(8 << 20);
        drop(filled(&pool, 1 << 20));
        // Too large for a 600 KiB message (over a quarter wasted), too small for 2 MiB,
        // over the caller's limit.
        assert_eq!(pool.take(600 << 10, usize::MAX).capacity(), 600 << 10);
        assert_eq!(pool.take(2 << 20, usize::MAX).capacity(), 2 << 20);
        assert_eq!(pool.take(900 << 10, 1000 << 10).capacity(), 900 << 10);
        assert_eq!(pool.held_buffers(), 1);
        // Within a quarter and the limit: taken.
        assert!(pool.take(900 << 10, 1 << 20).capacity() >= 1 << 20);
        assert_eq!(pool.held_buffers(), 0);
    }

    #[test]
    fn the_pool_is_bounded_in_bytes_and_small_buffers_skip_it() {
        let pool = BufferPool::new(3 << 20);
        let msgs: Vec<Bytes> = (0..5).map(|_| filled(&pool, 1 << 20)).collect();
        drop(msgs);
        assert_eq!(
            pool.held_bytes(),
            3 << 20,
            "two of five freed beyond the bound"
        );
        let small = filled(&pool, RECYCLE_MIN - 1);
        drop(small);
        assert_eq!(pool.held_buffers(), 3);
        let none = BufferPool::default();
        drop(filled(&none, 1 << 20));
        assert_eq!(none.held_buffers(), 0, "a pool of 0 bytes keeps nothing");
    }

    #[test]
    fn buffers_come_back_from_other_threads() {
        let pool = BufferPool::new(8 << 20);
        let msg = filled(&pool, 256 << 10);
        std::thread::spawn(move || drop(msg))
            .join()
            .expect("thread");
        assert_eq!(pool.held_bytes(), 256 << 10);
    }
}
