//! `GET/PATCH /api/settings` and `POST /api/settings/test/s3`, as PocketBase answers them
//! for the sections the gateway has ([`crate::settings`]), and `GET /api/gateway/schedule`.
//!
//! A PATCH body is JSON (what the SDKs and the dashboard send); PocketBase also binds form
//! bodies there, the gateway answers them `400 An error occurred while loading the
//! submitted data.`

use super::body::{BindError, PbBody};
use crate::AppState;
use crate::auth::SuperuserAuth;
use crate::error::{ApiError, FieldError};
use crate::settings::{PatchError, render};
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

const MSG_SAVE: &str = "An error occurred while saving the new settings.";
const MSG_TEST_S3: &str = "Failed to test the S3 filesystem.";

/// GET /api/settings
pub async fn get(State(state): State<AppState>, _auth: SuperuserAuth) -> Json<Value> {
    Json(render(&state.settings.current(), &state.app_name().await))
}

/// PATCH /api/settings
///
/// Merges the body into the current settings; answers the new settings (secrets left out).
/// A changed `backups.s3` applies from the next operation on.
pub async fn patch(
    State(state): State<AppState>,
    _auth: SuperuserAuth,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    // JSON as sent (a `null` sets a zero value, as PocketBase binds it); no body binds
    // nothing, so the settings are saved as they are. Other types are not bound.
    let is_json = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    let body = match (body.is_empty(), is_json) {
        (true, _) => json!({}),
        (false, true) => super::body::json_value(&body).map_err(|_| ApiError::load_failed())?,
        (false, false) => return Err(ApiError::load_failed()),
    };
    let body = if body.is_null() { json!({}) } else { body };
    let new = match state.settings.patch(&body) {
        Ok(new) => new,
        Err(PatchError::Load) => return Err(ApiError::load_failed()),
        Err(PatchError::Invalid(fields)) => {
            return Err(ApiError::bad_request(MSG_SAVE).with_data(fields));
        }
        Err(PatchError::Save(e)) => {
            return Err(ApiError::failed(MSG_SAVE, &e));
        }
    };
    crate::warn_if_proxy_headers_trusted_from_every_peer(&new);
    state
        .apply_settings()
        .await
        .map_err(|e| ApiError::internal(&e))?;
    Ok(Json(render(&new, &state.app_name().await)))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct TestS3Body {
    filesystem: String,
}

/// POST /api/settings/test/s3
///
/// Writes `pb_settings_test_<random>/test.txt` (under `--s3-prefix`) to the bucket of the
/// saved `backups.s3` settings, lists and deletes it. The gateway has no file storage, so
/// `"storage"` answers as PocketBase does when that storage is not on S3.
pub async fn test_s3(
    State(state): State<AppState>,
    _auth: SuperuserAuth,
    body: Result<PbBody<TestS3Body>, BindError>,
) -> Result<StatusCode, ApiError> {
    let PbBody(body) = body.map_err(|_| ApiError::load_failed())?;
    let raw = |e: &str| {
        let mut message = format!("{MSG_TEST_S3} Raw error: \n{e}");
        if !message.ends_with('.') {
            message.push('.');
        }
        ApiError::bad_request(message)
    };
    let not_enabled = || raw("S3 storage filesystem is not enabled");
    match body.filesystem.as_str() {
        "" => {
            Err(ApiError::bad_request(MSG_TEST_S3).with_field("filesystem", FieldError::required()))
        }
        "storage" => Err(not_enabled()),
        "backups" => {
            let settings = state.settings.current();
            let Some(config) = state.config.s3_for(&settings.backups.s3) else {
                return Err(not_enabled());
            };
            crate::storage::s3::S3Store::new(&config)
                .await
                .probe()
                .await
                .map_err(|e| raw(&e))?;
            Ok(StatusCode::NO_CONTENT)
        }
        _ => Err(ApiError::bad_request(MSG_TEST_S3).with_field(
            "filesystem",
            FieldError::new("validation_in_invalid", "Must be a valid value."),
        )),
    }
}

/// GET /api/gateway/schedule: the schedule, its next three runs and the last run's outcome.
pub async fn schedule(State(state): State<AppState>, _auth: SuperuserAuth) -> Json<Value> {
    let settings = state.settings.current();
    let next: Vec<String> =
        crate::schedule::next_runs(&settings.backups.cron, state.config.clock.now(), 3)
            .into_iter()
            .map(crate::util::time_fmt::pb)
            .collect();
    Json(json!({
        "cron": settings.backups.cron,
        "cronMaxKeep": settings.backups.cron_max_keep,
        "next": next,
        "last": state.scheduled_runs.last(),
    }))
}
