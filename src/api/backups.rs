//! The Backups API: list, create, delete and restore, with PocketBase's status codes,
//! messages and validation codes (PocketBase 0.40, `apis/backup*.go`); uploads are in
//! [`super::upload`], downloads in [`super::download`]. The answers to the store's failures
//! ([`store_failure`]) are shared by all three.

use crate::AppState;
use crate::auth::SuperuserAuth;
use crate::backup::{CreateError, RunError};
use crate::error::{ApiError, FieldError};
use crate::keys;
use crate::ops::progress::Trigger;
use crate::restore::StartError;
use crate::storage::StorageError;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub(super) const MSG_BUSY: &str =
    "Try again later - another backup/restore process has already been started.";
const MSG_IN_USE: &str = "The backup is currently being used and cannot be deleted.";
const MSG_DELETE_MISSING: &str = "Invalid or already deleted backup file.";
pub(super) const MSG_FORBIDDEN: &str = "Insufficient permissions to access the resource.";

/// One backup as PocketBase lists it (its field order).
#[derive(Debug, Serialize)]
pub struct BackupItem {
    modified: String,
    key: String,
    size: u64,
}

/// GET /api/backups (`fields` is applied by `edge::json_answers`, as for every answer).
pub async fn list(
    State(state): State<AppState>,
    _auth: SuperuserAuth,
) -> Result<Json<Vec<BackupItem>>, ApiError> {
    let items = state
        .store()
        .list()
        .await
        .map_err(|e| store_failure(Op::List, &e))?;
    Ok(Json(
        items
            .into_iter()
            .map(|b| BackupItem {
                modified: crate::util::time_fmt::pb(b.modified),
                key: b.key,
                size: b.size,
            })
            .collect(),
    ))
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CreateBody {
    name: String,
}

pub(super) fn name_exists(field: &'static str, message: &'static str) -> ApiError {
    ApiError::validation([(
        field,
        FieldError::new("validation_backup_name_exists", message),
    )])
}

/// What a handler was doing with the store, for [`store_failure`].
#[derive(Debug, Clone, Copy)]
pub(super) enum Op {
    List,
    Create,
    Upload,
    Download,
    Delete,
    Restore,
}

impl Op {
    /// PocketBase's message for a failure of the store during `self`.
    fn message(self) -> &'static str {
        match self {
            Op::List => "Failed to retrieve backup items.",
            Op::Create => "Failed to create backup.",
            Op::Upload => "Failed to upload the backup.",
            Op::Download => "Failed to download the backup.",
            Op::Delete => "Failed to delete the backup.",
            Op::Restore => "Failed to read the backup file.",
        }
    }
}

pub(super) const EXISTS_UPLOAD: &str = "Backup file with the specified name already exists.";
pub(super) const EXISTS: &str = "The backup file name is invalid or already exists.";
/// PocketBase's answer to a store failure during `op` (the cause is logged, never sent).
pub(super) fn store_failure(op: Op, e: &StorageError) -> ApiError {
    match (op, e) {
        (Op::Download, StorageError::NotFound) => ApiError::not_found(),
        (Op::Delete, StorageError::NotFound) => ApiError::bad_request(MSG_DELETE_MISSING),
        (Op::Restore, StorageError::NotFound) => ApiError::bad_request(MSG_RESTORE_INVALID),
        (Op::Create, StorageError::AlreadyExists) => name_exists("name", EXISTS),
        (Op::Upload, StorageError::AlreadyExists) => name_exists("file", EXISTS_UPLOAD),
        (Op::Upload, StorageError::Body(_)) => ApiError::load_failed(),
        _ => ApiError::failed(op.message(), e),
    }
}

/// POST /api/backups
///
/// Answers `204` only once the archive is complete in the store. If the request is dropped
/// (the client went away), the create stops and nothing is stored.
pub async fn create(
    State(state): State<AppState>,
    _auth: SuperuserAuth,
    body: Result<super::body::PbBody<CreateBody>, super::body::BindError>,
) -> Result<StatusCode, ApiError> {
    // PocketBase checks the lock first, then the body.
    if state.jobs.is_busy() {
        return Err(ApiError::bad_request(MSG_BUSY));
    }
    let super::body::PbBody(body) = body.map_err(|_| ApiError::load_failed())?;
    let name = if body.name.is_empty() {
        keys::default_name(&state.app_name().await, time::OffsetDateTime::now_utc())
    } else {
        keys::check_create_name(&body.name).map_err(|e| ApiError::validation([("name", e)]))?;
        body.name
    };
    let result = crate::backup::run(&state, &name, Trigger::Api).await;
    if result.is_ok() {
        // After the answer: the archive is stored whatever the verify finds.
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::backup::verify_after_create(&state, &name, Trigger::Api).await {
                tracing::warn!(key = %name, error = %e, "the verify after the create failed");
            }
        });
    }
    match result {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(RunError::Busy) => Err(ApiError::bad_request(MSG_BUSY)),
        Err(RunError::KeyInUse | RunError::Exists) => Err(name_exists("name", EXISTS)),
        Err(RunError::Create(CreateError::Storage(e))) => Err(store_failure(Op::Create, &e)),
        Err(RunError::Create(CreateError::Database(e))) => {
            // The application's own file: its relative path and SQLite's reason help the
            // operator and leak nothing of the server.
            Err(
                ApiError::bad_request("Failed to create backup.").with_field(
                    "database",
                    FieldError::new("validation_database_unreadable", e.to_string()),
                ),
            )
        }
        Err(RunError::Create(e)) => Err(ApiError::failed("Failed to create backup.", &e)),
    }
}

