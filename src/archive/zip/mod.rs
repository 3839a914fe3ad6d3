//! The zip format: [`spec`] holds its constants, [`writer`] writes archives, [`reader`]
//! parses their end records and central directory.

pub mod reader;
pub mod spec;
pub mod writer;

pub use reader::{DirLookup, Directory, Entry};
pub use writer::{WriteStats, ZipWriter};
