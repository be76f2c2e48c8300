//! The one seam to AWS STS: `AssumeRole` for the served roles, `GetCallerIdentity` for the
//! daemon's own identity.
//!
//! The daemon's own (source) credentials come from the standard AWS chain minus the
//! container-credentials provider: the environment, the shared profile files, web identity, and
//! instance metadata. Leaving out the container provider means the daemon can never ask itself
//! for credentials, even when its environment carries `AWS_CONTAINER_CREDENTIALS_FULL_URI`.
//!
//! The SDK's own retries are switched off: the refresh engine owns retrying, so one refresh is
//! one STS call and backoff follows one policy. Errors are sorted into [`ErrorKind`]s here, where
//! the SDK's error types are known, so nothing else depends on them.

use std::fmt;
use std::future::Future;
use std::time::{Duration, SystemTime};

use aws_config::environment::credentials::EnvironmentVariableCredentialsProvider;
use aws_config::imds::credentials::ImdsCredentialsProvider;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::web_identity_token::WebIdentityTokenCredentialsProvider;
use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sts::types::{PolicyDescriptorType, Tag};

use crate::config::{RoleConfig, SessionParams, StsConfig};
use crate::credentials::Credentials;

/// Connecting to STS should be quick; a slow handshake means the network is wrong.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// One STS call, from the first byte sent to the last byte received.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// STS refuses sessions longer than this when the caller is itself a role session ("role
/// chaining"), which instance-profile credentials always are.
pub const CHAINED_SESSION_LIMIT: Duration = Duration::from_secs(3600);

/// STS error codes that mean "try again soon" rather than "fix the configuration".
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "IDPCommunicationError",
    "InternalFailure",
    "InternalError",
    "ServiceUnavailable",
    // The source credentials (instance profile) expired under us; the chain fetches new ones.
    "ExpiredToken",
    "RequestExpired",
];

/// What a failed STS call says about what to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Throttling, 5xx, network trouble, timeouts: retry with backoff.
    Transient,
    /// Access denied, unknown role, region disabled, bad parameters: an operator must act; retry
    /// slowly in case they do.
    Configuration,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Transient => "transient",
            ErrorKind::Configuration => "configuration",
        }
    }
}

/// A failed STS call, with STS's code and message (which never carry secrets).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct StsError {
    pub kind: ErrorKind,
    pub code: String,
    pub message: String,
}

impl StsError {
    pub fn new(kind: ErrorKind, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            kind,
            code: code.into(),
            message: message.into(),
        }
    }
}

/// The calls the refresh engine needs. Tests replace it with a fake that needs no network.
pub trait Sts: Send + Sync + 'static {
    /// One `AssumeRole` call for `role`, with the role's configured parameters and the session's
    /// rendered names.
    fn assume_role(
        &self,
        role: &RoleConfig,
        session: &SessionParams,
    ) -> impl Future<Output = Result<Credentials, StsError>> + Send;

    /// The ARN the daemon itself acts as (its source identity).
    fn caller_identity(&self) -> impl Future<Output = Result<String, StsError>> + Send;

    /// The region STS calls go to, if one was configured or found.
    fn region(&self) -> Option<String>;
}

/// STS through the AWS SDK.
pub struct SdkSts {
    client: aws_sdk_sts::Client,
    /// The daemon's own ARN, looked up once, when first needed.
    source_arn: tokio::sync::OnceCell<String>,
}

impl fmt::Debug for SdkSts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SdkSts").finish_non_exhaustive()
    }
}

impl SdkSts {
    /// Builds a client from the configuration and the standard (container-free) source chain.
    pub async fn new(config: &StsConfig) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .credentials_provider(source_chain())
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_timeout(CALL_TIMEOUT)
                    .build(),
            );
        // The region from the environment, the profile or instance metadata (asked directly).
        loader = match &config.region {
            Some(region) => loader.region(Region::new(region.clone())),
            None => loader.region(region_chain()),
        };
        if let Some(endpoint) = &config.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        let sdk_config = loader.load().await;
        Self {
            client: aws_sdk_sts::Client::new(&sdk_config),
            source_arn: tokio::sync::OnceCell::new(),
        }
    }

    /// The session length to ask for: the configured one, capped when STS would refuse it for
    /// role chaining. Only a duration above the cap needs the source identity looked up.
    async fn session_duration(&self, role: &RoleConfig) -> Duration {
        if role.duration <= CHAINED_SESSION_LIMIT {
            return role.duration;
        }
        let source = self.caller_identity().await.ok();
        effective_duration(role.duration, source.as_deref())
    }
}

/// The session tags to send; none (not an empty list) for a role without tags.
fn session_tags(tags: &[(String, String)]) -> Option<Vec<Tag>> {
    let tag = |(key, value): &(String, String)| {
        Tag::builder()
            .key(key)
            .value(value)
            .build()
            .expect("key and value are set")
    };
    (!tags.is_empty()).then(|| tags.iter().map(tag).collect())
}

