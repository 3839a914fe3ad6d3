//! What every request and answer goes through, outside the routes, as PocketBase 0.40
//! applies it (`apis/middlewares*.go`, `tools/router/event.go`):
//!
//! - [`drain_unread_body`]: a refused request's unread body is read and dropped, up to
//!   [`DRAIN_BYTES`], so that its client receives the answer and the connection can carry
//!   the next request (see [`crate::api::serve`] for what happens past the bound).
//! - [`body_limit`]: PocketBase's 32 MiB request body limit (`413 Request entity too
//!   large`), on every route but the upload.
//! - [`pocketbase_headers`]: the security headers, and CORS exactly as PocketBase's default
//!   (every origin; `Vary: Origin` always; preflights answered `204`).
//! - [`json_answers`]: the `fields` query parameter on successful JSON answers
//!   ([`super::fields`]).
//! - [`superuser_ips`] and [`rate_limit`]: the allowlist, then PocketBase's `rateLimits`.

use crate::error::ApiError;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

/// How much of a refused body is read and dropped before the connection is given up.
pub const DRAIN_BYTES: u64 = 64 << 20;
/// How long draining a refused body may take before the connection is given up.
pub const DRAIN_TIME: Duration = Duration::from_secs(10);
/// PocketBase's `DefaultMaxBodySize`.
pub const MAX_BODY_BYTES: u64 = 32 << 20;
/// The largest JSON answer that `fields` is applied to; the gateway's
/// JSON answers are a few KiB (a list of a few thousand backups is well under this).
const MAX_JSON_ANSWER: usize = 64 << 20;

/// See the module docs.
pub async fn drain_unread_body(req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let slot = Arc::new(Mutex::new(None));
    let req = req.map(|body| {
        Body::new(Returning {
            inner: Some(body),
            slot: slot.clone(),
        })
    });
    let mut res = next.run(req).await;
    let rest = slot.lock().map(|mut s| s.take()).unwrap_or(None);
    if let Some(rest) = rest
        && !drain(rest).await
    {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

/// Reads and drops `body` within [`DRAIN_BYTES`] and [`DRAIN_TIME`]. False if it gave up
/// (the connection must then be closed) or the body failed.
async fn drain(body: Body) -> bool {
    use futures::StreamExt;
    let mut stream = body.into_data_stream();
    let mut left = DRAIN_BYTES;
    let read = async {
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else { return false };
            let n = chunk.len() as u64;
            if n > left {
                return false;
            }
            left -= n;
        }
        true
    };
    tokio::time::timeout(DRAIN_TIME, read)
        .await
        .unwrap_or(false)
}

/// A request body that, when dropped before its end, hands what is left back to
/// [`drain_unread_body`].
struct Returning {
    inner: Option<Body>,
    slot: Arc<Mutex<Option<Body>>>,
}

impl HttpBody for Returning {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        match self.inner.as_mut() {
            Some(body) => Pin::new(body).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(HttpBody::is_end_stream)
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| http_body::SizeHint::with_exact(0), HttpBody::size_hint)
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if let Some(body) = self.inner.take()
            && !body.is_end_stream()
            && let Ok(mut slot) = self.slot.lock()
        {
            *slot = Some(body);
        }
    }
}

/// `413 Request entity too large` when the declared length is over [`MAX_BODY_BYTES`]
/// (checked before authorization, as in PocketBase); a longer body without a declared
/// length fails when it is read, like any unreadable body.
pub async fn body_limit(req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES) && !is_upload(&req) {
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request entity too large.")
            .into_response();
    }
    next.run(req).await
}

/// The upload route has no body limit (PocketBase binds `BodyLimit(0)` on it).
fn is_upload(req: &Request) -> bool {
    req.method() == Method::POST && req.uri().path() == "/api/backups/upload"
}

