//! The first run, as PocketBase does it: `serve` with no superuser prints a link to the
//! page, `/_/#/pbinstall/<token>`, where the first superuser is created.
//!
//! PocketBase makes a hidden installer superuser and prints a 30-minute auth token of it,
//! which its dashboard then uses to create the real one. Here the token is narrower: a
//! random one-time secret held in memory ([`Installer`]), valid for [`VALIDITY`] on the
//! schedule's clock, accepted by one route only (`POST
//! /api/collections/_superusers/records`, [`crate::api::installer`]) and only while no
//! superuser exists; it is spent when the superuser is created, and every other route
//! refuses it as the invalid token it is for them. A restart prints a new link. The other
//! ways to the first superuser stay: `GATEWAY_SUPERUSER_EMAIL`/`_PASSWORD` and
//! `backup-gateway superuser upsert`.

use std::sync::Mutex;
use time::OffsetDateTime;

/// How long a first-run link works: PocketBase's 30 minutes.
pub const VALIDITY: time::Duration = time::Duration::minutes(30);

/// The length of the random token (62 symbols: about 238 bits).
const TOKEN_LEN: usize = 40;

/// The pending first-run token, if any.
#[derive(Debug, Default)]
pub struct Installer {
    pending: Mutex<Option<Pending>>,
}

#[derive(Debug)]
struct Pending {
    token: String,
    expires: OffsetDateTime,
}

impl Installer {
    /// A new token, valid from `now` for [`VALIDITY`]; it replaces any earlier one.
    pub fn issue(&self, now: OffsetDateTime) -> String {
        let token = crate::util::fsutil::random_string(TOKEN_LEN);
        *self.lock() = Some(Pending {
            token: token.clone(),
            expires: now + VALIDITY,
        });
        token
    }

    /// Whether `token` is the pending one and has not expired at `now`.
    pub fn accepts(&self, token: &str, now: OffsetDateTime) -> bool {
        self.claim(token, now).is_some()
    }

    /// The pending token, held (other claims wait) while the first superuser is created:
    /// `None` unless `token` is accepted at `now`.
    pub fn claim(&self, token: &str, now: OffsetDateTime) -> Option<Claim<'_>> {
        let guard = self.lock();
        guard
            .as_ref()
            .is_some_and(|p| now < p.expires && same(p.token.as_bytes(), token.as_bytes()))
            .then_some(Claim(guard))
    }

    /// Spends the pending token: it is never accepted again.
    pub fn spend(&self) {
        *self.lock() = None;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A claimed token ([`Installer::claim`]); dropped without [`Claim::spend`], it stays
/// pending (the superuser could not be created).
pub struct Claim<'a>(std::sync::MutexGuard<'a, Option<Pending>>);

impl Claim<'_> {
    /// The purpose is done: the token is never accepted again.
    pub fn spend(mut self) {
        *self.0 = None;
    }
}

/// Byte equality in a time that does not depend on where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// With no superuser yet, a new first-run link for the server listening at `listening`.
///
/// # Errors
/// When the superusers cannot be read.
pub fn first_run_link(
    state: &crate::AppState,
    listening: std::net::SocketAddr,
) -> Result<Option<String>, crate::auth::users::UsersError> {
    if !state.tokens.users().current()?.superusers.is_empty() {
        return Ok(None);
    }
    let token = state.installer.issue(state.config.clock.now());
    Ok(Some(link(listening, &token)))
}

/// The page's address for `listening` (an unspecified address is reached on loopback).
pub fn link(listening: std::net::SocketAddr, token: &str) -> String {
    let mut addr = listening;
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            addr.set_ip(std::net::Ipv6Addr::LOCALHOST.into());
        }
        _ => {}
    }
    format!("http://{addr}/_/#/pbinstall/{token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_works_until_it_expires_or_is_spent_and_a_new_one_replaces_it() {
        let installer = Installer::default();
        let t0 = OffsetDateTime::now_utc();
        assert!(!installer.accepts("", t0), "nothing pending");
        let token = installer.issue(t0);
        assert_eq!(token.len(), TOKEN_LEN);
        assert!(installer.accepts(&token, t0));
        assert!(installer.accepts(&token, t0 + VALIDITY - time::Duration::SECOND));
        assert!(!installer.accepts(&token, t0 + VALIDITY));
        assert!(!installer.accepts(&token[1..], t0));
        assert!(!installer.accepts(&format!("{token}x"), t0));
        let again = installer.issue(t0);
        assert!(!installer.accepts(&token, t0), "replaced");
        drop(installer.claim(&again, t0).expect("claimed"));
        assert!(
            installer.accepts(&again, t0),
            "a claim dropped unspent keeps the token"
        );
        installer.claim(&again, t0).expect("claimed").spend();
        assert!(!installer.accepts(&again, t0), "spent");
    }

    #[test]
    fn the_link_points_at_the_page_on_a_reachable_address() {
        let at = |s: &str| link(s.parse().unwrap(), "tok");
        assert_eq!(
            at("0.0.0.0:8090"),
            "http://127.0.0.1:8090/_/#/pbinstall/tok"
        );
        assert_eq!(at("[::]:8090"), "http://[::1]:8090/_/#/pbinstall/tok");
        assert_eq!(at("10.1.2.3:80"), "http://10.1.2.3:80/_/#/pbinstall/tok");
    }
}
