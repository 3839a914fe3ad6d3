//! `GET /api/backups/{key}?token=…`: the archive streamed from the store with PocketBase's
//! headers, single byte ranges, and a summary line and metrics for every download.

use super::backups::{MSG_FORBIDDEN, Op, store_failure};
use crate::AppState;
use crate::auth::TokenType;
use crate::error::ApiError;
use crate::keys;
use crate::ops::metrics::Operation;
use crate::ops::outcomes::Finished;
use crate::ops::progress::Trigger;
use crate::storage::{
    ByteRange, ByteStream, RANGE_CHUNK, StorageError, parallel_reads, read_range,
};
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Default, Deserialize)]
pub struct DownloadQuery {
    #[serde(default)]
    token: String,
}

/// GET /api/backups/{key}?token=FILE_TOKEN
///
/// Streams the archive, honouring single `Range` requests (`206`, or `416` when
/// unsatisfiable). An unknown key is `404` (PocketBase's S3 mode answers 400).
pub async fn download(
    method: axum::http::Method,
    State(state): State<AppState>,
    super::KeyPath(key): super::KeyPath,
    super::LenientQuery(q): super::LenientQuery<DownloadQuery>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let peer = peer.map(|axum::Extension(axum::extract::ConnectInfo(a))| a);
    if state.tokens.verify(&q.token, TokenType::File).is_err()
        || !super::client_ip::superuser_allowed(&state.settings.current(), &headers, peer)
    {
        return Err(ApiError::forbidden(MSG_FORBIDDEN));
    }
    let Some(key) = key else {
        return Err(ApiError::not_found());
    };
    let store = state.store();
    let info = store
        .stat(&key)
        .await
        .map_err(|e| store_failure(Op::Download, &e))?
        .ok_or_else(ApiError::not_found)?;
    let range = match requested_range(&headers, info.size) {
        RangeSpec::Ignore => None,
        RangeSpec::Range(r) => Some(r),
        RangeSpec::Unsatisfiable => return Ok(unsatisfiable(info.size)),
    };
    let body = read_body(&state, store, &key, range, info.size)
        .await
        .map_err(|e| store_failure(Op::Download, &e))?;
    // A HEAD's body is never sent: no download to count.
    let body = if method == axum::http::Method::HEAD {
        Body::from_stream(body)
    } else {
        let expected = range.map_or(info.size, |r| r.size());
        Body::from_stream(Counted::new(body, &state, &key, expected))
    };
    Ok(download_response(body, &key, &info, range))
}

/// The single range a download's `Range` header asks for ([`RangeSpec::Ignore`] when
/// there is none).
fn requested_range(headers: &HeaderMap, size: u64) -> RangeSpec {
    headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .map_or(RangeSpec::Ignore, |raw| parse_range(raw, size))
}

/// `416` for a range outside an archive of `size` bytes.
fn unsatisfiable(size: u64) -> Response {
    let mut res = ApiError::new(
        StatusCode::RANGE_NOT_SATISFIABLE,
        "The requested range is not satisfiable.",
    )
    .into_response();
    res.headers_mut().insert(
        header::CONTENT_RANGE,
        HeaderValue::from_str(&format!("bytes */{size}")).expect("valid header"),
    );
    res
}

/// A download's answer: `200` or `206` with PocketBase's headers (type, disposition,
/// caching, CSP) and the length and range of what `body` carries.
fn download_response(
    body: Body,
    key: &str,
    info: &crate::storage::BackupInfo,
    range: Option<ByteRange>,
) -> Response {
    let mut res = Response::new(body);
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/zip"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(DOWNLOAD_CACHE_CONTROL),
    );
    h.insert(header::CONTENT_DISPOSITION, content_disposition(key));
    if let Ok(v) = HeaderValue::from_str(&httpdate(info.modified)) {
        h.insert(header::LAST_MODIFIED, v);
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; media-src 'self'; style-src 'unsafe-inline'; sandbox",
        ),
    );
    match range {
        Some(r) => {
            *res.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = res.headers_mut();
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(r.size()));
            h.insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes {}-{}/{}", r.start, r.end, info.size))
                    .expect("valid header"),
            );
        }
        None => {
            res.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(info.size));
        }
    }
    res
}

