//! Superuser auth routes, as PocketBase's `_superusers` collection answers them.

use super::body::{BindError, PbBody};
use crate::AppState;
use crate::auth::users::Superuser;
use crate::auth::{SUPERUSERS_COLLECTION_ID, SUPERUSERS_COLLECTION_NAME, SuperuserAuth, TokenType};
use crate::error::{ApiError, FieldError};
use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PasswordBody {
    identity: String,
    password: String,
}

/// The record PocketBase returns for a superuser.
pub(crate) fn record(user: &Superuser) -> Value {
    json!({
        "collectionId": SUPERUSERS_COLLECTION_ID,
        "collectionName": SUPERUSERS_COLLECTION_NAME,
        "created": user.created,
        "email": user.email,
        "emailVisibility": false,
        "id": user.id,
        "updated": user.updated,
        "verified": true,
    })
}

fn auth_response(state: &AppState, user: &Superuser) -> Result<Json<Value>, ApiError> {
    let token = state
        .tokens
        .issue(user, TokenType::Auth)
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(json!({ "record": record(user), "token": token })))
}

/// POST /api/collections/_superusers/auth-with-password
pub async fn auth_with_password(
    State(state): State<AppState>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: axum::http::HeaderMap,
    body: Result<PbBody<PasswordBody>, BindError>,
) -> Result<Json<Value>, ApiError> {
    let PbBody(body) = body.map_err(BindError::passed_through)?;
    let mut missing = Vec::new();
    if body.identity.is_empty() {
        missing.push(("identity", FieldError::required()));
    }
    if body.password.is_empty() {
        missing.push(("password", FieldError::required()));
    }
    if !missing.is_empty() {
        return Err(ApiError::validation(missing));
    }
    // The allowlist first (PocketBase checks it after the password, so that from a refused
    // address a right password answers 403 and a wrong one 400: a guessing oracle).
    let peer = peer.map(|axum::Extension(axum::extract::ConnectInfo(a))| a);
    let settings = state.settings.current();
    if !super::client_ip::superuser_allowed(&settings, &headers, peer) {
        return Err(ApiError::forbidden(crate::error::MSG_FORBIDDEN));
    }
    let users = state
        .tokens
        .users()
        .current()
        .map_err(|e| ApiError::internal(&e))?;
    let user = users.find_by_email(&body.identity).cloned();
    // The hash runs in the login gate (bounded cost, see `crate::auth::login`), and runs even for
    // an unknown identity so the answer time does not tell which emails exist.
    let client = super::client_ip::real_ip(&headers, peer, &settings.trusted_proxy);
    match state
        .logins
        .verify(&client, user, dummy_user(), body.password)
        .await
    {
        Ok(Some(user)) => auth_response(&state, &user),
        Ok(None) => Err(ApiError::bad_request("Failed to authenticate.")),
        Err(crate::auth::login::Busy) => Err(ApiError::too_many_requests()),
    }
}

fn dummy_user() -> &'static Superuser {
    static DUMMY: std::sync::OnceLock<Superuser> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| Superuser {
        id: String::new(),
        email: String::new(),
        password_hash: crate::auth::users::hash_password(&crate::util::fsutil::random_string(20))
            .unwrap_or_default(),
        token_key: String::new(),
        created: String::new(),
        updated: String::new(),
    })
}

/// POST /api/collections/_superusers/auth-refresh
pub async fn auth_refresh(
    State(state): State<AppState>,
    SuperuserAuth(user): SuperuserAuth,
) -> Result<Json<Value>, ApiError> {
    auth_response(&state, &user)
}

/// POST /api/files/token
pub async fn file_token(
    State(state): State<AppState>,
    SuperuserAuth(user): SuperuserAuth,
) -> Result<Json<Value>, ApiError> {
    let token = state
        .tokens
        .issue(&user, TokenType::File)
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(json!({ "token": token })))
}
