//! The Backups API: list, create, upload, download, delete and restore, with PocketBase's
//! status codes, messages and validation codes (PocketBase 0.40, `apis/backup*.go`).

use crate::AppState;
use crate::auth::{SuperuserAuth, TokenType};
use crate::error::{ApiError, FieldError};
use crate::jobs::JobKind;
use crate::keys;
use crate::metrics::Operation;
use crate::outcomes::Finished;
use crate::progress::Trigger;
use crate::restore::StartError;
use crate::storage::{
    ByteRange, ByteStream, PutOptions, RANGE_CHUNK, StorageError, parallel_reads, read_range,
};
use axum::Json;
use axum::body::Body;
use axum::extract::{Multipart, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

const MSG_BUSY: &str = "Try again later - another backup/restore process has already been started.";
const MSG_IN_USE: &str = "The backup is currently being used and cannot be deleted.";
const MSG_DELETE_MISSING: &str = "Invalid or already deleted backup file.";
const MSG_FORBIDDEN: &str = "Insufficient permissions to access the resource.";

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
                modified: crate::time_fmt::pb(b.modified),
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

fn name_exists(field: &'static str, message: &'static str) -> ApiError {
    ApiError::validation([(
        field,
        FieldError::new("validation_backup_name_exists", message),
    )])
}

/// What a handler was doing with the store, for [`store_failure`].
#[derive(Debug, Clone, Copy)]
enum Op {
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

const EXISTS: &str = "The backup file name is invalid or already exists.";
/// PocketBase's answer to a store failure during `op` (the cause is logged, never sent).
fn store_failure(op: Op, e: &StorageError) -> ApiError {
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
    let job = state
        .jobs
        .try_start(JobKind::Create, Trigger::Api, &name)
        .ok_or_else(|| ApiError::bad_request(MSG_BUSY))?;
    let _key = state
        .jobs
        .reserve_key(&name)
        .ok_or_else(|| name_exists("name", EXISTS))?;
    let store = state.store();
    let result = match store.stat(&name).await {
        Ok(Some(_)) => return Err(name_exists("name", EXISTS)),
        Ok(None) => crate::backup::create(&state, store.as_ref(), &name, job.progress()).await,
        Err(e) => Err(crate::backup::CreateError::Storage(e)),
    };
    let error = result
        .as_ref()
        .err()
        .map(|e| crate::error::ErrorChain(e).to_string());
    let finished = Finished::create(
        job.progress(),
        result.as_ref().ok().copied(),
        error.as_deref(),
    );
    crate::outcomes::finished(&state.metrics, &finished);
    state
        .outcomes
        .create
        .set(finished.outcome(job.progress().started_at()));
    drop(job);
    if result.is_ok()
        && state
            .settings
            .current()
            .backups
            .verify_after_create()
            .covers(Trigger::Api)
    {
        // After the answer: the archive is stored whatever the verify finds.
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::verify::verify(&state, &name, Trigger::Api, true).await {
                tracing::warn!(key = %name, error = %e, "the verify after the create did not run");
            }
        });
    }
    match result {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(crate::backup::CreateError::Storage(e)) => Err(store_failure(Op::Create, &e)),
        Err(crate::backup::CreateError::Database(e)) => {
            // The application's own file: its relative path and SQLite's reason help the
            // operator and leak nothing of the server.
            Err(
                ApiError::bad_request("Failed to create backup.").with_field(
                    "database",
                    FieldError::new("validation_database_unreadable", e.to_string()),
                ),
            )
        }
        Err(e) => Err(ApiError::failed("Failed to create backup.", &e)),
    }
}

const EXISTS_UPLOAD: &str = "Backup file with the specified name already exists.";

/// POST /api/backups/upload
///
/// Streams the multipart `file` into the store: no whole-file buffer in memory or on disk.
/// The key is the file name without any path.
pub async fn upload(
    State(state): State<AppState>,
    _auth: SuperuserAuth,
    request: Request,
) -> Response {
    use axum::extract::FromRequest;
    let Ok(mut multipart) = Multipart::from_request(request, &state).await else {
        return ApiError::validation([("file", FieldError::required())]).into_response();
    };
    // What a refusal leaves unread is drained by `edge::drain_unread_body`.
    match receive_upload(&state, &mut multipart).await {
        Ok(status) => status.into_response(),
        Err(err) => err.into_response(),
    }
}

