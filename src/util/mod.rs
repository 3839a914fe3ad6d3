//! Small helpers every room uses, none of which knows the others' types: atomic writes
//! and kept values ([`fsutil`]), the paths under `<dir>/.backup-gateway/` ([`state_dir`]),
//! PocketBase's date format ([`time_fmt`]), and the one memory budget of backup bytes with
//! its buffer pools ([`bufpool`]).

pub mod bufpool;
pub mod fsutil;
pub mod state_dir;
pub mod time_fmt;
