//! Backups in an S3-compatible bucket (AWS S3, MinIO, R2, B2, Garage, Ceph, ...).
//!
//! The client is set up for S3-compatible stores: request checksums and response checksum
//! validation only when an operation requires them (several stores reject the SDK's default
//! aws-chunked checksum trailers), path-style addressing on request, and an explicit
//! `Content-Length` on every request body. Upload bodies are signed (SigV4 payload SHA-256)
//! over plain HTTP and sent as `UNSIGNED-PAYLOAD` over HTTPS, where TLS protects them: the
//! hash is about 40% of the gateway's CPU for an upload, and the store computes it again
//! ([`crate::config::PayloadSigning`]).
//!
//! A put reads the body into fixed-size parts (every part but the last has exactly the part
//! size: R2 requires it) and uploads a bounded number of them at once, so memory stays
//! under part size x (parts in flight + 1). A body that fits in one part becomes a single
//! PutObject. Any failure, and a dropped put future, aborts the multipart upload, so a
//! half-written backup is never listed. Started uploads are recorded in the gateway's state
//! directory until completed or aborted; the ones a crash (or an unreachable store) left
//! behind are aborted at the next start.

use super::{BackupInfo, BackupStore, ByteRange, ByteStream, PutOptions, Result, StorageError};
use crate::bufpool::BufPool;
use crate::config::S3Config;
use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

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
}

/// True for an endpoint of Cloudflare R2.
fn is_r2(endpoint: Option<&str>) -> bool {
    endpoint.is_some_and(|e| e.to_ascii_lowercase().contains(".r2.cloudflarestorage.com"))
}

/// A started multipart upload, as recorded in the pending directory.
#[derive(Debug, Serialize, Deserialize)]
struct PendingUpload {
    key: String,
    upload_id: String,
    /// The store's bucket (several stores may record here over time, as settings change);
    /// empty in records of older versions.
    #[serde(default)]
    bucket: String,
}

impl S3Store {
    /// Builds the client from `cfg` and the standard AWS configuration chain.
    pub async fn new(cfg: &S3Config) -> Self {
        Self::build(cfg, None).await
    }

    /// [`Self::new`], with every request counted in `metrics`.
    pub async fn metered(cfg: &S3Config, metrics: crate::metrics::StoreMetrics) -> Self {
        Self::build(cfg, Some(metrics)).await
    }

