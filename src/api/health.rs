//! `GET /api/health`, as PocketBase answers it; superusers also get `canBackup`, `realIP`
//! and `possibleProxyHeader` (as in PocketBase) and the outcome of the last restore (the
//! gateway's addition).

use crate::AppState;
use crate::auth::MaybeSuperuser;
use axum::Extension;
use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use serde_json::{Value, json};
use std::net::SocketAddr;

/// GET /api/health
pub async fn health(
    State(state): State<AppState>,
    MaybeSuperuser(user): MaybeSuperuser,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
) -> Json<Health> {
    let data = if user.is_some() {
        json!({
            "canBackup": !state.jobs.is_busy(),
            "realIP": peer.map(|Extension(ConnectInfo(a))| a.ip().to_string()).unwrap_or_default(),
            "possibleProxyHeader": possible_proxy_header(&headers),
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

/// The first proxy header PocketBase looks for that the request carries, else "". (Its
/// list also names `X-Forwarded-For`, but spelled with a non-ASCII hyphen that no request
/// header matches; the gateway keeps the effective behaviour.)
fn possible_proxy_header(headers: &HeaderMap) -> &'static str {
    ["CF-Connecting-IP", "Fly-Client-IP"]
        .into_iter()
        .find(|h| headers.get(*h).is_some_and(|v| !v.is_empty()))
        .unwrap_or("")
}

/// PocketBase's field order.
#[derive(serde::Serialize)]
pub struct Health {
    message: &'static str,
    code: u16,
    data: Value,
}
