//! Superuser tokens, as PocketBase makes them: HS256 JWTs with the claims `id`, `type`
//! (`auth` or `file`), `collectionId` (`pbc_3142635823`, PocketBase's `_superusers`),
//! `refreshable` (auth tokens only) and `exp`.
//!
//! The signing key is a per-purpose secret plus the user's `token_key` (PocketBase does the
//! same), so a token stops working when its superuser is deleted or changes password, and an
//! auth token can never pass as a file token or the reverse. Only HS256 is accepted: `alg:
//! none` and every other algorithm are refused before any key is looked up.
//!
//! This module does not own the superusers themselves ([`crate::auth::users`]) nor the routes
//! ([`crate::api::auth`]).

use crate::AppState;
use crate::auth::users::{Superuser, Users};
use crate::error::ApiError;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// PocketBase's fixed id of the `_superusers` collection.
pub const SUPERUSERS_COLLECTION_ID: &str = "pbc_3142635823";
pub const SUPERUSERS_COLLECTION_NAME: &str = "_superusers";
/// Auth token lifetime: PocketBase's default for `_superusers` (1 day).
pub const AUTH_TOKEN_TTL_SECS: i64 = 86_400;
/// File token lifetime: PocketBase's (3 minutes).
pub const FILE_TOKEN_TTL_SECS: i64 = 180;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenType {
    Auth,
    File,
}

impl TokenType {
    fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::File => "file",
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    #[serde(rename = "collectionId")]
    collection_id: String,
    exp: i64,
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refreshable: Option<bool>,
    #[serde(rename = "type")]
    typ: String,
}

/// Issues and verifies tokens against the superusers in [`Users`].
#[derive(Debug)]
pub struct Tokens {
    users: Users,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("invalid or expired token")]
    Invalid,
    #[error(transparent)]
    State(#[from] crate::auth::users::UsersError),
    #[error("cannot sign the token")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

impl Tokens {
    pub fn new(users: Users) -> Self {
        Self { users }
    }

    pub fn users(&self) -> &Users {
        &self.users
    }

    fn key(&self, state: &crate::auth::users::State, user: &Superuser, typ: TokenType) -> Vec<u8> {
        let secret = match typ {
            TokenType::Auth => &state.auth_secret,
            TokenType::File => &state.file_secret,
        };
        format!("{}{}", user.token_key, secret).into_bytes()
    }

    /// Signs a new token of type `typ` for `user`.
    ///
    /// # Errors
    /// When the state cannot be read or the token cannot be signed.
    pub fn issue(&self, user: &Superuser, typ: TokenType) -> Result<String, TokenError> {
        let state = self.users.current()?;
        let ttl = match typ {
            TokenType::Auth => AUTH_TOKEN_TTL_SECS,
            TokenType::File => FILE_TOKEN_TTL_SECS,
        };
        let claims = Claims {
            collection_id: SUPERUSERS_COLLECTION_ID.into(),
            exp: time::OffsetDateTime::now_utc().unix_timestamp() + ttl,
            id: user.id.clone(),
            refreshable: (typ == TokenType::Auth).then_some(true),
            typ: typ.as_str().into(),
        };
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&self.key(&state, user, typ)),
        )
        .map_err(TokenError::Sign)
    }

    /// The superuser a valid, unexpired token of type `typ` belongs to.
    ///
    /// # Errors
    /// [`TokenError::Invalid`] for anything but a valid token of that type for an existing
    /// superuser; [`TokenError::State`] when the state cannot be read.
    pub fn verify(&self, token: &str, typ: TokenType) -> Result<Superuser, TokenError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(_sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TokenError::Invalid);
        };
        // Refuse anything but HS256 before looking at the payload.
        let header: serde_json::Value = decode_part(header)?;
        if header.get("alg").and_then(|a| a.as_str()) != Some("HS256") {
            return Err(TokenError::Invalid);
        }
        // The unverified payload only says which user's key to verify with.
        let unverified: Claims = decode_part(payload)?;
        if unverified.typ != typ.as_str() {
            return Err(TokenError::Invalid);
        }
        let state = self.users.current()?;
        let user = state
            .find_by_id(&unverified.id)
            .ok_or(TokenError::Invalid)?
            .clone();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp"]);
        let data = jsonwebtoken::decode::<Claims>(
            token,
            &DecodingKey::from_secret(&self.key(&state, &user, typ)),
            &validation,
        )
        .map_err(|_| TokenError::Invalid)?;
        let c = data.claims;
        if c.typ != typ.as_str() || c.collection_id != SUPERUSERS_COLLECTION_ID || c.id != user.id {
            return Err(TokenError::Invalid);
        }
        Ok(user)
    }
}

fn decode_part<T: serde::de::DeserializeOwned>(part: &str) -> Result<T, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| TokenError::Invalid)?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Invalid)
}