/// DELETE /api/backups/{key}
pub async fn delete(
    State(state): State<AppState>,
    _auth: SuperuserAuth,
    super::KeyPath(key): super::KeyPath,
) -> Result<StatusCode, ApiError> {
    let Some(key) = key else {
        return Err(ApiError::bad_request(MSG_DELETE_MISSING));
    };
    if state.jobs.in_use(&key) {
        return Err(ApiError::bad_request(MSG_IN_USE));
    }
    match state.store().delete(&key).await {
        Ok(()) => {
            state.verifications.forget(&key);
            Ok(StatusCode::NO_CONTENT)
        }
        Err(e) => Err(store_failure(Op::Delete, &e)),
    }
}

/// DELETE /api/backups/upload: the key `upload`, as in PocketBase.
pub async fn delete_upload_key(
    state: State<AppState>,
    auth: SuperuserAuth,
) -> Result<StatusCode, ApiError> {
    delete(
        state,
        auth,
        super::KeyPath(keys::BackupKey::parse("upload").ok()),
    )
    .await
}

const MSG_RESTORE_INVALID: &str = "Missing or invalid backup file.";

/// POST /api/backups/{key}/restore
///
/// Checks the archive (existence, central directory, every entry, free disk space) before
/// answering `204`; the restore then runs in the background under the busy lock. Its
/// outcome is at `GET /api/gateway/restore`. An archive that fails a check gets PocketBase's
/// `400 Missing or invalid backup file.` with the reason in `data.backup` (PocketBase
/// accepts it and fails silently later).
pub async fn restore(
    State(state): State<AppState>,
    _auth: SuperuserAuth,
    super::KeyPath(key): super::KeyPath,
) -> Result<StatusCode, ApiError> {
    if state.jobs.is_busy() {
        return Err(ApiError::bad_request(MSG_BUSY));
    }
    let Some(key) = key else {
        return Err(ApiError::bad_request(MSG_RESTORE_INVALID));
    };
    match crate::restore::start(&state, &key).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(StartError::Busy) => Err(ApiError::bad_request(MSG_BUSY)),
        Err(StartError::Missing) => Err(ApiError::bad_request(MSG_RESTORE_INVALID)),
        Err(StartError::Invalid(reason)) => {
            tracing::warn!(key = %key, reason = %reason, "restore refused");
            Err(ApiError::bad_request(MSG_RESTORE_INVALID).with_field(
                "backup",
                FieldError::new("validation_invalid_backup", reason),
            ))
        }
        Err(StartError::Storage(e)) => Err(store_failure(Op::Restore, &e)),
        Err(StartError::AppRunning(reason)) => {
            tracing::warn!(key = %key, reason = %reason, "restore refused: the application is running");
            Err(ApiError::bad_request(MSG_RESTORE_APP_RUNNING)
                .with_field("app", FieldError::new("validation_app_running", reason)))
        }
    }
}

/// The answer to a restore under a live application that nothing can stop (the gateway's
/// own: PocketBase restarts itself around its restores).
const MSG_RESTORE_APP_RUNNING: &str = "The application is running on the data directory, and \
    a restore would replace its files under it. Run it under the gateway with \
    --exec \"CMD\", or give --app-stop \"CMD\" and --app-start \"CMD\", so that the restore \
    stops it and starts it again (docs/application.md); or stop it first.";

/// GET /api/gateway/restore: the last restore's key, times, result and hook exit code
/// (`{"status": "none"}` before the first). The gateway's addition: PocketBase only logs it.
pub async fn restore_status(State(state): State<AppState>, _auth: SuperuserAuth) -> Json<Value> {
    match state.restores.last() {
        Some(s) => Json(serde_json::to_value(s).unwrap_or_default()),
        None => Json(serde_json::json!({"status": "none"})),
    }
}