async fn receive_upload(
    state: &AppState,
    multipart: &mut Multipart,
) -> Result<StatusCode, ApiError> {
    let (field, file_name) = loop {
        match multipart.next_field().await {
            Ok(Some(f)) if f.name() == Some("file") => {
                if let Some(name) = part_file_name(&f) {
                    break (f, name);
                }
            }
            Ok(Some(_)) => continue,
            Ok(None) => return Err(ApiError::validation([("file", FieldError::required())])),
            Err(_) => return Err(ApiError::load_failed()),
        }
    };
    // Refused (in PocketBase's order, after the type check) by `check_upload`.
    let key = keys::BackupKey::parse(keys::upload_key(&file_name));
    let mut body: ByteStream<'_> = Box::pin(field.map_err(std::io::Error::other));

    // The first bytes, for the mime check.
    let mut head = Vec::new();
    while head.len() < 4 {
        match body.next().await {
            Some(Ok(chunk)) => head.extend_from_slice(&chunk),
            Some(Err(_)) => return Err(ApiError::load_failed()),
            None => break,
        }
    }
    let store = state.store();
    let (key, _reserved) = check_upload(state, store.as_ref(), &file_name, key, &head).await?;
    let first = futures::stream::once(async move { Ok(Bytes::from(head)) });
    let opts = PutOptions {
        part_size: state.config.part_size,
        parts_in_flight: state.config.parts_in_flight,
        budget: state.budget.clone(),
        copy: None,
    };
    let (started, started_at) = (std::time::Instant::now(), crate::time_fmt::now_pb());
    let put = store.put(&key, Box::pin(first.chain(body)), opts).await;
    let error = put
        .as_ref()
        .err()
        .map(|e| crate::error::ErrorChain(e).to_string());
    let finished = Finished {
        operation: Operation::Upload,
        trigger: Trigger::Api,
        key: &key,
        started,
        size: put.as_ref().ok().copied(),
        entries: None,
        error: error.as_deref(),
    };
    crate::outcomes::finished(&state.metrics, &finished);
    state.outcomes.upload.set(finished.outcome(&started_at));
    match put {
        Ok(_) => Ok(StatusCode::NO_CONTENT),
        Err(e) => Err(store_failure(Op::Upload, &e)),
    }
}

/// A part's file name as Go's `multipart` reads it: RFC 2231's `filename*` (UTF-8 or
/// US-ASCII, percent-decoded) over `filename`; `None` for a part that is not a file.
fn part_file_name(field: &axum::extract::multipart::Field<'_>) -> Option<String> {
    let extended = field
        .headers()
        .get(header::CONTENT_DISPOSITION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.split(';')
                .filter_map(|p| p.trim().split_once('='))
                .find(|(k, _)| k.trim().eq_ignore_ascii_case("filename*"))
                .and_then(|(_, value)| decode_rfc2231(value.trim().trim_matches('"')))
        });
    extended
        .or_else(|| field.file_name().map(str::to_string))
        .filter(|n| !n.is_empty())
}

/// `charset'language'percent-encoded`, for the charsets Go decodes.
fn decode_rfc2231(value: &str) -> Option<String> {
    let mut parts = value.splitn(3, '\'');
    let (charset, _lang, encoded) = (parts.next()?, parts.next()?, parts.next()?);
    if !charset.eq_ignore_ascii_case("utf-8") && !charset.eq_ignore_ascii_case("us-ascii") {
        return None;
    }
    let bytes: Vec<u8> = percent_decode(encoded)?;
    String::from_utf8(bytes).ok()
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// PocketBase's checks, in its order: a zip (detected from the first bytes: a local file
/// header, or the end record of an empty zip), then the name. Returns the key and its
/// reservation.
async fn check_upload(
    state: &AppState,
    store: &dyn crate::storage::BackupStore,
    file_name: &str,
    key: Result<keys::BackupKey, keys::KeyError>,
    head: &[u8],
) -> Result<(keys::BackupKey, crate::jobs::KeyGuard), ApiError> {
    if !(head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06")) {
        return Err(ApiError::validation([(
            "file",
            FieldError::new(
                "validation_invalid_mime_type",
                format!(
                    "{:?} mime type must be one of: application/zip.",
                    keys::pocketbase_upload_name(file_name, head)
                ),
            ),
        )]));
    }
    let Ok(key) = key else {
        return Err(ApiError::validation([(
            "file",
            FieldError::new(
                "validation_invalid_file_name",
                "The backup file name is invalid.",
            ),
        )]));
    };
    let guard = state
        .jobs
        .reserve_key(&key)
        .ok_or_else(|| name_exists("file", EXISTS_UPLOAD))?;
    let existing = store
        .stat(&key)
        .await
        .map_err(|e| store_failure(Op::Upload, &e))?;
    if existing.is_some() {
        return Err(name_exists("file", EXISTS_UPLOAD));
    }
    Ok((key, guard))
}

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
    metrics: Arc<crate::metrics::Metrics>,
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
        crate::outcomes::finished(
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
        let encoded: String = key
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        v.push_str(&format!("; filename*=UTF-8''{encoded}"));
    }
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

fn httpdate(t: time::OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    t.format(time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    ))
    .unwrap_or_default()
}

#[derive(Debug, PartialEq, Eq)]
enum RangeSpec {
    /// Malformed or multi-range: serve the whole object (RFC 9110 allows it).
    Ignore,
    Range(ByteRange),
    Unsatisfiable,
}

/// Parses a single `bytes=` range against an object of `size` bytes.
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

const MSG_RESTORE_INVALID: &str = "Missing or invalid backup file.";

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
