//! HTTP routes, with PocketBase's paths, status codes and messages.
//!
//! - [`auth`]: superuser login, refresh and file tokens.
//! - [`backups`]: the Backups API.
//! - [`health`]: `GET /api/health`.
//! - [`body`]: request bodies bound like PocketBase's `BindBody`.
//! - [`edge`]: what every request and answer goes through (refused bodies drained, the body
//!   limit, PocketBase's headers and CORS, `fields` and the JSON newline).
//! - [`fields`]: PocketBase's `fields` syntax.
//! - [`settings`]: `/api/settings` and the schedule's status.
//! - [`client_ip`]: the client's address and the superuser allowlist.
//! - [`progress`]: the running job's progress and the last outcomes; the metrics route.
//! - [`installer`]: the first superuser, created through the first-run link.
//! - [`ui`]: the backups page at `/_/` and `/` (embedded HTML, script and style sheet).
//! - [`verify`]: verifying a backup without restoring it, and the results.
//! - [`pitr`]: the point-in-time window and the restore to a moment.
//!
//! Unknown routes and methods answer PocketBase's JSON 404. The access log records the
//! method and the matched route only: never the query string, which may hold a file token.

pub mod auth;
pub mod backups;
pub mod body;
pub mod client_ip;
pub mod download;
pub mod edge;
pub mod fields;
pub mod health;
pub mod installer;
pub mod pitr;
pub mod progress;
pub mod rate_limit;
pub mod serve;
pub mod settings;
pub mod ui;
pub mod upload;
pub mod verify;

use crate::AppState;
use crate::error::ApiError;
use crate::keys::BackupKey;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Path, Query, Request};
use axum::http::request::Parts;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use tower_http::trace::TraceLayer;

pub fn router(state: AppState) -> Router {
    // The edge runs outside the routing (a fallback service), so that it sees every answer
    // as the client will, the method router's additions included.
    Router::new()
        .fallback_service(routes(state.clone()))
        .layer(from_fn(edge::json_answers))
        // PocketBase's order: the allowlist, the rate limits, then the body limit.
        .layer(from_fn(edge::body_limit))
        .layer(from_fn_with_state(state.clone(), edge::rate_limit))
        .layer(from_fn_with_state(state, edge::superuser_ips))
        .layer(from_fn(edge::pocketbase_headers))
        // Outermost, so that it also drains what the layers inside refuse.
        .layer(from_fn(edge::drain_unread_body))
}

fn routes(state: AppState) -> Router {
    Router::new()
        .route("/", get(ui::index))
        .route("/_/", get(ui::index))
        .route("/_/app.js", get(ui::script))
        .route("/_/app.css", get(ui::style))
        .route("/api/health", get(health::health).head(health::health))
        .route(
            "/api/collections/_superusers/auth-with-password",
            post(auth::auth_with_password),
        )
        .route(
            "/api/collections/_superusers/auth-refresh",
            post(auth::auth_refresh),
        )
        .route(
            "/api/collections/_superusers/records",
            post(installer::create_first_superuser),
        )
        .route("/api/files/token", post(auth::file_token))
        .route("/api/backups", get(backups::list).post(backups::create))
        // PocketBase's `GET` and `DELETE /api/backups/{key}` also serve the key `upload`.
        .route(
            "/api/backups/upload",
            post(upload::upload)
                .layer(DefaultBodyLimit::disable())
                .get(download::download_upload_key)
                .delete(backups::delete_upload_key),
        )
        .route(
            "/api/backups/{key}",
            get(download::download).delete(backups::delete),
        )
        .route("/api/backups/{key}/restore", post(backups::restore))
        .route(
            "/api/gateway/restore",
            get(backups::restore_status).post(pitr::restore),
        )
        .route("/api/gateway/pitr", get(pitr::window))
        .route(
            "/api/gateway/backups/{key}/verify",
            post(verify::verify).get(verify::last),
        )
        .route("/api/gateway/verify", get(verify::all))
        .route("/api/gateway/schedule", get(settings::schedule))
        .route("/api/gateway/progress", get(progress::progress))
        .route("/api/settings", get(settings::get).patch(settings::patch))
        .route("/api/settings/test/s3", post(settings::test_s3))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(DefaultBodyLimit::max(edge::MAX_BODY_BYTES as usize))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request| {
                    // The matched route, not the URI: query strings may carry tokens.
                    let route = req
                        .extensions()
                        .get::<MatchedPath>()
                        .map_or("<unmatched>", MatchedPath::as_str);
                    tracing::info_span!("request", method = %req.method(), route = %route)
                })
                .on_response(
                    tower_http::trace::DefaultOnResponse::new().level(tracing::Level::INFO),
                ),
        )
        .with_state(state)
}

/// PocketBase answers unknown GET/HEAD paths from its static file handler ("File not
/// found.") and other unknown routes or methods with its generic 404.
async fn not_found(method: axum::http::Method) -> ApiError {
    if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
        ApiError::new(axum::http::StatusCode::NOT_FOUND, "File not found.")
    } else {
        ApiError::not_found()
    }
}

/// The `{key}` path segment parsed once into a [`BackupKey`]; `None` when it cannot be
/// decoded (bad percent-encoding or UTF-8) or is not a valid key. Handlers answer that
/// like an unknown key, each with PocketBase's message and in PocketBase's order of
/// checks, never with axum's plain-text 400.
#[derive(Debug, Clone)]
pub struct KeyPath(pub Option<BackupKey>);

impl<S: Send + Sync> FromRequestParts<S> for KeyPath {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            Path::<String>::from_request_parts(parts, state)
                .await
                .ok()
                .and_then(|Path(k)| BackupKey::parse(k).ok()),
        ))
    }
}

/// Query parameters parsed leniently: what does not parse is ignored (PocketBase ignores
/// unknown or malformed parameters too).
#[derive(Debug, Clone, Default)]
pub struct LenientQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequestParts<S> for LenientQuery<T> {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            Query::<T>::try_from_uri(&parts.uri)
                .map(|Query(q)| q)
                .unwrap_or_default(),
        ))
    }
}
