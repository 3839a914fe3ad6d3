//! Where the schedule gets the time from: the system clock, or one a test moves
//! ([`ClockHandle::manual`]).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use time::OffsetDateTime;

/// Where the schedule gets the time from: the system clock, or one a test moves.
pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
    /// Resolves once [`Clock::now`] has reached `t`.
    fn sleep_until(&self, t: OffsetDateTime) -> Pin<Box<dyn Future<Output = ()> + Send>>;
}

/// A shared [`Clock`].
#[derive(Clone)]
pub struct ClockHandle(Arc<dyn Clock>);

impl std::fmt::Debug for ClockHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClockHandle")
    }
}

impl ClockHandle {
    pub fn system() -> Self {
        Self(Arc::new(SystemClock))
    }

    /// A clock that stands at `start` until [`ManualClock::set`] moves it.
    pub fn manual(start: OffsetDateTime) -> (Self, ManualClock) {
        let clock = ManualClock(Arc::new(tokio::sync::watch::Sender::new(start)));
        (Self(Arc::new(clock.clone())), clock)
    }

    pub fn now(&self) -> OffsetDateTime {
        self.0.now()
    }

    /// Resolves once [`ClockHandle::now`] has reached `t`.
    pub fn sleep_until(&self, t: OffsetDateTime) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        self.0.sleep_until(t)
    }
}

struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn sleep_until(&self, t: OffsetDateTime) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        Box::pin(async move {
            // Re-check after each sleep: the wall clock may have been set back meanwhile.
            loop {
                let left = t - OffsetDateTime::now_utc();
                if left <= time::Duration::ZERO {
                    return;
                }
                let left = std::time::Duration::try_from(left).unwrap_or_default();
                tokio::time::sleep(left.min(std::time::Duration::from_secs(60))).await;
            }
        })
    }
}

/// A clock for tests: time moves only when [`ManualClock::set`] is called.
#[derive(Clone)]
pub struct ManualClock(Arc<tokio::sync::watch::Sender<OffsetDateTime>>);

impl ManualClock {
    pub fn set(&self, t: OffsetDateTime) {
        self.0.send_replace(t);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.borrow()
    }

    fn sleep_until(&self, t: OffsetDateTime) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let mut rx = self.0.subscribe();
        Box::pin(async move {
            let _ = rx.wait_for(|now| *now >= t).await;
        })
    }
}
