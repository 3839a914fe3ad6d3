//! The verify routes, the gateway's addition beside PocketBase's API ([`crate::verify`]):
//! `POST /api/gateway/backups/{key}/verify` runs one and answers its result,
//! `GET /api/gateway/backups/{key}/verify` the last result of a key, and
//! `GET /api/gateway/verify` every key's (for the page). `GET /api/backups` keeps
//! PocketBase's shape.

use crate::AppState;
use crate::auth::SuperuserAuth;
use crate::error::ApiError;
use crate::ops::progress::Trigger;
use crate::verify::{StartError, Verified};
use axum::Json;
use axum::extract::State;
use std::collections::BTreeMap;

const MSG_BUSY: &str = "Try again later - another verify is already running.";

/// POST /api/gateway/backups/{key}/verify
///
/// `200` with the result, `ok` true or false (a failed verify is an answer, not an
/// error); `400` while another verify runs; `404` for an unknown key.
pub async fn verify(
    State(state): State<AppState>,
    _auth: SuperuserAuth,
    super::KeyPath(key): super::KeyPath,
) -> Result<Json<Verified>, ApiError> {
    let Some(key) = key else {
        return Err(ApiError::not_found());
    };
    match crate::verify::verify(&state, &key, Trigger::Api, false).await {
        Ok(v) => Ok(Json(v)),
        Err(StartError::Busy) => Err(ApiError::bad_request(MSG_BUSY)),
        Err(StartError::Missing) => Err(ApiError::not_found()),
        Err(e @ StartError::Storage(_)) => {
            Err(ApiError::failed("Failed to verify the backup.", &e))
        }
    }
}

/// GET /api/gateway/backups/{key}/verify: the key's last result, `404` before its first.
pub async fn last(
    State(state): State<AppState>,
    _auth: SuperuserAuth,
    super::KeyPath(key): super::KeyPath,
) -> Result<Json<Verified>, ApiError> {
    key.and_then(|k| state.verifications.get(&k))
        .map(Json)
        .ok_or_else(ApiError::not_found)
}

/// GET /api/gateway/verify: every key's last result, by key.
pub async fn all(
    State(state): State<AppState>,
    _auth: SuperuserAuth,
) -> Json<BTreeMap<String, Verified>> {
    Json(state.verifications.all())
}
