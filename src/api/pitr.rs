//! Point-in-time restore's routes (the gateway's additions; [`crate::pitr`]):
//! - `GET /api/gateway/pitr`: per database, the window that can be restored (from one
//!   listing of the store) and the stream's state (lag, shipped counts, errors);
//! - `POST /api/gateway/restore` with `{"time": "2026-12-06 23:00:00.000Z"}` or
//!   `{"latest": true}`: the restore to that moment, answered and run as a key's restore.

use super::backups::{MSG_BUSY, Op, store_failure};
use crate::AppState;
use crate::auth::SuperuserAuth;
use crate::error::{ApiError, FieldError};
use crate::restore::StartError;
use crate::util::time_fmt;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

const MSG_INVALID: &str = "Failed to restore to the point in time.";

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct RestoreBody {
    /// The moment: PocketBase's format or RFC 3339.
    time: String,
    latest: bool,
}

/// POST /api/gateway/restore
pub async fn restore(
    State(state): State<AppState>,
    _auth: SuperuserAuth,
    body: Result<super::body::PbBody<RestoreBody>, super::body::BindError>,
) -> Result<StatusCode, ApiError> {
    if state.jobs.is_busy() {
        return Err(ApiError::bad_request(MSG_BUSY));
    }
    let super::body::PbBody(body) = body.map_err(|_| ApiError::load_failed())?;
    let until = match (body.latest, body.time.trim()) {
        (true, "") => None,
        (false, t) if !t.is_empty() => Some(time_fmt::parse_client(t).ok_or_else(|| {
            ApiError::validation([(
                "time",
                FieldError::new(
                    "validation_invalid_time",
                    "Must be a time as 2026-12-06 23:00:00.000Z (UTC) or RFC 3339.",
                ),
            )])
        })?),
        _ => {
            return Err(ApiError::validation([(
                "time",
                FieldError::new("validation_required", "Give either a time or latest: true."),
            )]));
        }
    };
    match crate::restore::start_pitr(&state, until).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(StartError::Busy) => Err(ApiError::bad_request(MSG_BUSY)),
        Err(StartError::Missing) => Err(ApiError::bad_request(MSG_INVALID)),
        Err(StartError::Invalid(reason)) => {
            tracing::warn!(reason = %reason, "point-in-time restore refused");
            Err(ApiError::bad_request(MSG_INVALID).with_field(
                "time",
                FieldError::new("validation_pitr_unavailable", reason),
            ))
        }
        Err(StartError::Storage(e)) => Err(store_failure(Op::Restore, &e)),
        Err(StartError::AppRunning(reason)) => Err(ApiError::bad_request(MSG_INVALID)
            .with_field("app", FieldError::new("validation_app_running", reason))),
    }
}

/// GET /api/gateway/pitr
pub async fn window(
    State(state): State<AppState>,
    _auth: SuperuserAuth,
) -> Result<Json<Value>, ApiError> {
    let store = state.store();
    let histories = state
        .pitr
        .histories(store.as_ref())
        .await
        .map_err(|e| store_failure(Op::List, &e))?;
    let windows = crate::pitr::rebuild::windows(&histories, crate::pitr::stream::now_ms());
    let statuses = state.pitr.statuses();
    let now = crate::pitr::stream::now_ms();
    let mut names: std::collections::BTreeSet<&String> = windows.keys().collect();
    names.extend(statuses.keys());
    let databases: Vec<Value> = names
        .into_iter()
        .map(|name| {
            let w = windows.get(name);
            let fmt = |t: Option<i64>| t.map(time_fmt::format_ms);
            let mut db = json!({
                "name": name,
                "earliest": fmt(w.and_then(crate::pitr::rebuild::Window::earliest)),
                "latest": fmt(w.and_then(crate::pitr::rebuild::Window::latest)),
                "histories": w.map(|w| w.spans.iter().map(|(a, b)| json!({
                    "start": time_fmt::format_ms(*a),
                    "end": time_fmt::format_ms(*b),
                })).collect::<Vec<_>>()).unwrap_or_default(),
                // What its history takes in the store (it grows with the writes: docs/pitr.md).
                "storedBytes": histories.get(name.as_str()).map_or(0, |hs| {
                    hs.iter().map(crate::pitr::layout::History::stored_bytes).sum::<u64>()
                }),
            });
            if let Some(s) = statuses.get(name) {
                db["stream"] = json!({
                    "streaming": s.streaming,
                    "quiet": s.streaming && s.quiet,
                    "history": s.history,
                    "lagMs": s.lag_now_ms(now),
                    "lagP50Ms": s.lag_percentile(50),
                    "lagP99Ms": s.lag_percentile(99),
                    "lastShippedCommit": fmt(s.last_shipped_commit_ms),
                    "lastShippedAt": fmt(s.last_shipped_at_ms),
                    "commitsShipped": s.commits_shipped,
                    "segmentsShipped": s.segments_shipped,
                    "bytesShipped": s.bytes_shipped,
                    "historiesStarted": s.histories_started,
                    "minutePacks": s.minute_packs,
                    "hourPacks": s.hour_packs,
                    "basesGivenWay": s.bases_given_way,
                    "error": s.error,
                });
            }
            db
        })
        .collect();
    let keep = state.pitr.keep();
    Ok(Json(json!({
        "enabled": state.pitr.is_enabled(),
        // The most each database's history may take (`--pitr-max-size-mib`; null: no
        // bound but the retention), and the databases never streamed (`--pitr-exclude`).
        "maxStoredBytes": keep.max_bytes,
        "retentionDays": keep.retention.as_secs() / 86_400,
        "excluded": keep.exclude,
        "databases": databases,
    })))
}
