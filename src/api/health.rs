//! `GET /api/health`, as PocketBase answers it; superusers also get `canBackup`, `realIP`
//! and `possibleProxyHeader` (as in PocketBase), the running job's progress and the
//! outcomes of the last restore and the last scheduled backup, and the application's
//! lifecycle (`--exec`: whether its child runs), and with `--pitr` the point-in-time
//! streams that stalled (the gateway's additions).

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
    let mut data = if user.is_some() {
        let settings = state.settings.current();
        let peer = peer.map(|Extension(ConnectInfo(a))| a);
        json!({
            "canBackup": !state.jobs.is_busy(),
            "realIP": super::client_ip::real_ip(&headers, peer, &settings.trusted_proxy),
            "possibleProxyHeader": possible_proxy_header(&settings.trusted_proxy.headers, &headers),
            "running": state.jobs.running(),
            "lastRestore": state.restores.last(),
            "lastScheduledBackup": state.scheduled_runs.last(),
            "app": state.app.view(),
        })
    } else {
        json!({})
    };
    // Only while the stream is on: the answer stays as it was otherwise.
    if user.is_some() && state.pitr.is_enabled() {
        data["pitr"] = json!({
            "stalled": state.pitr.stalled_streams().into_iter()
                .map(|(name, reason)| json!({"name": name, "reason": reason}))
                .collect::<Vec<_>>(),
        });
    }
    Json(Health {
        message: "API is healthy.",
        code: 200,
        data,
    })
}

/// The first proxy header PocketBase looks for (the trusted ones, then common ones) that
/// the request carries, else "". (Its list also names `X-Forwarded-For`, but spelled with a non-ASCII hyphen that no request
/// header matches; the gateway keeps the effective behaviour.)
fn possible_proxy_header(trusted: &[String], headers: &HeaderMap) -> String {
    trusted
        .iter()
        .map(String::as_str)
        .chain(["CF-Connecting-IP", "Fly-Client-IP"])
        .find(|h| headers.get(*h).is_some_and(|v| !v.is_empty()))
        .unwrap_or("")
        .to_string()
}

/// PocketBase's field order.
#[derive(serde::Serialize)]
pub struct Health {
    message: &'static str,
    code: u16,
    data: Value,
}
