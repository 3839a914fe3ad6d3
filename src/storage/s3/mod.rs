//! Backups in an S3-compatible bucket (AWS S3, MinIO, R2, B2, Garage, Ceph, ...).
//!
//! The client is set up for S3-compatible stores: request checksums and response checksum
//! validation only when an operation requires them (several stores reject the SDK's default
//! aws-chunked checksum trailers), path-style addressing on request, and an explicit
//! `Content-Length` on every request body. Upload bodies are signed (SigV4 payload SHA-256)
//! over plain HTTP and sent as `UNSIGNED-PAYLOAD` over HTTPS, where TLS protects them: the
//! hash is about 40% of the gateway's CPU for an upload, and the store computes it again
//! ([`PayloadSigning`]).
//!
//! A put reads the body into fixed-size parts (every part but the last has exactly the part
//! size: R2 requires it) and uploads a bounded number of them at once, so memory stays
//! under part size x (parts in flight + 1). A body that fits in one part becomes a single
//! PutObject. Any failure, and a dropped put future, aborts the multipart upload, so a
//! half-written backup is never listed. Started uploads are recorded in the gateway's state
//! directory until completed or aborted; the ones a crash (or an unreachable store) left
//! behind are aborted at the next start.

mod client;
mod multipart;
mod pending;

pub use client::{PayloadSigning, S3Config};
pub use multipart::finish_aborts;

use super::{BackupInfo, BackupStore, ByteRange, ByteStream, PutOptions, Result, StorageError};
use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use client::{map_sdk, sdk_reason};
use multipart::PartReader;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Attempts per store call, the first included (the SDK's standard retry mode: exponential
/// backoff with jitter from 1 s, throttling errors such as `503 SlowDown` included).
pub const MAX_ATTEMPTS: u32 = 5;

#[derive(Debug, Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
    prefix: String,
    /// Whether upload bodies are covered by the signature (see the module docs).
    sign_payload: bool,
    /// Where started multipart uploads are recorded until completed or aborted, so that
    /// uploads a crash left behind are aborted at the next start.
    pending_dir: Option<PathBuf>,
    /// Whether writes carry `If-None-Match: *` (cleared for good when the store answers
    /// `501 Not Implemented` to it).
    conditional: Arc<std::sync::atomic::AtomicBool>,
    /// Whether parts may be copied from another object (`UploadPartCopy`): not on
    /// Cloudflare R2, which requires every part but the last to have the same size.
    copies: bool,
    /// Listings sent at once ([`LISTS_AT_ONCE`]).
    lists: Arc<tokio::sync::Semaphore>,
}

/// Listings of the bucket sent at once, however many clients list: each holds a connection
/// to the store and its answer's buffers, so 200 clients listing at once took the process
/// 20 MiB over its memory target (bench/README.md, load step). A listing waits for its turn
/// instead; each takes milliseconds.
pub const LISTS_AT_ONCE: usize = 4;

/// True for an endpoint of Cloudflare R2.
pub(super) fn is_r2(endpoint: Option<&str>) -> bool {
    endpoint.is_some_and(|e| e.to_ascii_lowercase().contains(".r2.cloudflarestorage.com"))
}

impl S3Store {
    /// PocketBase's S3 test (`POST /api/settings/test/s3`): writes
    /// `pb_settings_test_<random>/test.txt` under the prefix, lists that folder and deletes
    /// what it holds.
    ///
    /// # Errors
    /// PocketBase's wording, with the store's error code and message (never a credential).
    pub async fn probe(&self) -> std::result::Result<(), String> {
        let dir = format!(
            "{}pb_settings_test_{}",
            self.prefix,
            crate::util::fsutil::random_string(5)
        );
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(format!("{dir}/test.txt"))
            .content_length(4)
            .body(SdkBody::from_static(b"test"))
            .send()
            .await
            .map_err(|e| format!("failed to upload a test file: {}", sdk_reason(&e)))?;
        let deleting = |e: &dyn std::fmt::Display| format!("failed to delete a test file: {e}");
        let listed = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{dir}/"))
            .send()
            .await
            .map_err(|e| deleting(&sdk_reason(&e)))?;
        for object in listed.contents() {
            if let Some(key) = object.key() {
                self.client
                    .delete_object()
                    .bucket(&self.bucket)
                    .key(key)
                    .send()
                    .await
                    .map_err(|e| deleting(&sdk_reason(&e)))?;
            }
        }
        Ok(())
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    fn object_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// Every object whose key (under the store's prefix) starts with `prefix`, page after
    /// page, to `f` with that key; with `delimiter`, what lies in "folders" is left out. One
    /// of the store's few listings at a time (`lists`).
    async fn each_object(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        what: &str,
        mut f: impl FnMut(&str, &aws_sdk_s3::types::Object),
    ) -> Result<()> {
        let _turn = self.lists.acquire().await.expect("never closed");
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(self.object_key(prefix))
            .set_delimiter(delimiter.map(str::to_string))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_sdk(what, e))?;
            for obj in page.contents() {
                if let Some(key) = obj.key().and_then(|k| k.strip_prefix(&self.prefix)) {
                    f(key, obj);
                }
            }
        }
        Ok(())
    }

    async fn head(
        &self,
        object_key: &str,
    ) -> Result<Option<(u64, time::OffsetDateTime, Option<String>)>> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(object_key)
            .send()
            .await
        {
            Ok(out) => Ok(Some((
                out.content_length().unwrap_or(0).max(0) as u64,
                to_time(out.last_modified()),
                out.e_tag().map(str::to_string),
            ))),
            Err(e) => match map_sdk("reading a backup's metadata", e) {
                StorageError::NotFound => Ok(None),
                other => Err(other),
            },
        }
    }
}

