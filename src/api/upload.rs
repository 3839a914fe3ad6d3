//! `POST /api/backups/upload`: a multipart `file` streamed into the store, with PocketBase's
//! checks in its order (a zip, then the name) and RFC 2231 file names as Go reads them.

use super::backups::{EXISTS_UPLOAD, Op, name_exists, store_failure};
use crate::AppState;
use crate::auth::SuperuserAuth;
use crate::error::{ApiError, FieldError};
use crate::keys;
use crate::ops::metrics::Operation;
use crate::ops::outcomes::Finished;
use crate::ops::progress::Trigger;
use crate::storage::{ByteStream, PutOptions};
use axum::extract::{Multipart, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

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
    let (started, started_at) = (std::time::Instant::now(), crate::util::time_fmt::now_pb());
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
    crate::ops::outcomes::finished(&state.metrics, &finished);
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
    // Go refuses a malformed escape (and with it the extended name): so does this.
    let well_formed = encoded.split('%').skip(1).all(|s| {
        s.as_bytes()
            .get(..2)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
    });
    if !well_formed {
        return None;
    }
    let bytes: Vec<u8> = percent_encoding::percent_decode_str(encoded).collect();
    String::from_utf8(bytes).ok()
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
) -> Result<(keys::BackupKey, crate::ops::jobs::KeyGuard), ApiError> {
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
