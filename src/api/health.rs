//! `GET /api/health`, as PocketBase answers it; superusers also get `canBackup` (as in
//! PocketBase) and the outcome of the last restore (the gateway's addition).

use crate::AppState;
use crate::auth::MaybeSuperuser;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

/// GET /api/health
pub async fn health(
    State(state): State<AppState>,
    MaybeSuperuser(user): MaybeSuperuser,
) -> Json<Health> {
    let data = if user.is_some() {
        json!({
            "canBackup": !state.jobs.is_busy(),
            "lastRestore": state.restores.last(),
        })
    } else {
        json!({})
    };
    Json(Health {
        message: "API is healthy.",
        code: 200,
        data,
    })
}

/// PocketBase's field order.
#[derive(serde::Serialize)]
pub struct Health {
    message: &'static str,
    code: u16,
    data: Value,
}
