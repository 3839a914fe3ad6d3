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
//! arenas, where freed memory stays resident and fragments (docs/design.md,
//! "Performance"), and every fresh buffer costs page faults and zeroing. A pool hands the
//! same buffers round instead, so the peak RSS is the buffers in flight, which the
//! pipelines bound.
//!
//! A reserved buffer that comes back to its pool keeps its share of the budget while it is
//! idle, so that the budget bounds every buffer of backup bytes, in use or idle, whatever
//! their sizes (the 4 MiB read-ahead buffers and the part-size buffers are different
//! pools). [`BufPool::take_reserved`] reuses an idle buffer and its share at once; when a
//! reservation finds the budget taken, idle buffers of any pool are freed for it first,
//! and a buffer that comes back while someone waits gives its share up at once.

use bytes::Bytes;
use std::sync::{Arc, Mutex};

/// Buffers of at least `size` bytes of capacity; at most `keep` idle ones are kept.
#[derive(Debug)]
pub struct BufPool {
    size: usize,
    keep: usize,
    idle: Mutex<Vec<Idle>>,
}

/// An idle buffer, with the share of a budget it still holds (reserved buffers only).
#[derive(Debug)]
struct Idle {
    buf: Vec<u8>,
    reserved: Option<Reserved>,
}

/// The pools of [`BufPool::shared`], where a reservation looks for idle buffers to free.
static SHARED: Mutex<Vec<Arc<BufPool>>> = Mutex::new(Vec::new());

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
        let mut pools = SHARED.lock().unwrap_or_else(|e| e.into_inner());
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// An empty buffer with at least [`Self::size`] bytes of capacity. (An idle buffer's
    /// share of a budget goes back to that budget.)
    pub fn take(&self) -> Vec<u8> {
        let recycled = self.lock().pop().map(|idle| {
            if let Some(r) = &idle.reserved {
                r.leave_idle();
            }
            idle.buf
        });
        recycled.unwrap_or_else(|| Vec::with_capacity(self.size))
    }

    /// A buffer and a share of `bytes` of `budget` for it: an idle buffer that still holds
    /// a share of this budget is reused with it, else the share is reserved (waiting for
    /// it, see [`Budget::reserve`]) and a buffer taken.
    pub async fn take_reserved(&self, budget: &Budget, bytes: u64) -> (Vec<u8>, Reserved) {
        if let Some((buf, r)) = self.pop_idle(budget, Some(budget.units_for(bytes))) {
            return (buf, r);
        }
        let reserved = budget.reserve(bytes).await;
        (self.take(), reserved)
    }

    /// Returns a buffer to the pool (dropped if the pool is full or it is too small).
    pub fn give(&self, buf: Vec<u8>) {
        self.give_back(buf, None);
    }

    fn give_back(&self, mut buf: Vec<u8>, reserved: Option<Reserved>) {
        if buf.capacity() < self.size {
            return;
        }
        // Someone waits for a share: this one is freed, buffer and share, at once.
        if reserved.as_ref().is_some_and(Reserved::budget_has_waiters) {
            return;
        }
        buf.clear();
        let mut idle = self.lock();
        if idle.len() < self.keep {
            if let Some(r) = &reserved {
                r.enter_idle();
            }
            idle.push(Idle { buf, reserved });
        }
    }

    /// Frees one idle buffer that holds a share of `budget`; false when there is none.
    fn free_one_of(&self, budget: &Budget) -> bool {
        self.pop_idle(budget, None).is_some()
    }

    /// Takes an idle buffer that holds a share of `budget` (of exactly `units`, when
    /// given) out of the pool, with its share back in use.
    fn pop_idle(&self, budget: &Budget, units: Option<u32>) -> Option<(Vec<u8>, Reserved)> {
        let mut idle = self.lock();
        let at = idle.iter().position(|i| {
            i.reserved
                .as_ref()
                .is_some_and(|r| r.of(budget) && units.is_none_or(|u| r.units == u))
        })?;
        let Idle { buf, reserved } = idle.swap_remove(at);
        drop(idle);
        let r = reserved?;
        r.leave_idle();
        Some((buf, r))
    }

    /// `buf` as `Bytes`; the buffer comes back to the pool when the last clone is dropped.
    pub fn freeze(self: &Arc<Self>, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: Arc::clone(self),
            reserved: None,
        })
    }

    /// [`Self::freeze`], and `reserved` comes back with the buffer (see the module docs).
    pub fn freeze_reserved(self: &Arc<Self>, buf: Vec<u8>, reserved: Reserved) -> Bytes {
        Bytes::from_owner(Pooled {
            buf,
            pool: Arc::clone(self),
            reserved: Some(reserved),
        })
    }
}

