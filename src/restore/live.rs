//! Is the application live? Finds the other processes that have a file of the data
//! directory open, before a restore (key now, point in time later) swaps that directory.
//!
//! It never opens the data directory's files: closing any descriptor of a database file
//! drops every SQLite lock this process holds on it (POSIX locks belong to the process,
//! see [`crate::archive::sqlite`]). It only reads metadata:
//! - the identities (device, inode) of the data directory's files, by `lstat`;
//! - every other process's `/proc/PID/fd/*`, each `stat`ed (which follows the link to the
//!   open file without opening it): works across mount namespaces (an application in
//!   another container sharing the PID namespace sees other paths, the same inodes);
//! - `/proc/locks`, readable by everyone: the POSIX locks of processes whose descriptors
//!   this user may not read (another user's PocketBase holds a lock on its `-shm` file as
//!   long as it has its database open in WAL mode).

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A process that has a file of the data directory open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`), or `?`.
    pub name: String,
    /// The file, relative to the data directory.
    pub file: PathBuf,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (pid {}) has {} open",
            self.name,
            self.pid,
            self.file.display()
        )
    }
}

/// The processes other than this one that have a file under `data_dir` (outside
/// `excluded`) open; one per process. Empty where `/proc` is missing.
///
/// # Errors
/// When the data directory cannot be listed.
pub fn holders(data_dir: &Path, excluded: &[PathBuf]) -> io::Result<Vec<Holder>> {
    let mut files = HashMap::new();
    identities(data_dir, Path::new(""), excluded, &mut files)?;
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let me = std::process::id();
    let mut found: Vec<Holder> = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Ok(found);
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            // `stat` through the magic link: the open file's identity, nothing opened.
            if let Ok(m) = std::fs::metadata(fd.path())
                && m.is_file()
                && let Some(rel) = files.get(&(m.dev(), m.ino()))
            {
                found.push(holder(pid, rel));
                break;
            }
        }
    }
    if let Ok(locks) = std::fs::read_to_string("/proc/locks") {
        for (pid, id) in locks.lines().filter_map(parse_lock) {
            if pid != me
                && !found.iter().any(|h| h.pid == pid)
                && let Some(rel) = files.get(&id)
            {
                found.push(holder(pid, rel));
            }
        }
    }
    found.sort_by_key(|h| h.pid);
    Ok(found)
}

/// One sentence naming the holders, e.g. `pocketbase (pid 12) has data.db open`.
pub fn describe(holders: &[Holder]) -> String {
    holders
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

fn holder(pid: u32, rel: &Path) -> Holder {
    let name = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_string())
        .unwrap_or_else(|_| "?".into());
    Holder {
        pid,
        name,
        file: rel.to_path_buf(),
    }
}

/// (device, inode) of every regular file under `root/rel`, by `lstat` (nothing is opened
/// but the directories).
fn identities(
    root: &Path,
    rel: &Path,
    excluded: &[PathBuf],
    out: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    for entry in std::fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let child = rel.join(entry.file_name());
        if excluded.contains(&child) {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            // A directory that vanished meanwhile is not an error.
            let _ = identities(root, &child, excluded, out);
        } else if meta.is_file() {
            out.insert((meta.dev(), meta.ino()), child);
        }
    }
    Ok(())
}

/// A line of `/proc/locks` (`1: POSIX  ADVISORY  READ 1234 08:01:5678 128 128`, or with
/// `->` for a blocked waiter): the pid and the file's (device, inode). OFD locks (pid -1)
/// are skipped.
fn parse_lock(line: &str) -> Option<(u32, (u64, u64))> {
    let fields: Vec<&str> = line.split_whitespace().filter(|f| *f != "->").collect();
    let pid: u32 = fields.get(4)?.parse().ok()?;
    let mut id = fields.get(5)?.split(':');
    let major = u32::from_str_radix(id.next()?, 16).ok()?;
    let minor = u32::from_str_radix(id.next()?, 16).ok()?;
    let ino: u64 = id.next()?.parse().ok()?;
    Some((pid, (rustix::fs::makedev(major, minor), ino)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_lines_are_parsed() {
        let dev = rustix::fs::makedev(0x08, 0x01);
        assert_eq!(
            parse_lock("1: POSIX  ADVISORY  READ 1234 08:01:5678 128 128"),
            Some((1234, (dev, 5678)))
        );
        assert_eq!(
            parse_lock("2: -> POSIX  ADVISORY  WRITE 99 00:2f:10 0 EOF"),
            Some((99, (rustix::fs::makedev(0, 0x2f), 10)))
        );
        assert_eq!(
            parse_lock("3: OFDLCK ADVISORY  READ -1 00:05:1 0 EOF"),
            None
        );
    }

    #[test]
    fn looking_never_drops_this_processs_sqlite_locks() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("data.db");
        let c = rusqlite::Connection::open(&db).unwrap();
        c.execute_batch("CREATE TABLE t(x); BEGIN EXCLUSIVE; INSERT INTO t VALUES (1);")
            .unwrap();

        holders(dir.path(), &[]).unwrap();

        // Another process still finds the database locked: no descriptor of it was opened
        // and closed (which would have dropped this process's POSIX locks).
        let out = std::process::Command::new("python3")
            .args([
                "-c",
                "import sqlite3, sys\nc = sqlite3.connect(sys.argv[1], timeout=0)\n\
                 print(c.execute('SELECT count(*) FROM t').fetchall())",
            ])
            .arg(&db)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains("database is locked"),
            "{out:?}"
        );
        c.execute_batch("COMMIT").unwrap();
    }

    #[test]
    fn a_process_with_a_file_open_is_found_and_this_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/data.db"), b"x").unwrap();
        std::fs::write(dir.path().join("other"), b"y").unwrap();
        // This process holds it: not a holder.
        let _mine = std::fs::File::open(dir.path().join("other")).unwrap();
        assert_eq!(holders(dir.path(), &[]).unwrap(), vec![]);
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("exec 3<sub/data.db; echo ready; read _")
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        io::BufRead::read_line(
            &mut io::BufReader::new(child.stdout.as_mut().unwrap()),
            &mut line,
        )
        .unwrap();
        assert_eq!(line, "ready\n");
        let found = holders(dir.path(), &[]).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            (found[0].pid, found[0].file.as_path()),
            (child.id(), Path::new("sub/data.db"))
        );
        // An excluded path is not looked at.
        assert_eq!(
            holders(dir.path(), &[PathBuf::from("sub")]).unwrap(),
            vec![]
        );
        drop(child.stdin.take());
        child.wait().unwrap();
    }
}