fn policy_descriptors(arns: &[String]) -> Option<Vec<PolicyDescriptorType>> {
    let descriptor = |arn: &String| PolicyDescriptorType::builder().arn(arn).build();
    (!arns.is_empty()).then(|| arns.iter().map(descriptor).collect())
}

fn non_empty(items: &[String]) -> Option<Vec<String>> {
    (!items.is_empty()).then(|| items.to_vec())
}

/// `configured`, or [`CHAINED_SESSION_LIMIT`] if that is shorter and the caller (`source_arn`)
/// is a role session.
pub fn effective_duration(configured: Duration, source_arn: Option<&str>) -> Duration {
    if source_arn.is_some_and(is_role_session) {
        configured.min(CHAINED_SESSION_LIMIT)
    } else {
        configured
    }
}

/// Whether an ARN names a role session (`arn:aws:sts::<account>:assumed-role/<role>/<session>`).
pub fn is_role_session(arn: &str) -> bool {
    arn.contains(":assumed-role/")
}

impl Sts for SdkSts {
    fn region(&self) -> Option<String> {
        self.client.config().region().map(|r| r.to_string())
    }

    /// Asked of STS once, then remembered.
    async fn caller_identity(&self) -> Result<String, StsError> {
        let lookup = || async {
            let output = self
                .client
                .get_caller_identity()
                .send()
                .await
                .map_err(classify)?;
            Ok(output.arn().unwrap_or("unknown").to_owned())
        };
        self.source_arn.get_or_try_init(lookup).await.cloned()
    }

    async fn assume_role(
        &self,
        role: &RoleConfig,
        session: &SessionParams,
    ) -> Result<Credentials, StsError> {
        let duration = self.session_duration(role).await;
        let output = self
            .client
            .assume_role()
            .role_arn(role.arn.as_str())
            .role_session_name(&session.session_name)
            .duration_seconds(duration.as_secs() as i32)
            .set_external_id(role.external_id.clone())
            .set_source_identity(session.source_identity.clone())
            .set_tags(session_tags(&session.tags))
            .set_transitive_tag_keys(non_empty(&role.transitive_tags))
            .set_policy_arns(policy_descriptors(&role.policy_arns))
            .set_policy(role.policy.as_ref().map(|policy| policy.json.clone()))
            .send()
            .await
            .map_err(classify)?;
        let session_arn = output
            .assumed_role_user()
            .map(|user| user.arn().to_owned())
            .unwrap_or_default();
        let issued = output.credentials.ok_or_else(|| {
            StsError::new(
                ErrorKind::Transient,
                "EmptyResponse",
                "STS answered without credentials",
            )
        })?;
        let expiration = SystemTime::try_from(*issued.expiration()).map_err(|_| {
            StsError::new(
                ErrorKind::Transient,
                "BadExpiration",
                "STS sent an unusable expiry",
            )
        })?;
        require_complete(
            &issued.access_key_id,
            &issued.secret_access_key,
            &issued.session_token,
        )?;
        Ok(Credentials::new(
            issued.access_key_id,
            issued.secret_access_key,
            issued.session_token,
            expiration,
        )
        .for_role(role.arn.as_str(), role.arn.account_id(), session_arn))
    }
}

/// Refuses a set with an empty access key id, secret or session token. The SDK fills a field
/// missing from STS's answer with an empty string; served, that would be a 200 no client can
/// use. A transient error: the last good set keeps being served, and the next attempt may work.
fn require_complete(
    access_key_id: &str,
    secret: &str,
    session_token: &str,
) -> Result<(), StsError> {
    let missing: Vec<&str> = [
        ("AccessKeyId", access_key_id),
        ("SecretAccessKey", secret),
        ("SessionToken", session_token),
    ]
    .iter()
    .filter(|(_, value)| value.is_empty())
    .map(|(name, _)| *name)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(StsError::new(
        ErrorKind::Transient,
        "IncompleteCredentials",
        format!("STS answered with an empty {}", missing.join(", ")),
    ))
}

/// What the SDK's providers that read instance metadata are built with: an HTTP client that
/// never uses a proxy. The SDK's default client takes `HTTPS_PROXY` / `HTTP_PROXY` from the
/// environment (right for STS), and would send metadata requests to a proxy too unless
/// `NO_PROXY` names the metadata address; a proxy would then answer from its own host's
/// metadata: another instance's id, or another instance's role.
pub fn metadata_provider_config() -> ProviderConfig {
    use aws_smithy_http_client::proxy::ProxyConfig;
    use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
    use aws_smithy_http_client::{Builder, ConnectorBuilder};
    let client = Builder::new().build_with_connector_fn(|settings, components| {
        let mut connector =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
        connector.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            connector.set_sleep_impl(components.sleep_impl());
        }
        connector.set_proxy_config(Some(ProxyConfig::disabled()));
        connector.build()
    });
    ProviderConfig::default().with_http_client(client)
}