/// A pooled buffer owned by a `Bytes`.
struct Pooled {
    buf: Vec<u8>,
    pool: Arc<BufPool>,
    reserved: Option<Reserved>,
}

/// The memory budget: a semaphore of 64 KiB units.
#[derive(Debug)]
pub struct Budget {
    units: Arc<tokio::sync::Semaphore>,
    total: u32,
    /// Units held by idle pooled buffers, and reservations waiting for units.
    shared: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    idle_units: std::sync::atomic::AtomicU64,
    waiting: std::sync::atomic::AtomicUsize,
}

const UNIT: u64 = 64 << 10;

impl Budget {
    pub fn new(bytes: u64) -> Arc<Self> {
        let total = u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .max(1);
        Arc::new(Self {
            units: Arc::new(tokio::sync::Semaphore::new(total as usize)),
            total,
            shared: Arc::default(),
        })
    }

    fn units_for(&self, bytes: u64) -> u32 {
        u32::try_from(bytes.div_ceil(UNIT))
            .unwrap_or(u32::MAX)
            .clamp(1, self.total)
    }

    /// Reserves `bytes` (rounded up to 64 KiB units; more than the whole budget is capped
    /// to it), waiting while the budget is taken. Idle pooled buffers are freed for it
    /// first. Waiters are served in order.
    pub async fn reserve(&self, bytes: u64) -> Reserved {
        let units = self.units_for(bytes);
        let try_now = || self.units.clone().try_acquire_many_owned(units).ok();
        if let Some(p) = self.take_freeing_idle(&try_now) {
            return self.wrap(p, units);
        }
        // Counted as waiting first, so that a buffer coming back from now on gives its
        // share up; then idle buffers are freed once more before the wait.
        let waiting = WaitGuard::new(&self.shared);
        if let Some(p) = self.take_freeing_idle(&try_now) {
            return self.wrap(p, units);
        }
        let permit = self
            .units
            .clone()
            .acquire_many_owned(units)
            .await
            .expect("the budget's semaphore is never closed");
        drop(waiting);
        self.wrap(permit, units)
    }