/// A download's body that reports, once it ends (sent whole, failed, or dropped because the
/// client went away), the download's summary line and metrics.
struct Counted {
    body: ByteStream<'static>,
    metrics: Arc<crate::ops::metrics::Metrics>,
    key: String,
    started: std::time::Instant,
    sent: u64,
    expected: u64,
    error: Option<String>,
}

impl Counted {
    fn new(body: ByteStream<'static>, state: &AppState, key: &str, expected: u64) -> Self {
        Self {
            body,
            metrics: state.metrics.clone(),
            key: key.to_string(),
            started: std::time::Instant::now(),
            sent: 0,
            expected,
            error: None,
        }
    }
}

impl futures::Stream for Counted {
    type Item = std::io::Result<Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let polled = self.body.as_mut().poll_next(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(chunk))) => self.sent += chunk.len() as u64,
            std::task::Poll::Ready(Some(Err(e))) => self.error = Some(e.to_string()),
            _ => {}
        }
        polled
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        let short = (self.error.is_none() && self.sent < self.expected).then(|| {
            format!(
                "the client went away after {} of {} bytes",
                self.sent, self.expected
            )
        });
        let error = self.error.take().or(short);
        crate::ops::outcomes::finished(
            &self.metrics,
            &Finished {
                operation: Operation::Download,
                trigger: Trigger::Api,
                key: &self.key,
                started: self.started,
                size: Some(self.sent),
                entries: None,
                error: error.as_deref(),
            },
        );
    }
}

/// PocketBase's `Cache-Control` on downloads (`tools/filesystem`'s `Serve`).
const DOWNLOAD_CACHE_CONTROL: &str = "max-age=2592000, stale-while-revalidate=86400";

/// GET /api/backups/upload: PocketBase serves the key `upload` there like any other.
pub async fn download_upload_key(
    method: axum::http::Method,
    state: State<AppState>,
    query: super::LenientQuery<DownloadQuery>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    download(
        method,
        state,
        super::KeyPath(keys::BackupKey::parse("upload").ok()),
        query,
        peer,
        headers,
    )
    .await
}

