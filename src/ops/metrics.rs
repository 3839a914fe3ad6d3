//! Prometheus metrics (`--metrics-http`): what operators alert on. The families, their
//! labels and the exposition are here; the places that count call [`Metrics`]' methods.
//!
//! Built on the `prometheus` crate (its registry and text encoder, format 0.0.4), with a
//! registry per gateway rather than the crate's global one, so that several gateways in one
//! process (the tests) keep their counts apart.
//!
//! | family | labels | what |
//! |---|---|---|
//! | `backup_gateway_operations_total` | `operation`, `trigger`, `outcome` | finished creates, uploads, restores, downloads, verifies |
//! | `backup_gateway_archive_bytes` | `operation` | histogram of archive sizes (bytes sent, for downloads) |
//! | `backup_gateway_operation_duration_seconds` | `operation` | histogram of durations |
//! | `backup_gateway_last_success_timestamp_seconds` | `operation` | Unix time of the last successful create, restore, verify |
//! | `backup_gateway_store_requests_total` | `operation` | requests sent to the S3 store (each attempt) |
//! | `backup_gateway_store_errors_total` | `operation` | attempts that failed: no answer, or 5xx / 429 |
//! | `backup_gateway_store_retries_total` | `operation` | attempts after an operation's first |
//! | `backup_gateway_jobs_in_flight` | `kind` | creates and restores running (0 or 1) |
//! | `backup_gateway_memory_budget_bytes` | `state` | the backup-bytes budget: `limit`, `in_use`, `idle` |
//! | `backup_gateway_pitr_streaming` | `db` | 1 while the point-in-time stream runs with its base stored (`--pitr`) |
//! | `backup_gateway_pitr_lag_seconds` | `db` | how long the oldest commit captured and not yet stored has waited |
//! | `backup_gateway_pitr_last_shipped_commit_timestamp_seconds` | `db` | Unix time of the newest commit stored |
//! | `backup_gateway_pitr_commits_shipped`, `_segments_shipped`, `_bytes_shipped`, `_histories_started` | `db` | the stream's counts since the start |
//! | `backup_gateway_pitr_packs` | `db`, `level` | objects packed from others since the start: `minute` (segments), `hour` (minutes) |

use crate::ops::progress::Trigger;
use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

/// What finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Create,
    Upload,
    Restore,
    Download,
    /// A backup read and checked without restoring it ([`crate::verify`]).
    Verify,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Upload => "upload",
            Self::Restore => "restore",
            Self::Download => "download",
            Self::Verify => "verify",
        }
    }
}

/// The content type of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every family of one gateway.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    operations: IntCounterVec,
    archive_bytes: HistogramVec,
    duration: HistogramVec,
    last_success: GaugeVec,
    /// Counted by the S3 store's interceptor.
    pub store: StoreMetrics,
    jobs_in_flight: IntGaugeVec,
    budget_bytes: IntGaugeVec,
    pitr: PitrFamilies,
}

/// The point-in-time streams' families, labelled by database.
#[derive(Debug)]
struct PitrFamilies {
    streaming: IntGaugeVec,
    lag: GaugeVec,
    commits: IntGaugeVec,
    segments: IntGaugeVec,
    bytes: IntGaugeVec,
    histories: IntGaugeVec,
    packs: IntGaugeVec,
    last_commit: GaugeVec,
}

/// The store's counters; cheap to clone (the families are shared).
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    pub requests: IntCounterVec,
    pub errors: IntCounterVec,
    pub retries: IntCounterVec,
}

/// Values read at scrape time rather than counted.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    pub creates_running: usize,
    pub restores_running: usize,
    pub budget_limit: u64,
    pub budget_in_use: u64,
    pub budget_idle: u64,
    /// The point-in-time streams (`--pitr`).
    pub pitr: Vec<PitrGauges>,
}

