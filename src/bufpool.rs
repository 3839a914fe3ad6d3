//! Recycled buffers for the streaming pipelines.
//!
//! Create, upload and restore move gigabytes through buffers of a few fixed sizes (1 MiB
//! compression chunks, 256 KiB channel chunks, part-size upload parts). Allocating each
//! one afresh makes the process's RSS depend on the allocator: glibc raises its mmap
//! threshold after the first large free, then serves the big buffers from per-thread
//! arenas, where freed memory stays resident and fragments (measured: 187 MiB peak RSS for
//! a create whose live buffers never exceed 90 MiB), and every fresh buffer costs page
//! faults and zeroing. A pool hands the same buffers round instead, so the peak RSS is the
//! buffers in flight, which the pipelines bound.

use bytes::Bytes;
use std::sync::{Arc, Mutex};

/// Buffers of at least `size` bytes of capacity; at most `keep` idle ones are kept.
#[derive(Debug)]
pub struct BufPool {
    size: usize,
    keep: usize,
    idle: Mutex<Vec<Vec<u8>>>,
}

impl BufPool {
    pub fn new(size: usize, keep: usize) -> Arc<Self> {
        Arc::new(Self {
            size,
            keep,
            idle: Mutex::new(Vec::with_capacity(keep)),
        })
    }

    /// The buffer size.
    pub fn size(&self) -> usize {
        self.size
    }

    /// An empty buffer with at least [`Self::size`] bytes of capacity.
    pub fn take(&self) -> Vec<u8> {
        let recycled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        recycled.unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    /// Returns a buffer to the pool (dropped if the pool is full or it is too small).
    pub fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() < self.size {
            return;
        }
        buf.clear();
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < self.keep {
            idle.push(buf);
        }
    }

    /// `buf` as `Bytes`; the buffer comes back to the pool when the last clone is dropped.
    pub fn freeze(self: &Arc<Self>, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: Arc::clone(self),
        })
    }
}

/// A pooled buffer owned by a `Bytes`.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BufPool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frozen_buffers_come_back_when_the_last_clone_drops() {
        let pool = BufPool::new(1024, 2);
        let mut buf = pool.take();
        buf.extend_from_slice(b"hello");
        let ptr = buf.as_ptr();
        let bytes = pool.freeze(buf);
        let part = bytes.slice(1..3);
        drop(bytes);
        assert_eq!(&part[..], b"el");
        assert!(pool.idle.lock().unwrap().is_empty());
        drop(part);
        let again = pool.take();
        assert_eq!(again.as_ptr(), ptr, "the same buffer is handed out again");
        assert!(again.is_empty() && again.capacity() >= 1024);
    }

    #[test]
    fn the_pool_keeps_at_most_keep_buffers() {
        let pool = BufPool::new(16, 1);
        let (a, b) = (pool.take(), pool.take());
        pool.give(a);
        pool.give(b);
        pool.give(Vec::with_capacity(4));
        assert_eq!(pool.idle.lock().unwrap().len(), 1);
    }
}
