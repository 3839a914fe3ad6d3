//! The integration tests, one binary. A test reads as one scenario from top to bottom, so
//! the 80-line limit on functions (clippy.toml) is the library's, not theirs.
#![allow(clippy::too_many_lines)]

mod application;
mod auth;
mod backups;
mod conformance;
mod crash;
mod create;
mod docs;
mod edge;
mod flaky;
mod helpers;
mod incremental;
mod installer;
mod load;
mod observe;
mod pitr;
mod process;
mod rawzip;
mod restore;
mod s3_server;
mod schedule;
mod sdk;
mod seaweedfs;
mod settings;
mod shutdown;
mod snapshot;
mod stores;
mod tree;
mod ui;
mod verify;
mod zip64;
