//! The points where a crash test can stop a restore for good, so that it kills the process
//! at a known moment: with `GATEWAY_TEST_PAUSE_AT=<point>`, the restore writes the marker
//! [`crate::util::state_dir::paused_at`] and sleeps there. Without the variable nothing happens.
//! `tests/api/crash.rs` kills the gateway at each of [`CrashPoint::ALL`].

use std::path::Path;

/// A moment of a restore, in the order a restore passes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// Half of the entries are extracted into the staging directory.
    Extract,
    /// The application is stopped (or nothing is configured to stop it); the swap has not
    /// begun.
    AppStopped,
    /// The journal says `moving-out` and the first item has moved out.
    SwapFirstMovedOut,
    /// Everything has moved out; the journal still says `moving-out`.
    SwapMovedOut,
    /// The new data is in; the journal still says `moving-in`.
    AfterSwap,
    /// The journal says `cleanup`; the application is not started yet.
    BeforeAppStart,
    /// The clean-up of the old data is about to start.
    Cleanup,
}

impl CrashPoint {
    pub const ALL: [Self; 7] = [
        Self::Extract,
        Self::AppStopped,
        Self::SwapFirstMovedOut,
        Self::SwapMovedOut,
        Self::AfterSwap,
        Self::BeforeAppStart,
        Self::Cleanup,
    ];

    /// The value of `GATEWAY_TEST_PAUSE_AT` that stops here.
    pub fn name(self) -> &'static str {
        match self {
            Self::Extract => "extract",
            Self::AppStopped => "app-stopped",
            Self::BeforeAppStart => "before-app-start",
            Self::SwapFirstMovedOut => "swap-first-moved-out",
            Self::SwapMovedOut => "swap-moved-out",
            Self::AfterSwap => "after-swap",
            Self::Cleanup => "cleanup",
        }
    }
}

/// Stops here for good when `GATEWAY_TEST_PAUSE_AT` names `point`.
pub(super) fn pause_at(data_dir: &Path, point: CrashPoint) {
    let Ok(want) = std::env::var("GATEWAY_TEST_PAUSE_AT") else {
        return;
    };
    if want != point.name() {
        return;
    }
    let _ = std::fs::write(
        crate::util::state_dir::paused_at(data_dir, point.name()),
        b"",
    );
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