/// See the module docs.
pub async fn pocketbase_headers(req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    let preflight = req.method() == Method::OPTIONS;
    let requested_headers = req
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned();
    let mut res = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(req).await
    };
    let bare = res.extensions().get::<WithoutSecurityHeaders>().is_some();
    let h = res.headers_mut();
    // axum adds `Allow` to the 404 of a known path with another method; PocketBase does not.
    h.remove(header::ALLOW);
    // PocketBase answers a preflight (and an allowlist refusal) before its security
    // headers are set.
    if !preflight && !bare {
        security_headers(h);
    }
    h.append(header::VARY, HeaderValue::from_static("Origin"));
    if origin.is_some_and(|o| !o.is_empty()) {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        if preflight {
            for vary in [
                "Access-Control-Request-Method",
                "Access-Control-Request-Headers",
            ] {
                h.append(header::VARY, HeaderValue::from_static(vary));
            }
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET,HEAD,PUT,PATCH,POST,DELETE"),
            );
            if let Some(v) = requested_headers.filter(|v| !v.is_empty()) {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
            }
        }
    }
    res
}

/// PocketBase's security headers (`apis/middlewares.go`, and its COOP).
const SECURITY_HEADERS: [(&str, &str); 4] = [
    ("x-xss-protection", "1; mode=block"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "SAMEORIGIN"),
    ("cross-origin-opener-policy", "same-origin"),
];

fn security_headers(h: &mut HeaderMap) {
    for (name, value) in SECURITY_HEADERS {
        h.insert(name, HeaderValue::from_static(value));
    }
}

/// See the module docs. A `fields` expression that does not parse answers PocketBase's
/// `400 Something went wrong while processing your request.`
pub async fn json_answers(req: Request, next: Next) -> Response {
    let fields = req
        .uri()
        .query()
        .and_then(super::fields::raw_param)
        .filter(|f| !f.is_empty());
    let res = next.run(req).await;
    let Some(raw) = fields else { return res };
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json || !res.status().is_success() {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let picked = axum::body::to_bytes(body, MAX_JSON_ANSWER)
        .await
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .and_then(|value| super::fields::pick(value, &raw).ok())
        .and_then(|value| serde_json::to_vec(&value).ok());
    parts.headers.remove(header::CONTENT_LENGTH);
    match picked {
        Some(bytes) => Response::from_parts(parts, Body::from(bytes)),
        None => {
            parts.status = StatusCode::BAD_REQUEST;
            let body = ApiError::bad_request(crate::error::MSG_INTERNAL).body();
            Response::from_parts(parts, Body::from(body.to_string()))
        }
    }
}

/// PocketBase's `superuserIPs` check, for every route: a request that carries a valid
/// superuser auth token from an address outside the allowlist answers `403 You are not
/// allowed to perform this request.` (PocketBase's default 403 text), whatever it asks for.
pub async fn superuser_ips(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    req: Request,
    next: Next,
) -> Response {
    let settings = state.settings.current();
    if !settings.superuser_ips.is_empty()
        && let Some(token) = crate::auth::bearer_token(req.headers())
        && state
            .tokens
            .verify(token, crate::auth::TokenType::Auth)
            .is_ok()
        && !super::client_ip::superuser_allowed(
            &settings,
            req.headers(),
            super::client_ip::peer(&req),
        )
    {
        // PocketBase refuses here, before its security headers are set.
        let mut res = ApiError::forbidden(crate::error::MSG_FORBIDDEN).into_response();
        res.extensions_mut().insert(WithoutSecurityHeaders);
        return res;
    }
    next.run(req).await
}

/// PocketBase's `rateLimits` ([`crate::api::rate_limit`]), after the allowlist and before the
/// body limit, as PocketBase orders its middlewares: a request past its rule's limit
/// answers `429 Too Many Requests.`
pub async fn rate_limit(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    req: Request,
    next: Next,
) -> Response {
    let settings = state.settings.current();
    if !settings.rate_limits.enabled {
        return next.run(req).await;
    }
    let superuser = crate::auth::bearer_token(req.headers()).is_some_and(|token| {
        state
            .tokens
            .verify(token, crate::auth::TokenType::Auth)
            .is_ok()
    });
    if !superuser {
        let client = super::client_ip::real_ip(
            req.headers(),
            super::client_ip::peer(&req),
            &settings.trusted_proxy,
        );
        let path = percent_encoding::percent_decode_str(req.uri().path()).decode_utf8_lossy();
        let limited = crate::api::rate_limit::Request {
            method: req.method().as_str(),
            path: &path,
        };
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        if !state.rate_limits.allow(&settings, &limited, &client, now) {
            return ApiError::too_many_requests().into_response();
        }
    }
    next.run(req).await
}

/// Marks an answer that PocketBase gives before its security headers are set.
#[derive(Debug, Clone, Copy)]
pub struct WithoutSecurityHeaders;