/// The token of a request: the `Authorization` header, with or without `Bearer `
/// (PocketBase accepts both).
fn bearer(parts: &Parts) -> Option<&str> {
    bearer_token(&parts.headers)
}

/// See [`bearer`].
pub(crate) fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .trim();
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .unwrap_or(value)
        .trim();
    (!token.is_empty()).then_some(token)
}

/// Extractor: the request carries a valid superuser auth token, else 401.
#[derive(Debug, Clone)]
pub struct SuperuserAuth(pub Superuser);

impl FromRequestParts<AppState> for SuperuserAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(ApiError::unauthorized)?;
        match state.tokens.verify(token, TokenType::Auth) {
            Ok(user) => Ok(Self(user)),
            Err(TokenError::Invalid) => Err(ApiError::unauthorized()),
            Err(e) => Err(ApiError::internal(&e)),
        }
    }
}

/// Extractor: like [`SuperuserAuth`] but optional (for `/api/health`).
#[derive(Debug, Clone)]
pub struct MaybeSuperuser(pub Option<Superuser>);

impl FromRequestParts<AppState> for MaybeSuperuser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let user = bearer(parts).and_then(|t| state.tokens.verify(t, TokenType::Auth).ok());
        Ok(Self(user))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens() -> (tempfile::TempDir, Tokens, Superuser) {
        let dir = tempfile::tempdir().unwrap();
        let users = Users::open(dir.path()).unwrap();
        let user = users.upsert("a@b.c", "long-enough").unwrap();
        (dir, Tokens::new(users), user)
    }

    fn forge(header: &str, payload: &str, sig: &str) -> String {
        format!(
            "{}.{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload),
            sig
        )
    }

    #[test]
    fn auth_token_round_trip_and_type_separation() {
        let (_d, t, user) = tokens();
        let auth = t.issue(&user, TokenType::Auth).unwrap();
        let file = t.issue(&user, TokenType::File).unwrap();
        assert_eq!(t.verify(&auth, TokenType::Auth).unwrap().id, user.id);
        assert_eq!(t.verify(&file, TokenType::File).unwrap().id, user.id);
        assert!(matches!(
            t.verify(&auth, TokenType::File),
            Err(TokenError::Invalid)
        ));
        assert!(matches!(
            t.verify(&file, TokenType::Auth),
            Err(TokenError::Invalid)
        ));
    }

    #[test]
    fn alg_none_forged_and_garbage_tokens_are_refused() {
        let (_d, t, user) = tokens();
        let payload = format!(
            r#"{{"collectionId":"pbc_3142635823","exp":9999999999,"id":"{}","refreshable":true,"type":"auth"}}"#,
            user.id
        );
        let none = forge(r#"{"alg":"none","typ":"JWT"}"#, &payload, "");
        assert!(matches!(
            t.verify(&none, TokenType::Auth),
            Err(TokenError::Invalid)
        ));
        let forged = forge(r#"{"alg":"HS256","typ":"JWT"}"#, &payload, "AAAA");
        assert!(matches!(
            t.verify(&forged, TokenType::Auth),
            Err(TokenError::Invalid)
        ));
        for garbage in ["", "x", "a.b.c", "a.b.c.d", "...."] {
            assert!(
                matches!(t.verify(garbage, TokenType::Auth), Err(TokenError::Invalid)),
                "{garbage}"
            );
        }
    }

    #[test]
    fn expired_token_is_refused() {
        let (_d, t, user) = tokens();
        let state = t.users.current().unwrap();
        let claims = Claims {
            collection_id: SUPERUSERS_COLLECTION_ID.into(),
            exp: time::OffsetDateTime::now_utc().unix_timestamp() - 1,
            id: user.id.clone(),
            refreshable: Some(true),
            typ: "auth".into(),
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&t.key(&state, &user, TokenType::Auth)),
        )
        .unwrap();
        assert!(matches!(
            t.verify(&token, TokenType::Auth),
            Err(TokenError::Invalid)
        ));
    }

    #[test]
    fn password_change_and_delete_invalidate_tokens() {
        let (_d, t, user) = tokens();
        let before = t.issue(&user, TokenType::Auth).unwrap();
        t.users.upsert("a@b.c", "a-new-password").unwrap();
        assert!(matches!(
            t.verify(&before, TokenType::Auth),
            Err(TokenError::Invalid)
        ));
        let user = t.users.current().unwrap().superusers[0].clone();
        let after = t.issue(&user, TokenType::Auth).unwrap();
        assert!(t.verify(&after, TokenType::Auth).is_ok());
        t.users.delete("a@b.c").unwrap();
        assert!(matches!(
            t.verify(&after, TokenType::Auth),
            Err(TokenError::Invalid)
        ));
    }
}
