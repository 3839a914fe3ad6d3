//! Multipart uploads: a body cut into parts of exactly the part size ([`PartReader`]), a
//! bounded number uploaded at once, ranges of another backup copied in the store
//! (`UploadPartCopy`), conditional writes and their read-back, and the abort of every upload
//! that does not complete ([`AbortGuard`], [`finish_aborts`]).

use super::S3Store;
use super::client::map_sdk;
use crate::storage::{ByteStream, PutOptions, Result, StorageError};
use crate::util::bufpool::BufPool;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkBody;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use futures::TryStreamExt;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::task::JoinSet;

impl S3Store {
    /// Sends a write built by `send(conditional)`: with `If-None-Match: *` while the store
    /// takes it, and once more without it when the store answers `501` (some S3-compatible
    /// stores do not implement conditional writes; the in-process key reservation is then
    /// the only guard, and later writes go without the header).
    pub(super) async fn send_conditional<F, Fut, T, E>(
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
    pub(super) async fn confirm_stored(&self, object_key: &str, etag: Option<&str>) -> Result<()> {
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

    pub(super) async fn put_multipart(
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
                // On an error the guard aborts the upload (a `412`: another writer's object
                // is there, and stays).
                let etag = self.complete(object_key, &upload_id, completed).await?;
                guard.upload_id = None;
                guard.forget_record();
                self.confirm_stored(object_key, etag.as_deref()).await?;
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

    /// Completes the upload of `completed` parts (conditionally while the store takes it);
    /// returns the object's ETag.
    async fn complete(
        &self,
        object_key: &str,
        upload_id: &str,
        completed: Vec<CompletedPart>,
    ) -> Result<Option<String>> {
        let complete = |conditional: bool| {
            let req = self
                .client
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(object_key)
                .upload_id(upload_id)
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
        let done = done.map_err(|e| map_sdk("completing a multipart upload", e))?;
        Ok(done.e_tag().map(str::to_string))
    }

    /// The ranges of `copy` as the upload's first parts (`UploadPartCopy`, pinned to the
    /// source's ETag), a few at a time. Returns them with their sizes.
    pub(super) async fn copy_parts(
        &self,
        object_key: &str,
        upload_id: &str,
        copy: &crate::storage::CopyFrom,
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
    pub(super) async fn upload_parts(
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
            if number > crate::storage::parts::MAX_PARTS as i32 {
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
pub(super) async fn abort(client: Client, bucket: String, key: String, upload_id: String) -> bool {
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
pub(super) struct PartReader<'a> {
    body: ByteStream<'a>,
    part_size: usize,
    pending: Bytes,
    eof: bool,
    pool: Arc<BufPool>,
    budget: Arc<crate::util::bufpool::Budget>,
}

impl<'a> PartReader<'a> {
    pub(super) fn new(body: ByteStream<'a>, opts: &PutOptions) -> Self {
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

    fn freeze(&self, buf: Vec<u8>, reserved: Option<crate::util::bufpool::Reserved>) -> Bytes {
        match reserved {
            Some(r) => self.pool.freeze_reserved(buf, r),
            None => self.pool.freeze(buf),
        }
    }

    /// Whether the body has ended and every byte of it was handed out.
    pub(super) fn finished(&self) -> bool {
        self.eof && self.pending.is_empty()
    }

    /// The next part, or `None` at the end of the body.
    pub(super) async fn next_part(&mut self) -> Result<Option<Bytes>> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io;

    fn opts(part_size: u64) -> PutOptions {
        PutOptions {
            part_size,
            parts_in_flight: 2,
            budget: crate::util::bufpool::Budget::new(1 << 20),
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
