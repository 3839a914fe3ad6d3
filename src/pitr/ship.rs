//! A history's shipper: the task that writes its objects to the store in order (segments,
//! markers, the minute's packs), retrying, with the hour's pack beside it
//! ([`super::compact::repack`]), and counts what it stored into the stream's status. The
//! capture thread hands it objects and never waits for the store.

use super::compact::{self, Job, Piece};
use super::stream::{Ctx, LAGS_KEPT, Shared, lock, now_ms};
use crate::storage::BackupStore;
use bytes::Bytes;
use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the shipper stores, in order.
pub(super) enum Shipment {
    /// A segment of commits.
    Segment {
        piece: Piece,
        bytes: Bytes,
        commits: u64,
    },
    /// An empty marker object ([`layout::ready_key`], [`layout::end_key`]).
    Marker(String),
    /// An object that replaces others, once they are stored.
    Compaction(Job),
}

impl Shipment {
    /// The bytes it holds in memory.
    fn held(&self) -> usize {
        match self {
            Self::Segment { bytes, .. } | Self::Compaction(Job::Pack { bytes, .. }) => bytes.len(),
            Self::Marker(_) | Self::Compaction(Job::Repack { .. }) => 0,
        }
    }

    /// A segment's first commit: it has a lag.
    fn first_ms(&self) -> Option<i64> {
        match self {
            Self::Segment { piece, .. } => Some(piece.first_ms),
            _ => None,
        }
    }
}

/// The task that writes a history's segments to the store, in order.
pub(super) struct Shipper {
    /// The store the history goes to.
    pub(super) store: Arc<dyn BackupStore>,
    status: Shared,
    tx: Option<tokio::sync::mpsc::UnboundedSender<Shipment>>,
    task: Option<tokio::task::JoinHandle<()>>,
    state: Arc<Mutex<ShipperState>>,
}

#[derive(Default)]
struct ShipperState {
    failed: Option<String>,
    /// Bytes handed over and not yet stored.
    unshipped: usize,
    /// First-commit times of the segments handed over and not yet stored, in order.
    waiting: VecDeque<i64>,
}

impl Shipper {
    pub(super) fn start(ctx: &Ctx, store: Arc<dyn BackupStore>, status: Shared) -> Self {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Shipment>();
        let state = Arc::new(Mutex::new(ShipperState::default()));
        let task = ctx.rt.spawn({
            let (state, status, store) = (state.clone(), status.clone(), store.clone());
            let put = ctx.put.clone();
            async move {
                // The hour's pack runs beside the shipments, one at a time: the segments
                // never wait for it. One that comes while the last still runs (an hour
                // later: a store that hardly answers) is left out, and so is one running
                // at the history's end: their minutes stay.
                let mut repack: Option<tokio::task::JoinHandle<()>> = None;
                while let Some(s) = rx.recv().await {
                    if let Shipment::Compaction(Job::Repack { piece, parts }) = s {
                        if repack.as_ref().is_some_and(|r| !r.is_finished()) {
                            tracing::warn!(key = %piece.key,
                                "the last hour's pack still runs: this hour stays in minutes");
                            continue;
                        }
                        let (store, put, status) = (store.clone(), put.clone(), status.clone());
                        repack = Some(tokio::spawn(async move {
                            let key = piece.key.clone();
                            match compact::repack(store, piece, parts, put).await {
                                Ok(_) => lock(&status).hour_packs += 1,
                                Err(e) => tracing::warn!(key = %key, error = %e,
                                    "packing an hour of the history failed; its minutes stay"),
                            }
                        }));
                        continue;
                    }
                    if let Err(e) = store_one(store.as_ref(), &s, &status).await {
                        state.lock().unwrap_or_else(|e| e.into_inner()).failed = Some(e);
                        break;
                    }
                    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                    st.unshipped -= s.held();
                    if s.first_ms().is_some() {
                        st.waiting.pop_front();
                    }
                    lock(&status).oldest_unshipped_ms = st.waiting.front().copied();
                }
                if let Some(repack) = repack {
                    repack.abort();
                }
            }
        });
        Self {
            store,
            status,
            tx: Some(tx),
            task: Some(task),
            state,
        }
    }

    /// Bytes are counted here, so memory is bounded by [`MAX_UNSHIPPED`] (the channel
    /// itself is unbounded: the capture thread never waits on the store).
    pub(super) fn send(&self, s: Shipment) -> io::Result<()> {
        {
            // Under the shipper's lock, as the shipper updates it: the lag never reads 0
            // while a segment waits.
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            st.unshipped += s.held();
            if let Some(first_ms) = s.first_ms() {
                st.waiting.push_back(first_ms);
            }
            lock(&self.status).oldest_unshipped_ms = st.waiting.front().copied();
        }
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(s).ok())
            .ok_or_else(|| io::Error::other("the shipper stopped"))
    }

    pub(super) fn failed(&self) -> Option<String> {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failed
            .clone()
    }

    pub(super) fn unshipped_bytes(&self) -> usize {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unshipped
    }

    /// Waits until everything handed over is stored (or the shipper gave up).
    pub(super) fn finish(mut self, rt: &tokio::runtime::Handle) {
        drop(self.tx.take());
        if let Some(task) = self.task.take() {
            let _ = rt.block_on(task);
        }
    }
}

/// Stores one segment, marker or minute's pack, retrying with backoff for about a minute.
async fn store_one(store: &dyn BackupStore, s: &Shipment, status: &Shared) -> Result<(), String> {
    let (key, bytes) = match s {
        Shipment::Segment { piece, bytes, .. }
        | Shipment::Compaction(Job::Pack { piece, bytes, .. }) => (&piece.key, bytes.clone()),
        Shipment::Marker(key) => (key, Bytes::new()),
        Shipment::Compaction(Job::Repack { .. }) => return Ok(()),
    };
    let mut delay = Duration::from_millis(200);
    let mut attempt = 0;
    loop {
        match store.put_object(key, bytes.clone()).await {
            Ok(()) => break,
            Err(e) if attempt < 8 => {
                attempt += 1;
                lock(status).error = Some(format!("storing a segment failed (retrying): {e}"));
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(format!("storing a segment failed: {e}")),
        }
    }
    match s {
        Shipment::Segment { piece, commits, .. } => {
            let now = now_ms();
            let mut st = lock(status);
            st.last_shipped_commit_ms = Some(piece.last_ms);
            st.last_shipped_at_ms = Some(now);
            st.commits_shipped += commits;
            st.segments_shipped += 1;
            st.bytes_shipped += bytes.len() as u64;
            st.error = None;
            st.lags_ms
                .push_back(u64::try_from(now - piece.first_ms).unwrap_or(0));
            if st.lags_ms.len() > LAGS_KEPT {
                st.lags_ms.pop_front();
            }
        }
        Shipment::Compaction(Job::Pack { replaces, .. }) => {
            // The parts go once the whole is stored; a failure leaves both, which a restore
            // reads as the whole (`History::chain`), and retention deletes with the history.
            if let Err(e) = store.delete_objects(replaces).await {
                tracing::warn!(key = %key, error = %e, "deleting packed segments failed");
            }
            lock(status).minute_packs += 1;
        }
        Shipment::Marker(_) | Shipment::Compaction(Job::Repack { .. }) => {}
    }
    Ok(())
}