/// What RFC 5987 escapes in a `filename*` value: all but its unreserved characters.
const RFC5987_ESCAPED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `attachment; filename="KEY"`, plus an RFC 5987 `filename*` for non-ASCII keys.
fn content_disposition(key: &str) -> HeaderValue {
    let ascii: String = key
        .chars()
        .map(|c| {
            if c.is_ascii() && c != '"' && c != '\\' && !c.is_ascii_control() {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut v = format!("attachment; filename=\"{ascii}\"");
    if !key.is_ascii() {
        let encoded = percent_encoding::utf8_percent_encode(key, RFC5987_ESCAPED);
        v.push_str(&format!("; filename*=UTF-8''{encoded}"));
    }
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

/// `Last-Modified`'s format (RFC 9110's IMF-fixdate).
/// Clamped to what the format holds (1970 to 9999): a file's time can be anything.
fn httpdate(t: time::OffsetDateTime) -> String {
    let last = time::macros::datetime!(9999-12-31 23:59:59 UTC);
    let t = t.clamp(time::OffsetDateTime::UNIX_EPOCH, last);
    httpdate::fmt_http_date(t.into())
}

#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    /// Malformed or multi-range: serve the whole object (RFC 9110 allows it).
    Ignore,
    Range(ByteRange),
    Unsatisfiable,
}

/// Parses a single `bytes=` range against an object of `size` bytes. By hand: no crate in
/// the tree parses `Range` (axum-extra's `headers` would add one for these 40 lines), and
/// the gateway serves single ranges only, as PocketBase's S3 reads do.
fn parse_range(raw: &str, size: u64) -> RangeSpec {
    let Some(spec) = raw.trim().strip_prefix("bytes=") else {
        return RangeSpec::Ignore;
    };
    if spec.contains(',') {
        return RangeSpec::Ignore;
    }
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeSpec::Ignore;
    };
    let (a, b) = (a.trim(), b.trim());
    let parsed = match (a.is_empty(), b.is_empty()) {
        (true, true) => return RangeSpec::Ignore,
        (true, false) => {
            // Suffix: the last N bytes.
            let Ok(n) = b.parse::<u64>() else {
                return RangeSpec::Ignore;
            };
            if n == 0 || size == 0 {
                return RangeSpec::Unsatisfiable;
            }
            (size.saturating_sub(n), size - 1)
        }
        (false, _) => {
            let Ok(start) = a.parse::<u64>() else {
                return RangeSpec::Ignore;
            };
            let end = if b.is_empty() {
                u64::MAX
            } else {
                match b.parse::<u64>() {
                    Ok(e) if e >= start => e,
                    _ => return RangeSpec::Ignore,
                }
            };
            if start >= size {
                return RangeSpec::Unsatisfiable;
            }
            (start, end.min(size - 1))
        }
    };
    RangeSpec::Range(ByteRange {
        start: parsed.0,
        end: parsed.1,
    })
}

/// The download's body. A span larger than one [`RANGE_CHUNK`] is fetched as parallel
/// ranged reads (the first one awaited here, so that a missing or unreadable object still
/// gets an error response rather than a truncated body).
async fn read_body(
    state: &AppState,
    store: Arc<dyn crate::storage::BackupStore>,
    key: &str,
    range: Option<ByteRange>,
    size: u64,
) -> Result<ByteStream<'static>, StorageError> {
    let span = range.map_or(0..size, |r| r.start..r.end + 1);
    if span.is_empty() {
        return store.get(key, range).await;
    }
    if span.end - span.start <= RANGE_CHUNK {
        let whole = ByteRange {
            start: span.start,
            end: span.end - 1,
        };
        let first = store.get(key, Some(whole)).await?;
        return Ok(crate::storage::resuming(
            store,
            key.to_string(),
            whole,
            first,
        ));
    }
    let first = ByteRange {
        start: span.start,
        end: span.start + RANGE_CHUNK - 1,
    };
    let reserved = state.budget.reserve(first.size()).await;
    let head = reserved.attach(read_range(store.as_ref(), key, first).await?);
    let rest = parallel_reads(
        store,
        key.to_string(),
        first.end + 1..span.end,
        state.budget.clone(),
    );
    Ok(Box::pin(
        futures::stream::once(async move { Ok(head) }).chain(rest),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(start: u64, end: u64) -> RangeSpec {
        RangeSpec::Range(ByteRange { start, end })
    }

    #[test]
    fn ranges_are_parsed_like_http_servers_do() {
        assert_eq!(parse_range("bytes=0-9", 100), r(0, 9));
        assert_eq!(parse_range("bytes=90-", 100), r(90, 99));
        assert_eq!(parse_range("bytes=90-1000", 100), r(90, 99));
        assert_eq!(parse_range("bytes=-10", 100), r(90, 99));
        assert_eq!(parse_range("bytes=-1000", 100), r(0, 99));
        assert_eq!(parse_range("bytes=100-", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=-0", 100), RangeSpec::Unsatisfiable);
        assert_eq!(parse_range("bytes=5-1", 100), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=0-1,5-6", 100), RangeSpec::Ignore);
        assert_eq!(parse_range("items=0-1", 100), RangeSpec::Ignore);
        assert_eq!(parse_range("bytes=x-1", 100), RangeSpec::Ignore);
    }

    #[test]
    fn content_disposition_quotes_safely() {
        assert_eq!(
            content_disposition("a.zip"),
            "attachment; filename=\"a.zip\""
        );
        let v = content_disposition("é.zip");
        assert_eq!(
            v.to_str().unwrap(),
            "attachment; filename=\"_.zip\"; filename*=UTF-8''%C3%A9.zip"
        );
    }
}
