//! `GET /api/gateway/progress`: the running create or restore, and how each kind of
//! operation last ended (the gateway's addition; PocketBase shows neither). And
//! [`metrics_router`], the `--metrics-http` listener's one route.

use crate::AppState;
use crate::auth::SuperuserAuth;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

/// The running job's progress (`null` when none runs) and the last outcomes, each `null`
/// before the first: manual (API) create, scheduled create, upload, restore.
pub fn report(state: &AppState) -> Value {
    json!({
        "running": state.jobs.running(),
        "last": {
            "create": state.outcomes.create.last(),
            "scheduledCreate": state.scheduled_runs.last(),
            "upload": state.outcomes.upload.last(),
            "restore": state.restores.last(),
        },
    })
}

/// GET /api/gateway/progress
pub async fn progress(State(state): State<AppState>, _auth: SuperuserAuth) -> Json<Value> {
    Json(report(&state))
}

/// `GET /metrics` in Prometheus' text format; nothing else (404).
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let gauges = crate::ops::metrics::Gauges {
        creates_running: state.jobs.in_flight(crate::ops::jobs::JobKind::Create),
        restores_running: state.jobs.in_flight(crate::ops::jobs::JobKind::Restore),
        budget_limit: state.budget.total_bytes(),
        budget_in_use: state.budget.in_use_bytes(),
        budget_idle: state.budget.idle_bytes(),
        pitr: pitr_gauges(&state),
    };
    (
        [(header::CONTENT_TYPE, crate::ops::metrics::CONTENT_TYPE)],
        state.metrics.render(gauges),
    )
}

/// The point-in-time streams' values now.
fn pitr_gauges(state: &AppState) -> Vec<crate::ops::metrics::PitrGauges> {
    let pitr = &state.pitr;
    let now = crate::pitr::stream::now_ms();
    pitr.statuses()
        .into_iter()
        .map(|(db, s)| crate::ops::metrics::PitrGauges {
            db,
            streaming: s.streaming,
            lag_seconds: s.lag_now_ms(now) as f64 / 1000.0,
            commits: s.commits_shipped,
            segments: s.segments_shipped,
            bytes: s.bytes_shipped,
            histories: s.histories_started,
            minute_packs: s.minute_packs,
            hour_packs: s.hour_packs,
            last_commit: s.last_shipped_commit_ms.map(|t| t as f64 / 1000.0),
        })
        .collect()
}
