//! The S3 client: its configuration ([`S3Config`], [`PayloadSigning`]), its setup for
//! S3-compatible stores (see [`super`]), the metering of every request, and the one place
//! SDK errors become [`StorageError`]s.

use super::{MAX_ATTEMPTS, S3Store, is_r2};
use crate::storage::StorageError;
use aws_config::BehaviorVersion;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use clap::ValueEnum;
use std::sync::Arc;
use std::time::Duration;

/// Whether the bodies of UploadPart and PutObject requests are signed (SigV4
/// `x-amz-content-sha256` with the body's SHA-256) or sent as `UNSIGNED-PAYLOAD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum PayloadSigning {
    /// Signed over plain HTTP, where nothing else protects the bytes in transit; unsigned
    /// over HTTPS, where TLS does (what the AWS SDK for Java's S3 client does). Every zip
    /// entry also carries a CRC-32, which a restore checks.
    #[default]
    Auto,
    Always,
    Never,
}

impl PayloadSigning {
    /// Whether bodies sent to `endpoint` are signed (no endpoint: AWS, over HTTPS).
    pub fn signs(self, endpoint: Option<&str>) -> bool {
        match self {
            Self::Always => true,
            Self::Never => false,
            Self::Auto => endpoint
                .is_some_and(|e| !e.trim_start().to_ascii_lowercase().starts_with("https://")),
        }
    }
}

#[derive(Clone)]
pub struct S3Config {
    pub bucket: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Normalized: empty, or ends with `/`.
    pub prefix: String,
    pub force_path_style: bool,
    pub payload_signing: PayloadSigning,
    /// Fixed credentials instead of the AWS chain (tests; never from the command line).
    pub credentials: Option<(String, String)>,
    /// How long a store call may wait for the store's next bytes before it fails (and is
    /// retried by the client, then fails the operation).
    pub read_timeout: std::time::Duration,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("prefix", &self.prefix)
            .field("force_path_style", &self.force_path_style)
            .field("payload_signing", &self.payload_signing)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "[redacted]"),
            )
            .finish()
    }
}

impl S3Store {
    /// Builds the client from `cfg` and the standard AWS configuration chain.
    pub async fn new(cfg: &S3Config) -> Self {
        Self::build(cfg, None).await
    }

    /// [`Self::new`], with every request counted in `metrics`.
    pub async fn metered(cfg: &S3Config, metrics: crate::ops::metrics::StoreMetrics) -> Self {
        Self::build(cfg, Some(metrics)).await
    }

    async fn build(cfg: &S3Config, metrics: Option<crate::ops::metrics::StoreMetrics>) -> Self {
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
            lists: Arc::new(tokio::sync::Semaphore::new(super::LISTS_AT_ONCE)),
        }
    }
}

/// The one place SDK errors become [`StorageError`]s: a missing key is `NotFound`, anything
/// else (including a missing bucket) is a backend error whose details go to the log only.
pub(super) fn map_sdk<E>(
    context: &str,
    e: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> StorageError
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

/// A store error in a few words: the store's code and message, else the client's reason
/// (a connection refused, a timeout). Requests are signed, never carry the secret, and
/// errors do not echo it.
pub(super) fn sdk_reason<E>(e: &SdkError<E, aws_smithy_runtime_api::http::Response>) -> String
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
struct Counted(crate::ops::metrics::StoreMetrics);

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

    #[test]
    fn payload_signing_auto_signs_only_over_plain_http() {
        let auto = PayloadSigning::Auto;
        assert!(auto.signs(Some("http://127.0.0.1:9000")));
        assert!(auto.signs(Some("HTTP://minio.internal")));
        assert!(!auto.signs(Some("https://account.r2.cloudflarestorage.com")));
        assert!(!auto.signs(Some("HTTPS://s3.example.com")));
        assert!(!auto.signs(None), "AWS itself, over HTTPS");
        assert!(PayloadSigning::Always.signs(Some("https://s3.example.com")));
        assert!(!PayloadSigning::Never.signs(Some("http://127.0.0.1:9000")));
    }
}
