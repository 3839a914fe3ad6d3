//! The cost of password logins, bounded whatever strangers send.
//!
//! Every login runs an argon2id hash (PocketBase's parameters: 19 MiB of memory, 2 passes),
//! slow and large by design. Without a bound, a few clients sending wrong passwords at once
//! run one hash per request in parallel and the process grows by 19 MiB per request in
//! flight (measured: 44 MiB to 3.7 GB for 50 at a time). [`LoginGate`] bounds it:
//!
//! - at most [`LoginGate::hashing`] hashes run at once (the core count): each on a blocking
//!   thread, in one of as many memory buffers allocated once and reused, so the hashes hold
//!   at most `cores x 19 MiB` whatever the load, and the allocator never sees them come and
//!   go;
//! - a login that finds every hasher busy waits its turn (first come, first served) for at
//!   most [`WAIT`], then gets PocketBase's `429 Too Many Requests.`;
//! - at most [`QUEUED_PER_HASHER`] x cores logins are in the gate (hashing or waiting), and
//!   at most `cores` of them from one client address: a login past either bound is refused
//!   with the same 429 at once, so one address flooding the route cannot make the others
//!   wait behind it.
//!
//! This module does not decide who may log in ([`crate::api::auth`]), nor the rate limits
//! that apply before it ([`crate::api::rate_limit`]).

use crate::auth::users::{Superuser, verify_password_in};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// How long a login waits for a hasher before it is refused.
pub const WAIT: Duration = Duration::from_secs(3);
/// Logins in the gate (hashing or waiting) per hasher.
pub const QUEUED_PER_HASHER: usize = 4;

/// Why a login was not checked: the gate is full or the wait was over.
#[derive(Debug, thiserror::Error)]
#[error("too many logins at once")]
pub struct Busy;

/// See the module docs.
#[derive(Debug)]
pub struct LoginGate {
    hashers: Arc<Semaphore>,
    hashing: usize,
    /// The hashers' memory, reused (at most `hashing` buffers).
    buffers: Arc<Mutex<Vec<Vec<argon2::Block>>>>,
    /// Logins in the gate, by client address.
    inside: Arc<Mutex<Inside>>,
}

#[derive(Debug, Default)]
struct Inside {
    total: usize,
    by_client: HashMap<String, usize>,
}

impl Default for LoginGate {
    fn default() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, std::num::NonZero::get))
    }
}

impl LoginGate {
    /// A gate of `hashing` hashers (at least one).
    pub fn new(hashing: usize) -> Self {
        let hashing = hashing.max(1);
        Self {
            hashers: Arc::new(Semaphore::new(hashing)),
            hashing,
            buffers: Arc::new(Mutex::new(Vec::new())),
            inside: Arc::new(Mutex::new(Inside::default())),
        }
    }

    /// How many hashes run at once at most.
    pub fn hashing(&self) -> usize {
        self.hashing
    }

    /// Checks `password` against `user` (against a dummy hash when there is no such user, so
    /// that the answer time does not tell which emails exist) for the client at `client`;
    /// the superuser when it matches.
    ///
    /// # Errors
    /// [`Busy`] when the gate is full, this client already has as many logins in it as
    /// there are hashers, or no hasher was free within [`WAIT`].
    pub async fn verify(
        &self,
        client: &str,
        user: Option<Superuser>,
        dummy: &'static Superuser,
        password: String,
    ) -> Result<Option<Superuser>, Busy> {
        let _inside = self.enter(client)?;
        let permit = tokio::time::timeout(WAIT, self.hashers.clone().acquire_owned())
            .await
            .map_err(|_| Busy)?
            .map_err(|_| Busy)?;
        let buffers = self.buffers.clone();
        // The permit and the buffer go with the blocking task: a client that goes away does
        // not free its hasher before the hash is over.
        let checked = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let mut memory = buffers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop()
                .unwrap_or_default();
            let ok = match &user {
                Some(u) => verify_password_in(u, &password, &mut memory),
                None => {
                    let _ = verify_password_in(dummy, &password, &mut memory);
                    false
                }
            };
            buffers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(memory);
            ok.then_some(user).flatten()
        })
        .await;
        // A panic in the hasher is a failed login, not a crash of the request.
        Ok(checked.unwrap_or(None))
    }

    /// Takes a place in the gate for `client`, given back when the guard drops.
    fn enter(&self, client: &str) -> Result<InsideGuard, Busy> {
        let mut inside = self.inside.lock().unwrap_or_else(|e| e.into_inner());
        let mine = inside.by_client.get(client).copied().unwrap_or(0);
        if inside.total >= self.hashing * QUEUED_PER_HASHER || mine >= self.hashing {
            return Err(Busy);
        }
        inside.total += 1;
        *inside.by_client.entry(client.to_string()).or_default() += 1;
        Ok(InsideGuard {
            inside: self.inside.clone(),
            client: client.to_string(),
        })
    }
}

struct InsideGuard {
    inside: Arc<Mutex<Inside>>,
    client: String,
}

impl Drop for InsideGuard {
    fn drop(&mut self) {
        let mut inside = self.inside.lock().unwrap_or_else(|e| e.into_inner());
        inside.total -= 1;
        if let Some(n) = inside.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                inside.by_client.remove(&self.client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> Superuser {
        let dir = tempfile::tempdir().unwrap();
        let users = crate::auth::users::Users::open(dir.path()).unwrap();
        users.upsert("a@b.c", "long-enough").unwrap()
    }

    #[tokio::test]
    async fn one_client_cannot_take_more_places_than_there_are_hashers() {
        let gate = LoginGate::new(2);
        let a = gate.enter("10.0.0.1").unwrap();
        let _b = gate.enter("10.0.0.1").unwrap();
        assert!(gate.enter("10.0.0.1").is_err());
        // Another address still gets in, and a place given back is free again.
        let _c = gate.enter("10.0.0.2").unwrap();
        drop(a);
        let _d = gate.enter("10.0.0.1").unwrap();
    }

    #[tokio::test]
    async fn the_gate_holds_a_bounded_number_of_logins() {
        let gate = LoginGate::new(1);
        let guards: Vec<_> = (0..QUEUED_PER_HASHER)
            .map(|i| gate.enter(&format!("10.0.0.{i}")).unwrap())
            .collect();
        assert!(gate.enter("10.0.1.1").is_err());
        drop(guards);
        assert_eq!(gate.inside.lock().unwrap().by_client.len(), 0);
    }

    #[tokio::test]
    async fn right_and_wrong_passwords_are_told_apart_with_reused_memory() {
        let gate = LoginGate::new(1);
        let u = user();
        let dummy: &'static Superuser = Box::leak(Box::new(u.clone()));
        for _ in 0..2 {
            let ok = gate
                .verify("a", Some(u.clone()), dummy, "long-enough".into())
                .await
                .unwrap();
            assert_eq!(ok.map(|u| u.email), Some("a@b.c".to_string()));
            let bad = gate
                .verify("a", Some(u.clone()), dummy, "wrong-one".into())
                .await
                .unwrap();
            assert!(bad.is_none());
        }
        assert_eq!(gate.buffers.lock().unwrap().len(), 1, "one buffer, reused");
    }
}