    fn take_freeing_idle(
        &self,
        try_now: &dyn Fn() -> Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Option<tokio::sync::OwnedSemaphorePermit> {
        loop {
            if let Some(p) = try_now() {
                return Some(p);
            }
            let pools: Vec<Arc<BufPool>> = SHARED.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if !pools.iter().any(|pool| pool.free_one_of(self)) {
                return None;
            }
        }
    }

    fn wrap(&self, permit: tokio::sync::OwnedSemaphorePermit, units: u32) -> Reserved {
        Reserved {
            permit,
            units,
            shared: self.shared.clone(),
        }
    }

    pub fn total_bytes(&self) -> u64 {
        u64::from(self.total) * UNIT
    }

    /// Bytes reserved by buffers in use (idle pooled buffers not counted).
    pub fn in_use_bytes(&self) -> u64 {
        let held = u64::from(self.total) - self.units.available_permits() as u64;
        let idle = self
            .shared
            .idle_units
            .load(std::sync::atomic::Ordering::SeqCst);
        held.saturating_sub(idle) * UNIT
    }

    /// Bytes held by idle pooled buffers.
    pub fn idle_bytes(&self) -> u64 {
        self.shared
            .idle_units
            .load(std::sync::atomic::Ordering::SeqCst)
            * UNIT
    }
}

/// Counts a waiting reservation while it lives (also when the waiting future is dropped).
struct WaitGuard(Arc<Counters>);

impl WaitGuard {
    fn new(shared: &Arc<Counters>) -> Self {
        shared
            .waiting
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Self(shared.clone())
    }
}

impl Drop for WaitGuard {
    fn drop(&mut self) {
        self.0
            .waiting
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A share of a [`Budget`], given back when dropped.
#[derive(Debug)]
pub struct Reserved {
    permit: tokio::sync::OwnedSemaphorePermit,
    units: u32,
    shared: Arc<Counters>,
}

impl Reserved {
    /// `buf` as `Bytes` that hold this share until the last clone is dropped.
    pub fn attach(self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Held {
            buf,
            _reserved: self,
        })
    }

    fn of(&self, budget: &Budget) -> bool {
        Arc::ptr_eq(self.permit.semaphore(), &budget.units)
    }

    fn budget_has_waiters(&self) -> bool {
        self.shared
            .waiting
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    }

    fn enter_idle(&self) {
        self.shared
            .idle_units
            .fetch_add(u64::from(self.units), std::sync::atomic::Ordering::SeqCst);
    }

    fn leave_idle(&self) {
        self.shared
            .idle_units
            .fetch_sub(u64::from(self.units), std::sync::atomic::Ordering::SeqCst);
    }
}

/// Reserved bytes owned by a `Bytes`.
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
        self.pool
            .give_back(std::mem::take(&mut self.buf), self.reserved.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Waits (polls) until a reservation of `budget` is counted as waiting for its share;
    /// fails after 10 s.
    async fn until_waiting(budget: &Budget) {
        let counted = async {
            while budget
                .shared
                .waiting
                .load(std::sync::atomic::Ordering::SeqCst)
                == 0
            {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), counted)
            .await
            .expect("the reservation never waited for its share");
    }

    /// The reservation `waiting` was waiting for, once it is served; fails after 10 s.
    async fn served(waiting: tokio::task::JoinHandle<Reserved>) -> Reserved {
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .expect("the waiting reservation was never served")
            .unwrap()
    }

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
        until_waiting(&budget).await;
        assert!(!waiting.is_finished());
        drop(a);
        let c = served(waiting).await;
        assert_eq!(budget.in_use_bytes(), (512 + 256) << 10);
        drop((b, c));
        assert_eq!(budget.in_use_bytes(), 0);
        // Larger than the whole budget: all of it, not never.
        let all = budget.reserve(10 << 20).await;
        assert_eq!(budget.in_use_bytes(), budget.total_bytes());
        drop(all);
    }

    #[tokio::test]
    async fn idle_buffers_keep_their_share_and_give_it_up_for_another_size() {
        // Sizes no other test uses: shared pools are process-wide.
        let (small, big) = (BufPool::shared(300_001), BufPool::shared(500_003));
        let budget = Budget::new(1 << 20);
        let (buf, share) = small.take_reserved(&budget, 512 << 10).await;
        drop(small.freeze_reserved(buf, share));
        assert_eq!(budget.idle_bytes(), 512 << 10, "idle, and still counted");
        assert_eq!(budget.in_use_bytes(), 0);
        // The idle buffer comes back with its share: nothing new is reserved.
        let (buf, share) = small.take_reserved(&budget, 512 << 10).await;
        assert_eq!(budget.idle_bytes(), 0);
        assert_eq!(budget.in_use_bytes(), 512 << 10);
        drop(small.freeze_reserved(buf, share));
        // Another pool needs all of the budget: the idle buffer is freed for it.
        let all = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            big.take_reserved(&budget, 1 << 20),
        )
        .await
        .expect("idle buffers never hold a reservation off");
        assert_eq!(budget.idle_bytes(), 0);
        assert_eq!(budget.in_use_bytes(), 1 << 20);
        // While someone waits, a buffer that comes back gives its share up at once.
        let waiting = tokio::spawn({
            let budget = budget.clone();
            async move { budget.reserve(256 << 10).await }
        });
        until_waiting(&budget).await;
        assert!(!waiting.is_finished());
        drop(big.freeze_reserved(all.0, all.1));
        let quarter = served(waiting).await;
        assert_eq!(budget.idle_bytes(), 0);
        assert_eq!(budget.in_use_bytes(), 256 << 10);
        drop(quarter);
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
