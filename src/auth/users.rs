//! The gateway's own state: superusers (argon2id password hashes) and token secrets, kept in
//! `<dir>/.backup-gateway/state.json`. This directory is excluded from every backup and is
//! never touched by a restore, so restoring an old backup cannot lock the operator out.
//!
//! The file is written atomically (temporary file, fsync, rename) with mode 0600. A running
//! server re-reads it when it changes, so `superuser upsert/delete` from another process
//! takes effect at once: tokens are signed with a per-user `token_key` that changes with the
//! password (as PocketBase does), so old tokens stop working.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// The shortest password a superuser may have.
pub const MIN_PASSWORD_CHARS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("cannot read or write the gateway state {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the gateway state {path} is not valid")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid email address")]
    InvalidEmail,
    #[error("the password must be at least 8 characters")]
    WeakPassword,
    #[error("no superuser with that email")]
    NoSuchUser,
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

/// One superuser, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Superuser {
    pub id: String,
    pub email: String,
    pub password_hash: String,
    /// Part of every token's signing key; a new one invalidates old tokens.
    pub token_key: String,
    pub created: String,
    pub updated: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct State {
    /// Secret for auth tokens (with each user's `token_key`).
    pub auth_secret: String,
    /// Secret for file tokens.
    pub file_secret: String,
    pub superusers: Vec<Superuser>,
}

impl State {
    fn new() -> Self {
        Self {
            auth_secret: crate::util::fsutil::random_string(50),
            file_secret: crate::util::fsutil::random_string(50),
            superusers: Vec::new(),
        }
    }

    pub fn find_by_email(&self, email: &str) -> Option<&Superuser> {
        self.superusers
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(email.trim()))
    }

    pub fn find_by_id(&self, id: &str) -> Option<&Superuser> {
        self.superusers.iter().find(|u| u.id == id)
    }
}

/// The state file, loaded and cached; reloaded when its modification time or size changes.
#[derive(Debug)]
pub struct Users {
    path: PathBuf,
    cache: Mutex<Cached>,
}

#[derive(Debug)]
struct Cached {
    stamp: Option<(SystemTime, u64, u64)>,
    state: Arc<State>,
}

impl Users {
    /// Opens (creating if needed) the state of data directory `data_dir`.
    ///
    /// # Errors
    /// When the state file cannot be read, written or parsed.
    pub fn open(data_dir: &Path) -> Result<Self, UsersError> {
        let path = crate::util::state_dir::users(data_dir);
        let users = Self {
            path,
            cache: Mutex::new(Cached {
                stamp: None,
                state: Arc::new(State::new()),
            }),
        };
        if !users.path.exists() {
            users.write(&State::new())?;
        }
        users.current()?;
        Ok(users)
    }

    /// The current state, re-read if the file changed since the last call.
    ///
    /// # Errors
    /// When the file cannot be read or parsed.
    pub fn current(&self) -> Result<Arc<State>, UsersError> {
        let io = |source| UsersError::Io {
            path: self.path.clone(),
            source,
        };
        let meta = std::fs::metadata(&self.path).map_err(io)?;
        let stamp = (meta.modified().map_err(io)?, meta.len(), inode(&meta));
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.stamp != Some(stamp) {
            let bytes = std::fs::read(&self.path).map_err(io)?;
            let state: State =
                serde_json::from_slice(&bytes).map_err(|source| UsersError::Corrupt {
                    path: self.path.clone(),
                    source,
                })?;
            cache.state = Arc::new(state);
            cache.stamp = Some(stamp);
        }
        Ok(cache.state.clone())
    }

    /// Creates a superuser or changes an existing one's password (which also rotates their
    /// token key, so their old tokens stop working).
    ///
    /// # Errors
    /// Invalid email, a password under 8 characters, or a state file problem.
    pub fn upsert(&self, email: &str, password: &str) -> Result<Superuser, UsersError> {
        let email = email.trim();
        if !is_plausible_email(email) {
            return Err(UsersError::InvalidEmail);
        }
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(UsersError::WeakPassword);
        }
        let hash = hash_password(password)?;
        let mut state = (*self.current()?).clone();
        let now = crate::util::time_fmt::now_pb();
        let user = match state
            .superusers
            .iter_mut()
            .find(|u| u.email.eq_ignore_ascii_case(email))
        {
            Some(u) => {
                u.password_hash = hash;
                u.token_key = crate::util::fsutil::random_string(50);
                u.updated = now;
                u.clone()
            }
            None => {
                let u = Superuser {
                    id: random_id(),
                    email: email.to_string(),
                    password_hash: hash,
                    token_key: crate::util::fsutil::random_string(50),
                    created: now.clone(),
                    updated: now,
                };
                state.superusers.push(u.clone());
                u
            }
        };
        self.write(&state)?;
        Ok(user)
    }

    /// The first-start superuser (`GATEWAY_SUPERUSER_EMAIL` and `_PASSWORD`): created, or
    /// given this password; a superuser that already has it is left alone, so a restart
    /// does not sign anyone out.
    ///
    /// # Errors
    /// As [`Users::upsert`].
    pub fn ensure(&self, email: &str, password: &str) -> Result<(), UsersError> {
        let current = self.current()?;
        if let Some(u) = current.find_by_email(email.trim())
            && verify_password(u, password)
        {
            return Ok(());
        }
        self.upsert(email, password).map(|_| ())
    }

    /// Deletes a superuser.
    ///
    /// # Errors
    /// No such superuser, or a state file problem.
    pub fn delete(&self, email: &str) -> Result<(), UsersError> {
        let mut state = (*self.current()?).clone();
        let before = state.superusers.len();
        state
            .superusers
            .retain(|u| !u.email.eq_ignore_ascii_case(email.trim()));
        if state.superusers.len() == before {
            return Err(UsersError::NoSuchUser);
        }
        self.write(&state)
    }

    fn write(&self, state: &State) -> Result<(), UsersError> {
        let io = |source| UsersError::Io {
            path: self.path.clone(),
            source,
        };
        let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other);
        bytes
            .and_then(|b| crate::util::fsutil::write_atomic(&self.path, &b, 0o600))
            .map_err(io)?;
        // Force a reload on next access even if the mtime granularity hides the change.
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).stamp = None;
        Ok(())
    }
}

