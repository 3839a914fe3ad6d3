//! What the gateway reads of a PocketBase data directory, read-only: the application's name
//! (for automatic backup names), and the scratch directories PocketBase leaves out of its
//! backups.

use std::path::Path;
use std::time::Duration;

/// PocketBase's default `meta.appName`.
pub const DEFAULT_APP_NAME: &str = "Acme";

/// PocketBase's own scratch directories at the top of its data directory, which it leaves
/// out of its backups and keeps in place on restore (its `core/base_backup.go`): local
/// backups, temporary files, the notify directory, the TLS certificate cache, and the
/// file system's `lost+found`.
pub const EXCLUDED: [&str; 5] = [
    crate::LOCAL_BACKUPS_DIR,
    ".pb_temp_to_delete",
    ".notify",
    ".autocert_cache",
    "lost+found",
];

/// The application's name as PocketBase would use it for the same directory: `meta.appName`
/// from the `settings` row of `_params` in `data.db` when there is one (unencrypted; read
/// in a read-only connection that gives up after a short wait), else `fallback`.
pub fn app_name(data_dir: &Path, fallback: &str) -> String {
    read_app_name(&data_dir.join("data.db"))
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| fallback.to_string())
}

fn read_app_name(db: &Path) -> Option<String> {
    if !db.is_file() {
        return None;
    }
    use rusqlite::OpenFlags;
    let conn = crate::archive::sqlite::connect(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_NOFOLLOW,
    )
    .ok()?;
    conn.busy_timeout(Duration::from_millis(500)).ok()?;
    let value: Vec<u8> = conn
        .query_row(
            "SELECT CAST(value AS BLOB) FROM _params WHERE id = 'settings'",
            [],
            |row| row.get(0),
        )
        .ok()?;
    let settings: serde_json::Value = serde_json::from_slice(&value).ok()?;
    settings
        .pointer("/meta/appName")?
        .as_str()
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_app_name_comes_from_pocketbase_settings_or_the_fallback() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(app_name(dir.path(), "Fallback"), "Fallback");
        let conn = rusqlite::Connection::open(dir.path().join("data.db")).unwrap();
        conn.execute_batch("CREATE TABLE _params (id TEXT PRIMARY KEY, value JSON)")
            .unwrap();
        assert_eq!(app_name(dir.path(), "Fallback"), "Fallback");
        conn.execute(
            "INSERT INTO _params VALUES ('settings', CAST(?1 AS BLOB))",
            [r#"{"meta": {"appName": "My Shop"}}"#],
        )
        .unwrap();
        assert_eq!(app_name(dir.path(), "Fallback"), "My Shop");
        // An encrypted settings value (PB_ENCRYPTION_KEY) is not JSON.
        conn.execute(
            "UPDATE _params SET value = 'x8Yz...' WHERE id = 'settings'",
            [],
        )
        .unwrap();
        assert_eq!(app_name(dir.path(), "Fallback"), "Fallback");
    }
}
