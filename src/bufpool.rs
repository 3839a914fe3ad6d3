//! Recycled buffers for the streaming pipelines, and the one memory budget they draw from.
//!
//! [`Budget`] is shared by every path that holds backup bytes in part-sized or range-sized
//! buffers: upload and create parts, download and restore read-ahead. Each such buffer is
//! reserved before it is filled and given back when the last `Bytes` of it drops, so many
//! clients at once share the budget instead of multiplying memory: when it is taken, a
//! request waits for its share (first come, first served) and never fails for it.
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
            idle: Mutex::new(Vec::with_capacity(keep.min(16))),
        })
    }

    /// The process-wide pool of `size`-byte buffers for reserved buffers (see [`Budget`]):
    /// one pool per size for every operation, so that the buffers that exist are at most
    /// the most that were reserved at once. (A pool per operation would keep its idle
    /// buffers while their share of the budget serves another operation.)
    pub fn shared(size: usize) -> Arc<Self> {
        static POOLS: Mutex<Vec<Arc<BufPool>>> = Mutex::new(Vec::new());
        let mut pools = POOLS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pools.iter().find(|p| p.size == size) {
            return p.clone();
        }
        let pool = Self::new(size, usize::MAX);
        pools.push(pool.clone());
        pool
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
            _reserved: None,
        })
    }

    /// [`Self::freeze`], and `reserved` is given back to its budget with the buffer.
    pub fn freeze_reserved(self: &Arc<Self>, buf: Vec<u8>, reserved: Reserved) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: Arc::clone(self),
            _reserved: Some(reserved),
        })
    }
}

/// A pooled buffer owned by a `Bytes`.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BufPool>,
    _reserved: Option<Reserved>,
}

/// The memory budget for backup bytes (see the module docs), counted in 64 KiB units.
#[derive(Debug)]
pub struct Budget {
    units: Arc<tokio::sync::Semaphore>,
    total: u32,
}

const UNIT: u64 = 64 << 10;

impl Budget {
    /// A budget of `bytes` (at least one unit).
    pub fn new(bytes: u64) -> Arc<Self> {
        let total = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .max(1);
        Arc::new(Self {
            units: Arc::new(tokio::sync::Semaphore::new(total as usize)),
            total,
        })
    }

    /// Waits until `bytes` of the budget are free and reserves them. A request larger than
    /// the whole budget reserves all of it (it then runs alone rather than never).
    pub async fn reserve(&self, bytes: u64) -> Reserved {
        let units = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total);
        let permit = self
            .units
            .clone()
            .acquire_many_owned(units)
            .await
            .expect("the budget's semaphore is never closed");
        Reserved(permit)
    }

    /// The budget's size in bytes.
    pub fn total_bytes(&self) -> u64 {
        u64::from(self.total) * UNIT
    }

    /// Bytes reserved now.
    pub fn in_use_bytes(&self) -> u64 {
        (u64::from(self.total) - self.units.available_permits() as u64) * UNIT
    }
}

/// A share of a [`Budget`], given back when dropped.
#[derive(Debug)]
pub struct Reserved(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl Reserved {
    /// `buf` as `Bytes` that gives this share back when the last clone drops.
    pub fn attach(self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Held {
            buf,
            _reserved: self,
        })
    }
}

/// A buffer and its share of the budget, owned by a `Bytes`.
struct Held {
    buf: Vec<u8>,
    _reserved: Reserved,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
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

    #[tokio::test]
    async fn the_budget_is_shared_and_comes_back_with_the_buffers() {
        let budget = Budget::new(1 << 20);
        let pool = BufPool::new(512 << 10, 2);
        let a = pool.freeze_reserved(pool.take(), budget.reserve(512 << 10).await);
        let b = budget.reserve(512 << 10).await.attach(vec![0; 10]);
        assert_eq!(budget.in_use_bytes(), 1 << 20);
        // The budget is taken: the next reservation waits until a buffer is dropped.
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(256 << 10).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        drop(a);
        let c = waiting.await.unwrap();
        assert_eq!(budget.in_use_bytes(), (512 + 256) << 10);
        drop((b, c));
        assert_eq!(budget.in_use_bytes(), 0);
        // Larger than the whole budget: all of it, not never.
        let all = budget.reserve(10 << 20).await;
        assert_eq!(budget.in_use_bytes(), budget.total_bytes());
        drop(all);
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
