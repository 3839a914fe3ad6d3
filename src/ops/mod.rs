//! The bookkeeping of operations, below the services that run them: the
//! one-create-or-restore-at-a-time lock and the keys being written ([`jobs`]), the live
//! progress ([`progress`]), how operations ended ([`outcomes`]), the Prometheus families
//! ([`metrics`]), and failures POSTed to `--notify-url` ([`notify`]).

pub mod jobs;
pub mod metrics;
pub mod notify;
pub mod outcomes;
pub mod progress;