fn to_time(t: Option<&aws_smithy_types::DateTime>) -> time::OffsetDateTime {
    t.and_then(|t| {
        time::OffsetDateTime::from_unix_timestamp_nanos(
            i128::from(t.secs()) * 1_000_000_000 + i128::from(t.subsec_nanos()),
        )
        .ok()
    })
    .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

#[async_trait::async_trait]
impl BackupStore for S3Store {
    #[tracing::instrument(skip(self))]
    async fn list(&self) -> Result<Vec<BackupInfo>> {
        let mut out = Vec::new();
        // Backups never hold `/`: whatever lies in "folders" (the point-in-time history
        // under `.pitr/`) is not paged through.
        self.each_object("", Some("/"), "listing backups", |key, obj| {
            if crate::keys::check_key(key).is_err() {
                return; // names the API could not address
            }
            out.push(BackupInfo {
                key: key.to_string(),
                size: obj.size().unwrap_or(0).max(0) as u64,
                modified: to_time(obj.last_modified()),
                etag: obj.e_tag().map(str::to_string),
            });
        })
        .await?;
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    async fn stat(&self, key: &str) -> Result<Option<BackupInfo>> {
        Ok(self
            .head(&self.object_key(key))
            .await?
            .map(|(size, modified, etag)| BackupInfo {
                key: key.to_string(),
                size,
                modified,
                etag,
            }))
    }

    #[tracing::instrument(skip(self, body, opts), fields(key = %key))]
    async fn put(&self, key: &str, body: ByteStream<'_>, opts: PutOptions) -> Result<u64> {
        let object_key = self.object_key(key);
        if self.head(&object_key).await?.is_some() {
            return Err(StorageError::AlreadyExists);
        }
        let mut parts = PartReader::new(body, &opts);
        let first = parts.next_part().await?.unwrap_or_default();
        if opts.copy.is_none() && parts.finished() {
            let size = first.len() as u64;
            let put = |conditional: bool| {
                let req = self
                    .client
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&object_key)
                    .content_type("application/zip")
                    .content_length(first.len() as i64)
                    .body(SdkBody::from(first.clone()));
                let req = if conditional {
                    req.if_none_match("*")
                } else {
                    req
                };
                let mut req = req.customize();
                if !self.sign_payload {
                    req = req.disable_payload_signing();
                }
                req.send()
            };
            let done = self
                .send_conditional(put)
                .await
                .map_err(|e| map_sdk("storing a backup", e))?;
            self.confirm_stored(&object_key, done.e_tag()).await?;
            return Ok(size);
        }
        self.put_multipart(&object_key, first, &mut parts, opts)
            .await
    }

    async fn put_object(&self, key: &str, body: bytes::Bytes) -> Result<()> {
        let len = i64::try_from(body.len()).unwrap_or(i64::MAX);
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(self.object_key(key))
            .content_type("application/octet-stream")
            .content_length(len)
            .body(SdkBody::from(body))
            .customize();
        if !self.sign_payload {
            req = req.disable_payload_signing();
        }
        req.send()
            .await
            .map_err(|e| map_sdk("storing an object", e))?;
        Ok(())
    }

    async fn list_under(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        self.each_object(prefix, None, "listing objects", |key, obj| {
            out.push((key.to_string(), obj.size().unwrap_or(0).max(0) as u64));
        })
        .await?;
        out.sort();
        Ok(out)
    }

    async fn delete_objects(&self, keys: &[String]) -> Result<()> {
        use aws_sdk_s3::types::{Delete, ObjectIdentifier};
        // DeleteObjects takes at most 1,000 keys.
        for chunk in keys.chunks(1000) {
            let objects = chunk
                .iter()
                .map(|k| ObjectIdentifier::builder().key(self.object_key(k)).build())
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|e| StorageError::backend("deleting objects", e))?;
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| StorageError::backend("deleting objects", e))?;
            let out = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| map_sdk("deleting objects", e))?;
            if let Some(e) = out.errors().first() {
                return Err(StorageError::Backend(
                    format!(
                        "deleting {}: {}",
                        e.key().unwrap_or_default(),
                        e.message().unwrap_or_default()
                    ),
                    None,
                ));
            }
        }
        Ok(())
    }

    async fn get(&self, key: &str, range: Option<ByteRange>) -> Result<ByteStream<'static>> {
        let mut req = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(self.object_key(key));
        if let Some(r) = range {
            req = req.range(format!("bytes={}-{}", r.start, r.end));
        }
        let out = req
            .send()
            .await
            .map_err(|e| map_sdk("reading a backup", e))?;
        let body = futures::stream::try_unfold(out.body, |mut body| async move {
            match body.try_next().await {
                Ok(Some(chunk)) => Ok(Some((chunk, body))),
                Ok(None) => Ok(None),
                Err(e) => Err(io::Error::other(e)),
            }
        });
        Ok(Box::pin(body))
    }

    #[tracing::instrument(skip(self), fields(key = %key))]
    async fn delete(&self, key: &str) -> Result<()> {
        let object_key = self.object_key(key);
        if self.head(&object_key).await?.is_none() {
            return Err(StorageError::NotFound);
        }
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(&object_key)
            .send()
            .await
            .map_err(|e| map_sdk("deleting a backup", e))?;
        Ok(())
    }

    fn describe(&self) -> String {
        format!("s3 bucket {} prefix {:?}", self.bucket, self.prefix)
    }

    fn copies(&self) -> bool {
        self.copies
    }
}