/// The SDK's default region chain (environment, profile, instance metadata), with instance
/// metadata asked directly.
fn region_chain() -> aws_config::meta::region::RegionProviderChain {
    use aws_config::environment::region::EnvironmentVariableRegionProvider;
    use aws_config::imds::region::ImdsRegionProvider;
    use aws_config::profile::region::ProfileFileRegionProvider;
    let metadata = metadata_provider_config();
    aws_config::meta::region::RegionProviderChain::first_try(
        EnvironmentVariableRegionProvider::new(),
    )
    .or_else(ProfileFileRegionProvider::builder().build())
    .or_else(ImdsRegionProvider::builder().configure(&metadata).build())
}

/// The standard AWS source chain without the container-credentials provider; instance
/// metadata asked directly, never through a proxy.
fn source_chain() -> CredentialsProviderChain {
    CredentialsProviderChain::first_try(
        "Environment",
        EnvironmentVariableCredentialsProvider::new(),
    )
    .or_else("Profile", ProfileFileCredentialsProvider::builder().build())
    .or_else(
        "WebIdentityToken",
        WebIdentityTokenCredentialsProvider::builder().build(),
    )
    .or_else(
        "Ec2InstanceMetadata",
        ImdsCredentialsProvider::builder()
            .configure(&metadata_provider_config())
            .build(),
    )
}

/// Sorts an SDK error into transient or configuration, keeping STS's code and message.
fn classify<E>(error: SdkError<E>) -> StsError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match &error {
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("Unknown").to_owned();
            let message = service.err().message().unwrap_or("").to_owned();
            let server_side = service.raw().status().is_server_error();
            StsError::new(kind_of_code(&code, server_side), code, message)
        }
        SdkError::TimeoutError(_) => StsError::new(
            ErrorKind::Transient,
            "Timeout",
            "STS did not answer in time",
        ),
        SdkError::ConstructionFailure(_) => StsError::new(
            ErrorKind::Configuration,
            "RequestNotBuilt",
            error_chain(&error),
        ),
        _ if has_source::<CredentialsError>(&error) => StsError::new(
            ErrorKind::Transient,
            "NoSourceCredentials",
            format!(
                "cannot load the host's own credentials: {}",
                error_chain(&error)
            ),
        ),
        _ => StsError::new(ErrorKind::Transient, "Unreachable", error_chain(&error)),
    }
}

/// An error and its sources as one line of their `Display` texts. (The SDK's own
/// `DisplayErrorContext` appends a `Debug` dump, far too long for a log line or a 503 body.)
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(current) = next {
        let text = current.to_string();
        // Wrappers often repeat their source's text; keep each piece once.
        if !parts.iter().any(|part| part.contains(&text)) {
            parts.push(text);
        }
        next = current.source();
    }
    parts.join(": ").replace('\n', " ")
}

fn has_source<T: std::error::Error + 'static>(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(current) = next {
        if current.is::<T>() {
            return true;
        }
        next = current.source();
    }
    false
}

/// Whether an STS error code (or a 5xx status) is worth a quick retry.
fn kind_of_code(code: &str, server_side: bool) -> ErrorKind {
    if server_side || TRANSIENT_CODES.contains(&code) {
        ErrorKind::Transient
    } else {
        ErrorKind::Configuration
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chained_sessions_are_capped_at_one_hour() {
        let two_hours = Duration::from_secs(7200);
        let instance = "arn:aws:sts::111122223333:assumed-role/hoge-ec2-role/i-0123456789abcdef0";
        assert_eq!(
            effective_duration(two_hours, Some(instance)),
            CHAINED_SESSION_LIMIT
        );
        let user = "arn:aws:iam::111122223333:user/hoge";
        assert_eq!(effective_duration(two_hours, Some(user)), two_hours);
        assert_eq!(effective_duration(two_hours, None), two_hours);
        let half = Duration::from_secs(1800);
        assert_eq!(effective_duration(half, Some(instance)), half);
    }

    #[test]
    fn empty_keys_are_a_transient_error_that_names_them() {
        assert!(require_complete("ASIA1", "secret", "token").is_ok());
        let error = require_complete("", "secret", "").unwrap_err();
        assert_eq!(error.kind, ErrorKind::Transient);
        assert_eq!(error.code, "IncompleteCredentials");
        assert_eq!(
            error.message,
            "STS answered with an empty AccessKeyId, SessionToken"
        );
    }

    #[test]
    fn error_kinds() {
        assert_eq!(kind_of_code("Throttling", false), ErrorKind::Transient);
        assert_eq!(kind_of_code("Anything", true), ErrorKind::Transient);
        assert_eq!(
            kind_of_code("AccessDenied", false),
            ErrorKind::Configuration
        );
        assert_eq!(
            kind_of_code("RegionDisabledException", false),
            ErrorKind::Configuration
        );
        assert_eq!(
            kind_of_code("ValidationError", false),
            ErrorKind::Configuration
        );
    }
}