#[cfg(unix)]
fn inode(meta: &std::fs::Metadata) -> u64 {
    std::os::unix::fs::MetadataExt::ino(meta)
}

#[cfg(not(unix))]
fn inode(_meta: &std::fs::Metadata) -> u64 {
    0
}

/// Checks `password` against `user`'s argon2id hash.
pub fn verify_password(user: &Superuser, password: &str) -> bool {
    verify_password_in(user, password, &mut Vec::new())
}

/// The most memory a stored hash may ask for (in 1 KiB blocks): 256 MiB, far above
/// PocketBase's 19 MiB; a state file asking for more is not believed.
const MAX_HASH_BLOCKS: usize = 256 * 1024;

/// [`verify_password`] with the hash's memory in `memory`, grown to what the hash needs and
/// kept for the next call (see [`crate::auth::login`]): the same checks as argon2's own
/// `verify_password`, and the outputs compared in constant time.
pub fn verify_password_in(
    user: &Superuser,
    password: &str,
    memory: &mut Vec<argon2::Block>,
) -> bool {
    let Ok(hash) = PasswordHash::new(&user.password_hash) else {
        return false;
    };
    let (Ok(params), Ok(algorithm)) = (
        argon2::Params::try_from(&hash),
        argon2::Algorithm::try_from(hash.algorithm),
    ) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let version = match hash.version.map(argon2::Version::try_from).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(_) => return false,
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let blocks = params.block_count();
    if blocks > MAX_HASH_BLOCKS {
        return false;
    }
    if memory.len() < blocks {
        memory.resize(blocks, argon2::Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..])
        .is_ok()
        && argon2::password_hash::Output::new(&out).is_ok_and(|o| o == expected)
}

/// An argon2id hash (default parameters, random salt) of `password`.
///
/// # Errors
/// Only if the hasher fails.
pub fn hash_password(password: &str) -> Result<String, UsersError> {
    let mut salt = [0u8; 16];
    rand::rng().fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| UsersError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UsersError::Hash(e.to_string()))
}

pub(crate) fn is_plausible_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && email.len() <= 255
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// A PocketBase-style record id: 15 characters of `[a-z0-9]`.
fn random_id() -> String {
    crate::util::fsutil::random_lower(15)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upsert_verify_change_password_and_delete() {
        let dir = tempfile::tempdir().unwrap();
        let users = Users::open(dir.path()).unwrap();
        let u = users
            .upsert("Admin@Example.com", "secret-password")
            .unwrap();
        assert_eq!(u.id.len(), 15);
        let state = users.current().unwrap();
        let found = state.find_by_email("admin@example.com").unwrap();
        assert!(verify_password(found, "secret-password"));
        assert!(!verify_password(found, "wrong-password"));

        let u2 = users
            .upsert("admin@example.com", "another-password")
            .unwrap();
        assert_eq!(u2.id, u.id);
        assert_ne!(u2.token_key, u.token_key);
        assert_eq!(users.current().unwrap().superusers.len(), 1);

        users.delete("ADMIN@example.com").unwrap();
        assert!(users.current().unwrap().superusers.is_empty());
        assert!(matches!(
            users.delete("admin@example.com"),
            Err(UsersError::NoSuchUser)
        ));
    }

    #[test]
    fn rejects_bad_email_and_short_password() {
        let dir = tempfile::tempdir().unwrap();
        let users = Users::open(dir.path()).unwrap();
        assert!(matches!(
            users.upsert("nope", "long-enough"),
            Err(UsersError::InvalidEmail)
        ));
        assert!(matches!(
            users.upsert("a@b.c", "short"),
            Err(UsersError::WeakPassword)
        ));
    }

    #[test]
    fn a_second_handle_sees_changes_made_by_another() {
        let dir = tempfile::tempdir().unwrap();
        let server = Users::open(dir.path()).unwrap();
        assert!(server.current().unwrap().superusers.is_empty());
        let cli = Users::open(dir.path()).unwrap();
        cli.upsert("a@b.c", "long-enough").unwrap();
        assert_eq!(server.current().unwrap().superusers.len(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn state_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let users = Users::open(dir.path()).unwrap();
        users.upsert("a@b.c", "long-enough").unwrap();
        let mode = std::fs::metadata(&users.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
