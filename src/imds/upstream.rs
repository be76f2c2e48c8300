//! The metadata the daemon does not answer itself, read from a [`MetadataSource`]: the real
//! instance metadata in production (through an IMDSv2 session the SDK's client keeps and
//! renews), a recording double in tests and fuzzing. Values that cannot change while the
//! instance runs are read once and cached. Which paths may be asked at all is decided before,
//! by [`super::route`]: nothing under `iam/` ever reaches a source.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Duration;

/// Where the real instance metadata lives when nothing says otherwise.
pub const DEFAULT_UPSTREAM: &str = "http://169.254.169.254";
/// JavaScript SDKs give up on metadata after one second; answer before they do.
const UPSTREAM_DEADLINE: Duration = Duration::from_millis(900);
/// Metadata that cannot change while the instance runs, so one upstream read is enough.
const IMMUTABLE_PATHS: &[&str] = &[
    "/latest/meta-data/instance-id",
    "/latest/meta-data/instance-type",
    "/latest/meta-data/ami-id",
    "/latest/meta-data/placement/region",
    "/latest/meta-data/placement/availability-zone",
    "/latest/meta-data/placement/availability-zone-id",
    "/latest/dynamic/instance-identity/document",
    "/latest/dynamic/instance-identity/signature",
    "/latest/dynamic/instance-identity/pkcs7",
    "/latest/dynamic/instance-identity/rsa2048",
];

/// Why the upstream could not answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamError {
    /// The upstream has no such path.
    NotFound,
    /// The upstream answered with another error status.
    Status(u16),
    /// The upstream could not be reached, or not in time.
    Unreachable(String),
}

/// A read of one metadata path.
pub type Read<'a> = Pin<Box<dyn Future<Output = Result<String, UpstreamError>> + Send + 'a>>;

/// The seam to instance metadata: reads one path (`/latest/...`).
pub trait MetadataSource: Send + Sync + 'static {
    /// Reads `path`, within the time a client waits.
    fn read<'a>(&'a self, path: &'a str) -> Read<'a>;
}

/// The real instance metadata, through the AWS SDK's IMDSv2 client.
struct InstanceMetadata {
    client: aws_config::imds::Client,
}

impl MetadataSource for InstanceMetadata {
    fn read<'a>(&'a self, path: &'a str) -> Read<'a> {
        Box::pin(async move {
            match tokio::time::timeout(UPSTREAM_DEADLINE, self.client.get(path)).await {
                Err(_) => Err(UpstreamError::Unreachable("no answer in time".into())),
                Ok(Err(error)) => Err(classify(&error)),
                Ok(Ok(value)) => Ok(value.as_ref().to_owned()),
            }
        })
    }
}

fn classify(error: &aws_config::imds::client::error::ImdsError) -> UpstreamError {
    use aws_config::imds::client::error::ImdsError;
    match error {
        ImdsError::ErrorResponse(response) => match response.response().status().as_u16() {
            404 => UpstreamError::NotFound,
            status => UpstreamError::Status(status),
        },
        other => UpstreamError::Unreachable(other.to_string()),
    }
}

/// A metadata source with the immutable values cached.
pub struct Upstream {
    source: Box<dyn MetadataSource>,
    cache: Mutex<HashMap<&'static str, String>>,
}

impl Upstream {
    /// The real instance metadata at `endpoint`.
    pub fn new(endpoint: &str) -> anyhow::Result<Self> {
        let client = aws_config::imds::Client::builder()
            .configure(&crate::sts::metadata_provider_config())
            .endpoint(endpoint)
            .map_err(|error| anyhow::anyhow!("invalid metadata endpoint {endpoint}: {error}"))?
            .max_attempts(1)
            .connect_timeout(Duration::from_millis(300))
            .read_timeout(Duration::from_millis(600))
            .build();
        Ok(Self::from_source(Box::new(InstanceMetadata { client })))
    }

    /// Any other source (a double).
    pub fn from_source(source: Box<dyn MetadataSource>) -> Self {
        Self {
            source,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Reads `path`, from the cache if it is immutable and was read before.
    pub async fn get(&self, path: &str) -> Result<String, UpstreamError> {
        // Leaves answer with or without a trailing slash (botocore asks with one).
        let leaf = path.trim_end_matches('/');
        let immutable = IMMUTABLE_PATHS.iter().find(|p| **p == leaf).copied();
        if let Some(key) = immutable
            && let Some(value) = self.cache().get(key)
        {
            return Ok(value.clone());
        }
        let value = self.source.read(path).await?;
        if let Some(key) = immutable {
            self.cache().insert(key, value.clone());
        }
        Ok(value)
    }

    /// The cache, locked. A std mutex: held only to copy a value, never across an await. A
    /// panic elsewhere while it was held leaves at worst a missing entry, so a poisoned lock
    /// is used as it is (the policy of every lock in the daemon).
    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<&'static str, String>> {
        self.cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
