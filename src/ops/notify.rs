//! Notifications of failures (`--notify-url`): a JSON POST on every failed scheduled
//! create, failed verify and failed restore, so that any alerting system learns of a
//! backup that did not happen or cannot be restored (PocketBase emails its superusers on a
//! failed automated backup; a webhook fits more systems).
//!
//! The body is `{"event": "create_failed" | "verify_failed" | "verify_inconclusive" |
//! "restore_failed" | "pitr_stalled", "key", "reason", "time"}` (a stalled point-in-time
//! stream's key is its database): the reason is the operation's own error text (which names entries
//! and stores, never credentials), the time PocketBase's format. Sending never holds up the
//! operation: events go through a bounded queue to one task, which tries each up to
//! [`ATTEMPTS`] times in all (a connection error, a timeout or a 5xx/429 answer is tried again after
//! 1 s, then 2 s, ...); an event that finds the queue full, or fails every attempt, is
//! logged and dropped. The URL is never logged (it may carry a token).

use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Tries per event.
pub const ATTEMPTS: u32 = 4;
/// Events waiting to be sent, at most.
const QUEUE: usize = 64;
/// One attempt's time limit.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// What failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum What {
    Create,
    Verify,
    /// A verify that could not finish (the store failed, no disk room).
    VerifyInconclusive,
    Restore,
    /// A point-in-time stream that stalled (`key`: the database).
    PitrStalled,
}

/// One notification's body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    pub event: &'static str,
    pub key: String,
    pub reason: String,
    pub time: String,
}

impl Event {
    /// `what` of `key` failed because of `reason`, now.
    pub fn failed(what: What, key: &str, reason: &str) -> Self {
        Self {
            event: match what {
                What::Create => "create_failed",
                What::Verify => "verify_failed",
                What::VerifyInconclusive => "verify_inconclusive",
                What::Restore => "restore_failed",
                What::PitrStalled => "pitr_stalled",
            },
            key: key.to_string(),
            reason: reason.to_string(),
            time: crate::util::time_fmt::now_pb(),
        }
    }
}

/// Where the notifications go, read at each send: `None`, nowhere. The gateway's is the
/// current settings' `backups.notifyUrl` (or the flag that pins it); this module does not
/// know the settings.
pub type UrlSource = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// Sends events to the URL its [`UrlSource`] gives at each send, or drops them when there
/// is none. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    url: UrlSource,
    queue: mpsc::Sender<(String, Event)>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Notifier")
    }
}

impl Notifier {
    /// A notifier of the URLs `url` gives. Starts its sending task on the current runtime.
    pub fn new(url: UrlSource) -> Self {
        let (queue, rx) = mpsc::channel(QUEUE);
        tokio::spawn(deliver(rx));
        Self { url, queue }
    }

    /// Queues `event` for the URL set now (never waits).
    pub fn send(&self, event: Event) {
        let Some(url) = (self.url)() else {
            return;
        };
        if let Err(e) = self.queue.try_send((url, event)) {
            tracing::warn!(event = ?e.into_inner().1, "notification dropped: too many waiting");
        }
    }
}

/// The sending task: one event at a time, each retried.
async fn deliver(mut rx: mpsc::Receiver<(String, Event)>) {
    let client = match reqwest::Client::builder().timeout(ATTEMPT_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "notifications are off: no HTTP client");
            return;
        }
    };
    while let Some((url, event)) = rx.recv().await {
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=ATTEMPTS {
            match client.post(&url).json(&event).send().await {
                Ok(res) if res.status().is_success() => break,
                Ok(res) if !retryable(res.status()) => {
                    tracing::warn!(status = %res.status(), event = event.event, key = %event.key, "notification refused");
                    break;
                }
                outcome => {
                    let why = match outcome {
                        Ok(res) => res.status().to_string(),
                        Err(e) => crate::error::ErrorChain(&e.without_url()).to_string(),
                    };
                    if attempt == ATTEMPTS {
                        tracing::warn!(why, event = event.event, key = %event.key, "notification failed");
                    } else {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        }
    }
}

fn retryable(status: reqwest::StatusCode) -> bool {
    status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS
}