/// One point-in-time stream, as its state says at scrape time.
#[derive(Debug, Clone, Default)]
pub struct PitrGauges {
    pub db: String,
    pub streaming: bool,
    pub lag_seconds: f64,
    pub commits: u64,
    pub segments: u64,
    pub bytes: u64,
    pub histories: u64,
    /// Packs written: a minute's segments, an hour's minutes.
    pub minute_packs: u64,
    pub hour_packs: u64,
    /// The newest commit stored (Unix seconds), when one is.
    pub last_commit: Option<f64>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl PitrFamilies {
    fn new(registry: &Registry) -> Self {
        let int_gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid family");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let gauge = |name: &str, help: &str| {
            let g = GaugeVec::new(Opts::new(name, help), &["db"]).expect("a valid family");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let db = &["db"];
        Self {
            streaming: int_gauge(
                "backup_gateway_pitr_streaming",
                "1 while the database's point-in-time stream runs with its base stored.",
                db,
            ),
            lag: gauge(
                "backup_gateway_pitr_lag_seconds",
                "How long the oldest commit captured and not yet stored has waited.",
            ),
            commits: int_gauge(
                "backup_gateway_pitr_commits_shipped",
                "Commits stored by the stream since the gateway started.",
                db,
            ),
            segments: int_gauge(
                "backup_gateway_pitr_segments_shipped",
                "Segments (store writes) stored by the stream since the gateway started.",
                db,
            ),
            bytes: int_gauge(
                "backup_gateway_pitr_bytes_shipped",
                "Segment bytes stored by the stream since the gateway started.",
                db,
            ),
            histories: int_gauge(
                "backup_gateway_pitr_histories_started",
                "Histories (each from a base image) begun since the gateway started.",
                db,
            ),
            packs: int_gauge(
                "backup_gateway_pitr_packs",
                "Objects packed from others since the gateway started: a minute's segments \
                 (level minute), an hour's minutes (level hour).",
                &["db", "level"],
            ),
            last_commit: gauge(
                "backup_gateway_pitr_last_shipped_commit_timestamp_seconds",
                "Unix time of the newest commit stored.",
            ),
        }
    }

    /// The streams' values now; a database no longer streamed leaves the families.
    fn set(&self, streams: &[PitrGauges]) {
        for family in [
            &self.streaming,
            &self.commits,
            &self.segments,
            &self.bytes,
            &self.histories,
            &self.packs,
        ] {
            family.reset();
        }
        self.lag.reset();
        self.last_commit.reset();
        for s in streams {
            let l = &[s.db.as_str()];
            self.streaming
                .with_label_values(l)
                .set(i64::from(s.streaming));
            self.lag.with_label_values(l).set(s.lag_seconds);
            let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            self.commits.with_label_values(l).set(int(s.commits));
            self.segments.with_label_values(l).set(int(s.segments));
            self.bytes.with_label_values(l).set(int(s.bytes));
            self.histories.with_label_values(l).set(int(s.histories));
            for (level, n) in [("minute", s.minute_packs), ("hour", s.hour_packs)] {
                self.packs
                    .with_label_values(&[s.db.as_str(), level])
                    .set(int(n));
            }
            if let Some(t) = s.last_commit {
                self.last_commit.with_label_values(l).set(t);
            }
        }
    }
}

impl StoreMetrics {
    /// The store's families, registered by `counter`.
    fn new(counter: &dyn Fn(&str, &str, &[&str]) -> IntCounterVec) -> Self {
        Self {
            requests: counter(
                "backup_gateway_store_requests_total",
                "Requests sent to the S3 store, each attempt counted.",
                &["operation"],
            ),
            errors: counter(
                "backup_gateway_store_errors_total",
                "Store attempts that failed: no answer (timeout, connection) or 5xx/429.",
                &["operation"],
            ),
            retries: counter(
                "backup_gateway_store_retries_total",
                "Store attempts after an operation's first.",
                &["operation"],
            ),
        }
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid family");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets),
                &["operation"],
            )
            .expect("a valid family");
            registry
                .register(Box::new(h.clone()))
                .expect("registered once");
            h
        };
        let int_gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("a valid family");
            registry
                .register(Box::new(g.clone()))
                .expect("registered once");
            g
        };
        let operations = counter(
            "backup_gateway_operations_total",
            "Finished creates, uploads, restores and downloads, by trigger and outcome.",
            &["operation", "trigger", "outcome"],
        );
        // 1 MiB to 1 TiB, by fours.
        let size_buckets = prometheus::exponential_buckets(1048576.0, 4.0, 11).expect("buckets");
        let archive_bytes = histogram(
            "backup_gateway_archive_bytes",
            "Sizes of the archives created, uploaded, restored; bytes sent by downloads.",
            size_buckets,
        );
        // 0.1 s to about 4.5 h, by threes.
        let time_buckets = prometheus::exponential_buckets(0.1, 3.0, 12).expect("buckets");
        let duration = histogram(
            "backup_gateway_operation_duration_seconds",
            "Durations of creates, uploads, restores and downloads.",
            time_buckets,
        );
        let last_success = GaugeVec::new(
            Opts::new(
                "backup_gateway_last_success_timestamp_seconds",
                "Unix time of the last successful create (API or schedule) and restore.",
            ),
            &["operation"],
        )
        .expect("a valid family");
        registry
            .register(Box::new(last_success.clone()))
            .expect("registered once");
        let store = StoreMetrics::new(&counter);
        let jobs_in_flight = int_gauge(
            "backup_gateway_jobs_in_flight",
            "Creates and restores running now (at most one at a time).",
            &["kind"],
        );
        let budget_bytes = int_gauge(
            "backup_gateway_memory_budget_bytes",
            "The memory budget of backup bytes: its limit, the bytes in use, idle pooled.",
            &["state"],
        );
        let pitr = PitrFamilies::new(&registry);
        Self {
            registry,
            operations,
            archive_bytes,
            duration,
            last_success,
            store,
            jobs_in_flight,
            budget_bytes,
            pitr,
        }
    }

    /// One finished operation. `bytes`: the archive's size (or the bytes sent), when known.
    pub fn finished(
        &self,
        op: Operation,
        trigger: Trigger,
        ok: bool,
        bytes: Option<u64>,
        duration: std::time::Duration,
    ) {
        let outcome = if ok { "ok" } else { "failed" };
        self.operations
            .with_label_values(&[op.as_str(), trigger.as_str(), outcome])
            .inc();
        if let Some(bytes) = bytes {
            self.archive_bytes
                .with_label_values(&[op.as_str()])
                .observe(bytes as f64);
        }
        self.duration
            .with_label_values(&[op.as_str()])
            .observe(duration.as_secs_f64());
        if ok
            && matches!(
                op,
                Operation::Create | Operation::Restore | Operation::Verify
            )
        {
            self.set_last_success(op, time::OffsetDateTime::now_utc());
        }
    }

    /// Sets the last success of `op` (at start, from the outcomes kept across restarts).
    pub fn set_last_success(&self, op: Operation, at: time::OffsetDateTime) {
        let gauge = self.last_success.with_label_values(&[op.as_str()]);
        let t = at.unix_timestamp_nanos() as f64 / 1e9;
        if t > gauge.get() {
            gauge.set(t);
        }
    }

    /// The text exposition of every family, with the gauges read now.
    pub fn render(&self, gauges: Gauges) -> String {
        let set = |kind: &str, n: usize| {
            self.jobs_in_flight.with_label_values(&[kind]).set(n as i64);
        };
        set("create", gauges.creates_running);
        set("restore", gauges.restores_running);
        for (state, v) in [
            ("limit", gauges.budget_limit),
            ("in_use", gauges.budget_in_use),
            ("idle", gauges.budget_idle),
        ] {
            self.budget_bytes.with_label_values(&[state]).set(v as i64);
        }
        self.pitr.set(&gauges.pitr);
        let mut out = Vec::new();
        // Encoding into a Vec cannot fail but for a family that breaks the format.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_operations_move_their_series() {
        let m = Metrics::new();
        m.finished(
            Operation::Create,
            Trigger::Schedule,
            true,
            Some(5 << 20),
            std::time::Duration::from_secs(2),
        );
        m.finished(
            Operation::Upload,
            Trigger::Api,
            false,
            None,
            std::time::Duration::from_millis(10),
        );
        let text = m.render(Gauges {
            budget_limit: 128 << 20,
            pitr: vec![PitrGauges {
                db: "data.db".into(),
                streaming: true,
                lag_seconds: 1.5,
                commits: 42,
                ..PitrGauges::default()
            }],
            ..Gauges::default()
        });
        for line in [
            r#"backup_gateway_operations_total{operation="create",outcome="ok",trigger="schedule"} 1"#,
            r#"backup_gateway_operations_total{operation="upload",outcome="failed",trigger="api"} 1"#,
            r#"backup_gateway_archive_bytes_count{operation="create"} 1"#,
            r#"backup_gateway_operation_duration_seconds_sum{operation="create"} 2"#,
            r#"backup_gateway_memory_budget_bytes{state="limit"} 134217728"#,
            r#"backup_gateway_jobs_in_flight{kind="restore"} 0"#,
            r#"backup_gateway_pitr_lag_seconds{db="data.db"} 1.5"#,
            r#"backup_gateway_pitr_commits_shipped{db="data.db"} 42"#,
            r#"backup_gateway_pitr_streaming{db="data.db"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        assert!(
            text.contains("backup_gateway_last_success_timestamp_seconds{operation=\"create\"} 1"),
            "{text}"
        );
    }
}