    async fn build(cfg: &S3Config, metrics: Option<crate::metrics::StoreMetrics>) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        // An explicit region, else the standard chain; but with a custom endpoint (MinIO,
        // R2, ...) and no region in the environment, skip the chain's instance-metadata
        // lookup, which only times out off AWS.
        let env_region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|r| !r.is_empty()));
        let region = cfg
            .region
            .clone()
            .or(env_region)
            .or_else(|| cfg.endpoint.is_some().then(|| "us-east-1".to_string()));
        if let Some(region) = region {
            loader = loader.region(Region::new(region));
        }
        if let Some((key, secret)) = &cfg.credentials {
            loader = loader.credentials_provider(Credentials::new(
                key.clone(),
                secret.clone(),
                None,
                None,
                "backup-gateway-static",
            ));
        }
        let shared = loader.load().await;
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(cfg.force_path_style)
            // Five attempts (the SDK's default is three): a store that throttles or drops
            // one request in ten still completes every operation (tests/api/flaky.rs).
            .retry_config(
                aws_config::retry::RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS),
            )
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .read_timeout(cfg.read_timeout)
                    .build(),
            );
        if shared.region().is_none() {
            builder = builder.region(Region::new("us-east-1"));
        }
        if let Some(endpoint) = &cfg.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        if let Some(metrics) = metrics {
            builder = builder.interceptor(Counted(metrics));
        }
        Self {
            client: Client::from_conf(builder.build()),
            bucket: cfg.bucket.clone(),
            prefix: cfg.prefix.clone(),
            sign_payload: cfg.payload_signing.signs(cfg.endpoint.as_deref()),
            pending_dir: None,
            conditional: Arc::new(std::sync::atomic::AtomicBool::new(true)),
            copies: !is_r2(cfg.endpoint.as_deref()),
        }
    }

    /// Sends a write built by `send(conditional)`: with `If-None-Match: *` while the store
    /// takes it, and once more without it when the store answers `501` (some S3-compatible
    /// stores do not implement conditional writes; the in-process key reservation is then
    /// the only guard, and later writes go without the header).
    async fn send_conditional<F, Fut, T, E>(
        &self,
        send: F,
    ) -> std::result::Result<T, SdkError<E, aws_smithy_runtime_api::http::Response>>
    where
        F: Fn(bool) -> Fut,
        Fut: std::future::Future<
                Output = std::result::Result<
                    T,
                    SdkError<E, aws_smithy_runtime_api::http::Response>,
                >,
            >,
        E: ProvideErrorMetadata,
    {
        use std::sync::atomic::Ordering::Relaxed;
        if !self.conditional.load(Relaxed) {
            return send(false).await;
        }
        let done = send(true).await;
        let refused = done.as_ref().err().is_some_and(|e| {
            e.raw_response().map(|r| r.status().as_u16()) == Some(501)
                || e.code() == Some("NotImplemented")
        });
        if !refused {
            return done;
        }
        tracing::warn!("the store does not implement If-None-Match; writes go without it");
        self.conditional.store(false, Relaxed);
        send(false).await
    }

    /// Checks that `object_key` still holds what a write just stored there (`etag`, from the
    /// store's answer to it). SeaweedFS checks `If-None-Match: *` before a write but not
    /// atomically with another one running at the same moment (docs/seaweedfs.md): two
    /// writers of a key (two gateways on one bucket) can both succeed, the later replacing
    /// the earlier. The earlier then finds another ETag here and reports the key taken,
    /// instead of a backup that is not in the store. A look that fails, or finds the key
    /// deleted meanwhile, does not undo a write the store accepted.
    ///
    /// # Errors
    /// [`StorageError::AlreadyExists`] when another object replaced the one written.
    async fn confirm_stored(&self, object_key: &str, etag: Option<&str>) -> Result<()> {
        fn bare(etag: &str) -> String {
            etag.trim_start_matches("W/")
                .trim_matches('"')
                .to_ascii_lowercase()
        }
        let Some(ours) = etag else {
            return Ok(());
        };
        match self.head(object_key).await {
            Ok(Some((_, _, Some(stored)))) if bare(&stored) != bare(ours) => {
                tracing::warn!(
                    key = object_key,
                    "another writer replaced the object just written (the store's If-None-Match is not atomic)"
                );
                Err(StorageError::AlreadyExists)
            }
            Ok(_) => Ok(()),
            Err(e) => {
                tracing::warn!(key = object_key, error = %e, "cannot confirm a write");
                Ok(())
            }
        }
    }

    /// Records started multipart uploads in `dir` and aborts the ones a crash left there.
    pub async fn with_pending_dir(mut self, dir: PathBuf) -> Self {
        if let Ok(mut rd) = tokio::fs::read_dir(&dir).await {
            while let Ok(Some(entry)) = rd.next_entry().await {
                let path = entry.path();
                let Ok(bytes) = tokio::fs::read(&path).await else {
                    continue;
                };
                if let Ok(p) = serde_json::from_slice::<PendingUpload>(&bytes) {
                    if !p.bucket.is_empty() && p.bucket != self.bucket {
                        continue; // Another store's: aborted when that store is opened.
                    }
                    tracing::warn!(key = %p.key, "aborting a multipart upload left by a crash");
                    if abort(self.client.clone(), self.bucket.clone(), p.key, p.upload_id).await {
                        let _ = tokio::fs::remove_file(&path).await;
                    }
                } else {
                    let _ = tokio::fs::remove_file(&path).await;
                }
            }
        }
        self.pending_dir = Some(dir);
        self
    }

    fn record_pending(&self, key: &str, upload_id: &str) -> Option<PathBuf> {
        let dir = self.pending_dir.as_ref()?;
        let path = dir.join(format!("{}.json", crate::fsutil::random_string(16)));
        let rec = PendingUpload {
            key: key.to_string(),
            upload_id: upload_id.to_string(),
            bucket: self.bucket.clone(),
        };
        let bytes = serde_json::to_vec(&rec).unwrap_or_default();
        match crate::fsutil::write_atomic(&path, &bytes, 0o600) {
            Ok(()) => Some(path),
            Err(e) => {
                tracing::warn!(error = %e, "cannot record a pending multipart upload");
                None
            }
        }
    }

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
            crate::fsutil::random_string(5)
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

    async fn put_multipart(
        &self,
        object_key: &str,
        first: Bytes,
        parts: &mut PartReader<'_>,
        opts: PutOptions,
    ) -> Result<u64> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(object_key)
            .content_type("application/zip")
            .send()
            .await
            .map_err(|e| map_sdk("starting a multipart upload", e))?;
        let upload_id = created
            .upload_id()
            .ok_or_else(|| StorageError::Backend("no upload id from the store".into(), None))?
            .to_string();
        let mut guard = AbortGuard {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key: object_key.to_string(),
            upload_id: Some(upload_id.clone()),
            record: self.record_pending(object_key, &upload_id),
        };
        let mut in_flight = JoinSet::new();
        let started = std::time::Instant::now();
        // The copies run beside the upload of the rest: the store copies while the gateway
        // zips and uploads, and a failed copy stops both.
        let copies = opts.copy.as_ref().map_or(0, |c| c.ranges.len());
        let copying = async {
            match &opts.copy {
                Some(copy) => self.copy_parts(object_key, &upload_id, copy, &opts).await,
                None => Ok(Vec::new()),
            }
        };
        let uploading = self.upload_parts(
            object_key,
            &upload_id,
            first,
            parts,
            copies as i32,
            opts.clone(),
            &mut in_flight,
        );
        let result = tokio::try_join!(copying, uploading).map(|(copied, (size, mut completed))| {
            let size = size + copied.iter().map(|(_, n)| n).sum::<u64>();
            completed.extend(copied.into_iter().map(|(p, _)| p));
            completed.sort_by_key(|p| p.part_number());
            (size, completed)
        });
        match result {
            Ok((size, completed)) => {
                let uploaded = started.elapsed();
                let count = completed.len();
                let complete = |conditional: bool| {
                    let req = self
                        .client
                        .complete_multipart_upload()
                        .bucket(&self.bucket)
                        .key(object_key)
                        .upload_id(&upload_id)
                        .multipart_upload(
                            CompletedMultipartUpload::builder()
                                .set_parts(Some(completed.clone()))
                                .build(),
                        );
                    let req = if conditional {
                        req.if_none_match("*")
                    } else {
                        req
                    };
                    req.send()
                };
                let done = self.send_conditional(complete).await;
                // On an error the guard aborts the upload (a `412`: another writer's object
                // is there, and stays).
                let done = done.map_err(|e| map_sdk("completing a multipart upload", e))?;
                guard.upload_id = None;
                guard.forget_record();
                self.confirm_stored(object_key, done.e_tag()).await?;
                // The store's completion can take long (s3s-fs rewrites the whole object,
                // and so do some other stores): worth seeing in the logs, and the
                // benchmark reads it (bench/README.md).
                tracing::info!(
                    key = object_key,
                    parts = count,
                    bytes = size,
                    parts_ms = uploaded.as_millis(),
                    complete_ms = (started.elapsed() - uploaded).as_millis(),
                    "multipart upload completed"
                );
                Ok(size)
            }
            Err(e) => {
                // Stop the parts still uploading before aborting, so none lands afterwards.
                in_flight.shutdown().await;
                guard.abort_now().await;
                Err(e)
            }
        }
    }

    /// The ranges of `copy` as the upload's first parts (`UploadPartCopy`, pinned to the
    /// source's ETag), a few at a time. Returns them with their sizes.
    async fn copy_parts(
        &self,
        object_key: &str,
        upload_id: &str,
        copy: &super::CopyFrom,
        opts: &PutOptions,
    ) -> Result<Vec<(CompletedPart, u64)>> {
        // `x-amz-copy-source` is the URL-encoded `bucket/key`.
        const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
            .remove(b'-')
            .remove(b'.')
            .remove(b'_')
            .remove(b'~')
            .remove(b'/');
        let source = format!(
            "{}/{}",
            self.bucket,
            percent_encoding::utf8_percent_encode(&self.object_key(&copy.key), KEEP)
        );
        let mut in_flight = JoinSet::new();
        let mut done = Vec::new();
        for (i, range) in copy.ranges.iter().enumerate() {
            while in_flight.len() >= opts.parts_in_flight.max(1) {
                done.push(join_copy(in_flight.join_next().await)?);
            }
            let number = i32::try_from(i + 1).unwrap_or(i32::MAX);
            let mut req = self
                .client
                .upload_part_copy()
                .bucket(&self.bucket)
                .key(object_key)
                .upload_id(upload_id)
                .part_number(number)
                .copy_source(&source)
                .copy_source_range(format!("bytes={}-{}", range.start, range.end));
            if let Some(etag) = &copy.etag {
                req = req.copy_source_if_match(etag);
            }
            let size = range.size();
            in_flight.spawn(async move {
                let out = req
                    .send()
                    .await
                    .map_err(|e| match map_sdk("copying a part", e) {
                        // The source is gone, or not the archive the manifest was read from.
                        StorageError::NotFound | StorageError::AlreadyExists => {
                            StorageError::CopySource(format!("part {number}"))
                        }
                        other => other,
                    })?;
                let etag = out
                    .copy_part_result()
                    .and_then(|r| r.e_tag())
                    .map(str::to_string);
                Ok((
                    CompletedPart::builder()
                        .part_number(number)
                        .set_e_tag(etag)
                        .build(),
                    size,
                ))
            });
        }
        while let Some(joined) = in_flight.join_next().await {
            done.push(join_copy(Some(joined))?);
        }
        Ok(done)
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_parts(
        &self,
        object_key: &str,
        upload_id: &str,
        first: Bytes,
        parts: &mut PartReader<'_>,
        // Part numbers before this upload's (the copies').
        first_number: i32,
        opts: PutOptions,
        in_flight: &mut JoinSet<Result<CompletedPart>>,
    ) -> Result<(u64, Vec<CompletedPart>)> {
        let mut number = first_number;
        let mut size = 0u64;
        let mut completed = Vec::new();
        let mut next = Some(first);
        while let Some(part) = next.take() {
            while in_flight.len() >= opts.parts_in_flight.max(1) {
                completed.push(join_part(in_flight.join_next().await)?);
            }
            number += 1;
            if number > super::parts::MAX_PARTS as i32 {
                return Err(StorageError::Backend(
                    "the backup needs more than 10,000 parts; raise --part-size-mib".into(),
                    None,
                ));
            }
            size += part.len() as u64;
            let req = self
                .client
                .upload_part()
                .bucket(&self.bucket)
                .key(object_key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(part.len() as i64)
                .body(SdkBody::from(part));
            let mut req = req.customize();
            if !self.sign_payload {
                req = req.disable_payload_signing();
            }
            in_flight.spawn(async move {
                let out = req
                    .send()
                    .await
                    .map_err(|e| map_sdk("uploading a part", e))?;
                Ok(CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(out.e_tag().map(str::to_string))
                    .build())
            });
            next = parts.next_part().await?;
        }
        while let Some(joined) = in_flight.join_next().await {
            completed.push(join_part(Some(joined))?);
        }
        completed.sort_by_key(|p| p.part_number());
        Ok((size, completed))
    }
}

fn join_copy(
    joined: Option<std::result::Result<Result<(CompletedPart, u64)>, tokio::task::JoinError>>,
) -> Result<(CompletedPart, u64)> {
    match joined {
        Some(Ok(part)) => part,
        Some(Err(e)) => Err(StorageError::backend("a part copy task failed", e)),
        None => Err(StorageError::Backend("no part copy in flight".into(), None)),
    }
}

fn join_part(
    joined: Option<std::result::Result<Result<CompletedPart>, tokio::task::JoinError>>,
) -> Result<CompletedPart> {
    match joined {
        Some(Ok(part)) => part,
        Some(Err(e)) => Err(StorageError::backend("a part upload task failed", e)),
        None => Err(StorageError::Backend(
            "no part upload in flight".into(),
            None,
        )),
    }
}

/// Aborts the multipart upload when dropped while still armed (a failed or cancelled put).
struct AbortGuard {
    client: Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
    /// The pending-upload record, removed once the upload is completed or aborted.
    record: Option<PathBuf>,
}

impl AbortGuard {
    async fn abort_now(&mut self) {
        if let Some(id) = self.upload_id.take()
            && abort(
                self.client.clone(),
                self.bucket.clone(),
                self.key.clone(),
                id,
            )
            .await
        {
            self.forget_record();
        }
    }

    fn forget_record(&mut self) {
        if let Some(path) = self.record.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for AbortGuard {
    fn drop(&mut self) {
        if let Some(id) = self.upload_id.take()
            && let Ok(handle) = tokio::runtime::Handle::try_current()
        {
            let (client, bucket, key) =
                (self.client.clone(), self.bucket.clone(), self.key.clone());
            let record = self.record.take();
            handle.spawn(ABORTS.track_future(async move {
                if abort(client, bucket, key, id).await
                    && let Some(path) = record
                {
                    let _ = tokio::fs::remove_file(path).await;
                }
            }));
        }
    }
}

/// The aborts that dropped uploads started in the background, so that a shutdown can wait
/// for them ([`finish_aborts`]).
static ABORTS: std::sync::LazyLock<tokio_util::task::TaskTracker> =
    std::sync::LazyLock::new(tokio_util::task::TaskTracker::new);

/// Waits up to `timeout` for the aborts of cancelled uploads to reach the store, before
/// the process exits. One that does not is retried at the next start (the pending record).
pub async fn finish_aborts(timeout: std::time::Duration) {
    ABORTS.close();
    if tokio::time::timeout(timeout, ABORTS.wait()).await.is_err() {
        tracing::warn!("aborts of cancelled uploads still running; the next start retries them");
    }
    ABORTS.reopen();
}

/// Aborts a multipart upload; true if the store confirmed it.
async fn abort(client: Client, bucket: String, key: String, upload_id: String) -> bool {
    match client
        .abort_multipart_upload()
        .bucket(&bucket)
        .key(&key)
        .upload_id(&upload_id)
        .send()
        .await
    {
        Ok(_) => {
            tracing::info!(key = %key, "multipart upload aborted");
            true
        }
        Err(e) => {
            tracing::error!(
                key = %key,
                upload_id = %upload_id,
                error = %aws_sdk_s3::error::DisplayErrorContext(&e),
                "could not abort a multipart upload; it is retried at the next start"
            );
            false
        }
    }
}

/// Cuts a body stream into parts of exactly `part_size` bytes (the last may be shorter).
/// Part buffers are recycled and reserved from the memory budget: at most parts in flight
/// + 1 of them are held by one upload.
struct PartReader<'a> {
    body: ByteStream<'a>,
    part_size: usize,
    pending: Bytes,
    eof: bool,
    pool: Arc<BufPool>,
    budget: Arc<crate::bufpool::Budget>,
}

impl<'a> PartReader<'a> {
    fn new(body: ByteStream<'a>, opts: &PutOptions) -> Self {
        let part_size = usize::try_from(opts.part_size).unwrap_or(usize::MAX);
        Self {
            body,
            part_size,
            pending: Bytes::new(),
            eof: false,
            pool: BufPool::shared(part_size),
            budget: opts.budget.clone(),
        }
    }

    fn freeze(&self, buf: Vec<u8>, reserved: Option<crate::bufpool::Reserved>) -> Bytes {
        match reserved {
            Some(r) => self.pool.freeze_reserved(buf, r),
            None => self.pool.freeze(buf),
        }
    }

    /// The next part, or `None` at the end of the body.
    async fn next_part(&mut self) -> Result<Option<Bytes>> {
        let mut buf: Vec<u8> = Vec::new();
        let mut reserved = None;
        loop {
            if !self.pending.is_empty() {
                let want = self.part_size - buf.len();
                if buf.is_empty() && self.pending.len() >= want {
                    // A whole part in the chunk: no copy.
                    return Ok(Some(self.pending.split_to(want)));
                }
                if buf.capacity() == 0 {
                    let (taken, share) = self
                        .pool
                        .take_reserved(&self.budget, self.part_size as u64)
                        .await;
                    (buf, reserved) = (taken, Some(share));
                }
                let take = want.min(self.pending.len());
                buf.extend_from_slice(&self.pending.split_to(take));
                if buf.len() == self.part_size {
                    return Ok(Some(self.freeze(buf, reserved.take())));
                }
            }
            if self.eof {
                return Ok((!buf.is_empty()).then(|| self.freeze(buf, reserved.take())));
            }
            match self.body.try_next().await.map_err(StorageError::Body)? {
                Some(chunk) => self.pending = chunk,
                None => self.eof = true,
            }
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

/// The one place SDK errors become [`StorageError`]s: a missing key is `NotFound`, anything
/// else (including a missing bucket) is a backend error whose details go to the log only.
fn map_sdk<E>(context: &str, e: SdkError<E, aws_smithy_runtime_api::http::Response>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = e.raw_response().map(|r| r.status().as_u16());
    match e.code() {
        Some("NoSuchKey" | "NotFound") => StorageError::NotFound,
        None if status == Some(404) => StorageError::NotFound,
        // `If-None-Match: *` lost: another writer stored the key first.
        Some("PreconditionFailed") => StorageError::AlreadyExists,
        None if status == Some(412) => StorageError::AlreadyExists,
        _ => StorageError::Backend(
            format!("{context}: {}", aws_sdk_s3::error::DisplayErrorContext(&e)),
            None,
        ),
    }
}

#[async_trait::async_trait]
impl BackupStore for S3Store {
    #[tracing::instrument(skip(self))]
    async fn list(&self) -> Result<Vec<BackupInfo>> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| map_sdk("listing backups", e))?;
            for obj in page.contents() {
                let Some(key) = obj.key().and_then(|k| k.strip_prefix(&self.prefix)) else {
                    continue;
                };
                if crate::keys::check_key(key).is_err() {
                    continue; // nested "folders" and names the API could not address
                }
                out.push(BackupInfo {
                    key: key.to_string(),
                    size: obj.size().unwrap_or(0).max(0) as u64,
                    modified: to_time(obj.last_modified()),
                    etag: obj.e_tag().map(str::to_string),
                });
            }
        }
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
        if opts.copy.is_none() && parts.eof && parts.pending.is_empty() {
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

/// A store error in a few words: the store's code and message, else the client's reason
/// (a connection refused, a timeout). Requests are signed, never carry the secret, and
/// errors do not echo it.
fn sdk_reason<E>(e: &SdkError<E, aws_smithy_runtime_api::http::Response>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
    }
}

/// Counts every attempt of every S3 operation in the store metrics: requests, failed
/// attempts (no answer, or a 5xx or 429 status: the store's faults, not answers such as a
/// 404 of a stat), and retries (attempts after an operation's first).
#[derive(Debug)]
struct Counted(crate::metrics::StoreMetrics);

impl aws_sdk_s3::config::Intercept for Counted {
    fn name(&self) -> &'static str {
        "backup-gateway-store-metrics"
    }

    fn read_after_attempt(
        &self,
        context: &aws_sdk_s3::config::interceptors::FinalizerInterceptorContextRef<'_>,
        _components: &aws_sdk_s3::config::RuntimeComponents,
        cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> std::result::Result<(), aws_sdk_s3::error::BoxError> {
        let operation = cfg
            .load::<aws_smithy_runtime_api::client::orchestrator::Metadata>()
            .map_or("unknown", |m| m.name());
        let labels = [operation];
        self.0.requests.with_label_values(&labels).inc();
        let attempts = cfg
            .load::<aws_smithy_runtime_api::client::retries::RequestAttempts>()
            .map_or(1, |a| a.attempts());
        if attempts > 1 {
            self.0.retries.with_label_values(&labels).inc();
        }
        let failed = match context.response() {
            None => true,
            Some(r) => r.status().is_server_error() || r.status().as_u16() == 429,
        };
        if failed {
            self.0.errors.with_label_values(&labels).inc();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(part_size: u64) -> PutOptions {
        PutOptions {
            part_size,
            parts_in_flight: 2,
            budget: crate::bufpool::Budget::new(1 << 20),
            copy: None,
        }
    }

    fn body(chunks: &[&[u8]]) -> ByteStream<'static> {
        let v: Vec<io::Result<Bytes>> = chunks
            .iter()
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures::stream::iter(v))
    }

    #[tokio::test]
    async fn parts_have_exactly_the_part_size_but_the_last() {
        let mut r = PartReader::new(body(&[b"abc", b"defgh", b"", b"ij", b"klmnopq"]), &opts(4));
        let mut parts = Vec::new();
        while let Some(p) = r.next_part().await.unwrap() {
            parts.push(p);
        }
        assert_eq!(parts, vec!["abcd", "efgh", "ijkl", "mnop", "q"]);
    }

    #[tokio::test]
    async fn an_empty_body_has_no_parts() {
        let mut r = PartReader::new(body(&[]), &opts(4));
        assert!(r.next_part().await.unwrap().is_none());
    }
}
