//! HTTP routes, with PocketBase's paths, status codes and messages.
//!
//! - [`auth`]: superuser login, refresh and file tokens.
//! - [`backups`]: the Backups API.
//! - [`health`]: `GET /api/health`.
//!
//! Unknown routes and methods answer PocketBase's JSON 404. The access log records the
//! method and the matched route only: never the query string, which may hold a file token.

pub mod auth;
pub mod backups;
pub mod health;

use crate::AppState;
use crate::error::ApiError;
use axum::Router;
use axum::extract::{
    DefaultBodyLimit, FromRequest, FromRequestParts, MatchedPath, Path, Query, Request,
};
use axum::http::request::Parts;
use axum::routing::{get, post};
use serde::de::DeserializeOwned;
use tower_http::cors::CorsLayer;
use tower_http::trace::TraceLayer;

/// Body limit of the JSON routes (uploads have none).
const JSON_BODY_LIMIT: usize = 1024 * 1024;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/health", get(health::health).head(health::health))
        .route(
            "/api/collections/_superusers/auth-with-password",
            post(auth::auth_with_password),
        )
        .route(
            "/api/collections/_superusers/auth-refresh",
            post(auth::auth_refresh),
        )
        .route("/api/files/token", post(auth::file_token))
        .route("/api/backups", get(backups::list).post(backups::create))
        .route(
            "/api/backups/upload",
            post(backups::upload).layer(DefaultBodyLimit::disable()),
        )
        .route(
            "/api/backups/{key}",
            get(backups::download).delete(backups::delete),
        )
        .route("/api/backups/{key}/restore", post(backups::restore))
        .route("/api/gateway/restore", get(backups::restore_status))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(DefaultBodyLimit::max(JSON_BODY_LIMIT))
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
        // PocketBase allows every origin by default; the SDKs run in browsers too.
        .layer(CorsLayer::permissive())
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

/// The `{key}` path segment, `None` when it cannot be decoded (bad percent-encoding or
/// UTF-8): handlers answer that like an unknown key, never with axum's plain-text 400.
#[derive(Debug, Clone)]
pub struct KeyPath(pub Option<String>);

impl<S: Send + Sync> FromRequestParts<S> for KeyPath {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(
            Path::<String>::from_request_parts(parts, state)
                .await
                .ok()
                .map(|Path(k)| k),
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

/// A JSON body parsed like PocketBase does: an empty body is `{}`, anything unparsable is
/// `400 An error occurred while loading the submitted data.`
#[derive(Debug, Clone, Default)]
pub struct PbJson<T>(pub T);

impl<S, T> FromRequest<S> for PbJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|_| ApiError::load_failed())?;
        let text = if bytes.iter().all(u8::is_ascii_whitespace) {
            &b"{}"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(text)
            .map(PbJson)
            .map_err(|_| ApiError::load_failed())
    }
}
