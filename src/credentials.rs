//! Temporary credentials as the daemon holds them, and the one JSON body clients receive.
//!
//! The secret key and session token live only in [`Credentials`] and in the response bodies of
//! [`Served`] (built once per set); both are zeroed when the last reference goes, and neither ever appears in
//! `Debug` output. Logs identify a credential set by its masked access key id and its expiry.
//! This module knows nothing of STS or HTTP.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_smithy_types::DateTime;
use aws_smithy_types::date_time::Format;
use bytes::Bytes;
use serde::Serialize;
use zeroize::Zeroizing;

/// One set of temporary credentials for a role, as STS issued them.
#[derive(Clone)]
pub struct Credentials {
    pub access_key_id: String,
    secret_access_key: Zeroizing<String>,
    session_token: Zeroizing<String>,
    /// STS's expiry, truncated to whole seconds so that it is never later than the real one.
    pub expiration: SystemTime,
    /// The role that was assumed.
    pub role_arn: String,
    /// The account the credentials act in.
    pub account_id: String,
    /// The session's own ARN (`arn:aws:sts::…:assumed-role/<role>/<session>`).
    pub session_arn: String,
}

impl Credentials {
    pub fn new(
        access_key_id: String,
        secret_access_key: String,
        session_token: String,
        expiration: SystemTime,
    ) -> Self {
        Self {
            access_key_id,
            secret_access_key: Zeroizing::new(secret_access_key),
            session_token: Zeroizing::new(session_token),
            expiration: truncate_to_second(expiration),
            role_arn: String::new(),
            account_id: String::new(),
            session_arn: String::new(),
        }
    }

    /// Attaches what the credentials are for.
    pub fn for_role(mut self, role_arn: &str, account_id: &str, session_arn: String) -> Self {
        self.role_arn = role_arn.to_owned();
        self.account_id = account_id.to_owned();
        self.session_arn = session_arn;
        self
    }

    /// The access key id with its middle hidden, enough to match a CloudTrail entry.
    pub fn masked_access_key_id(&self) -> String {
        mask(&self.access_key_id)
    }

    /// `Expiration` as clients want it: RFC 3339, UTC, ending in `Z`.
    pub fn expiration_text(&self) -> String {
        format_timestamp(self.expiration)
    }

    /// Serialises a body holding the secret into a buffer of exactly its size: a growing `Vec`
    /// would leave an unzeroed copy of the secret in the memory it frees, and a buffer sized for
    /// JSON's worst case would hold several times the body in every set (per user, with
    /// sessions per user). The size is found by a first pass that only counts bytes.
    fn secret_json(&self, body: &impl Serialize) -> Bytes {
        let mut counter = ByteCounter(0);
        serde_json::to_writer(&mut counter, body).expect("credentials serialise");
        let mut json = Zeroizing::new(Vec::with_capacity(counter.0));
        let capacity = json.capacity();
        serde_json::to_writer(&mut *json, body).expect("credentials serialise");
        debug_assert_eq!(json.capacity(), capacity, "the buffer never grew");
        Bytes::from_owner(SecretBytes(json))
    }

    /// The body of the ECS container-credentials answer, keys cased exactly as clients read them.
    pub fn ecs_body(&self) -> Bytes {
        let body = EcsBody {
            access_key_id: &self.access_key_id,
            secret_access_key: &self.secret_access_key,
            token: &self.session_token,
            expiration: self.expiration_text(),
            role_arn: &self.role_arn,
            account_id: &self.account_id,
        };
        self.secret_json(&body)
    }

    /// The body of an IMDS `iam/security-credentials/<role>` answer with `secrets` (this set's
    /// secret key and token); `updated` is when the daemon obtained the set (`LastUpdated`).
    /// With `account`, the extended form (`iam/security-credentials-extended/<role>`), which
    /// adds `AccountId`.
    fn imds_body(&self, secrets: [&str; 2], updated: SystemTime, account: bool) -> Bytes {
        let [secret_access_key, token] = secrets;
        let body = ImdsBody {
            account_id: account.then_some(self.account_id.as_str()),
            code: "Success",
            last_updated: format_timestamp(updated),
            kind: "AWS-HMAC",
            access_key_id: &self.access_key_id,
            secret_access_key,
            token,
            expiration: self.expiration_text(),
        };
        self.secret_json(&body)
    }

    /// These credentials without their secret key and token (zeroed): a [`Served`] set keeps
    /// them in its ECS body alone, so that each is held once.
    fn without_secrets(mut self) -> Self {
        self.secret_access_key = Zeroizing::new(String::new());
        self.session_token = Zeroizing::new(String::new());
        self
    }

    /// The secret parts, for tests that must prove they never leak or are held once.
    #[cfg(test)]
    fn secrets(&self) -> [&str; 2] {
        [&self.secret_access_key, &self.session_token]
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.masked_access_key_id())
            .field("secret_access_key", &"** redacted **")
            .field("session_token", &"** redacted **")
            .field("expiration", &self.expiration_text())
            .field("role_arn", &self.role_arn)
            .finish()
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct EcsBody<'a> {
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: String,
    role_arn: &'a str,
    account_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ImdsBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    account_id: Option<&'a str>,
    code: &'a str,
    last_updated: String,
    #[serde(rename = "Type")]
    kind: &'a str,
    access_key_id: &'a str,
    secret_access_key: &'a str,
    token: &'a str,
    expiration: String,
}

/// A writer that keeps nothing but the number of bytes written to it.
struct ByteCounter(usize);

impl std::io::Write for ByteCounter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Owner of a serialised body that holds secrets: zeroed when the last `Bytes` clone drops.
struct SecretBytes(Zeroizing<Vec<u8>>);

impl AsRef<[u8]> for SecretBytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// The secrets of an ECS body, read back from it (borrowed, unless JSON escaped them): the
/// metadata bodies are made from the ECS body, where a served set keeps its secrets.
#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EcsSecrets<'a> {
    #[serde(borrow)]
    secret_access_key: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    token: std::borrow::Cow<'a, str>,
}

impl Drop for EcsSecrets<'_> {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        for secret in [&mut self.secret_access_key, &mut self.token] {
            if let std::borrow::Cow::Owned(copy) = secret {
                copy.zeroize();
            }
        }
    }
}

/// A credential set ready to serve: the credentials and their response bodies, built once.
/// The secret key and the session token are held once, in the ECS body.
pub struct Served {
    /// The set without its secrets (see [`Served::imds_body`]).
    pub credentials: Credentials,
    /// The ECS body; cloning it is a reference-count increment, not a copy.
    pub ecs_body: Bytes,
    /// The IMDS bodies (plain, and extended with `AccountId`, which the Java v2 and Go SDKs ask
    /// for first), both built at the first metadata request for this set: most roles are never
    /// served as metadata, and with sessions per user every set is one user's (boxed: a set
    /// never served as metadata holds a pointer, not two bodies' worth of slots).
    imds_bodies: OnceLock<Box<[Bytes; 2]>>,
    /// When the daemon received the set (wall clock): the start of its lifetime.
    pub obtained: SystemTime,
    /// The masked access key id, for the audit line of every response.
    pub masked_key_id: Arc<str>,
}

impl Served {
    pub fn new(credentials: Credentials, obtained: SystemTime) -> Self {
        let ecs_body = credentials.ecs_body();
        let masked_key_id = credentials.masked_access_key_id().into();
        Self {
            masked_key_id,
            credentials: credentials.without_secrets(),
            ecs_body,
            imds_bodies: Default::default(),
            obtained,
        }
    }

    /// The IMDS body, `extended` with `AccountId`; built once per set (with the secrets read
    /// back from the ECS body), then shared.
    pub fn imds_body(&self, extended: bool) -> Bytes {
        let bodies = self.imds_bodies.get_or_init(|| {
            let secrets: EcsSecrets =
                serde_json::from_slice(&self.ecs_body).expect("the ECS body built here parses");
            let both = [&*secrets.secret_access_key, &*secrets.token];
            let body = |extended| self.credentials.imds_body(both, self.obtained, extended);
            Box::new([body(false), body(true)])
        });
        bodies[usize::from(extended)].clone()
    }
}

impl fmt::Debug for Served {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Served")
            .field("credentials", &self.credentials)
            .field("obtained", &format_timestamp(self.obtained))
            .finish_non_exhaustive()
    }
}

/// Shows the first four and last four characters of an identifier.
pub fn mask(id: &str) -> String {
    if id.len() <= 8 || !id.is_ascii() {
        return "****".to_owned();
    }
    format!("{}…{}", &id[..4], &id[id.len() - 4..])
}

/// RFC 3339 in UTC with `Z` and whole seconds, e.g. `2026-11-28T04:03:29Z`.
pub fn format_timestamp(time: SystemTime) -> String {
    let seconds = time
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    DateTime::from_secs(seconds as i64)
        .fmt(Format::DateTime)
        .expect("a time after 1970 formats")
}

fn truncate_to_second(time: SystemTime) -> SystemTime {
    let seconds = time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    UNIX_EPOCH + std::time::Duration::from_secs(seconds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn sample() -> Credentials {
        let expiry = UNIX_EPOCH + Duration::from_millis(1_795_838_609_695);
        Credentials::new(
            "ASIAEXAMPLEKEY123456".into(),
            "secret/KEY+value".into(),
            "session-token-value".into(),
            expiry,
        )
        .for_role(
            "arn:aws:iam::444455556666:role/piyo-role",
            "444455556666",
            "arn:aws:sts::444455556666:assumed-role/piyo-role/hoge".into(),
        )
    }

    #[test]
    fn ecs_body_has_exact_keys_and_z_expiration() {
        let body: serde_json::Value = serde_json::from_slice(&sample().ecs_body()).unwrap();
        let object = body.as_object().unwrap();
        let keys: Vec<&str> = object.keys().map(String::as_str).collect();
        assert_eq!(
            keys.len(),
            6,
            "AccessKeyId, SecretAccessKey, Token, Expiration, RoleArn, AccountId: {keys:?}"
        );
        assert_eq!(body["AccessKeyId"], "ASIAEXAMPLEKEY123456");
        assert_eq!(body["SecretAccessKey"], "secret/KEY+value");
        assert_eq!(body["Token"], "session-token-value");
        assert_eq!(body["Expiration"], "2026-11-28T04:03:29Z");
        assert_eq!(body["RoleArn"], "arn:aws:iam::444455556666:role/piyo-role");
        assert_eq!(body["AccountId"], "444455556666");
    }

    /// Bodies are built in buffers of exactly their size, escapes included: the
    /// `debug_assert` in `secret_json` fails if a buffer had to grow.
    #[test]
    fn bodies_fit_their_buffers_exactly_even_with_escapes() {
        let expiry = UNIX_EPOCH + Duration::from_secs(1_795_838_609);
        let odd = Credentials::new(
            "ASIA\"KEY\u{1}".into(),
            "sec\\ret\n\u{7f}é".into(),
            "t".repeat(1200),
            expiry,
        );
        let body: serde_json::Value = serde_json::from_slice(&odd.ecs_body()).unwrap();
        assert_eq!(body["SecretAccessKey"], "sec\\ret\n\u{7f}é");
        assert_eq!(body["AccessKeyId"], "ASIA\"KEY\u{1}");
        // The metadata body reads the escaped secrets back from the ECS body.
        let served = Served::new(odd, expiry);
        let body: serde_json::Value = serde_json::from_slice(&served.imds_body(true)).unwrap();
        assert_eq!(body["SecretAccessKey"], "sec\\ret\n\u{7f}é");
        assert_eq!(body["Token"], "t".repeat(1200));
    }

    /// A served set holds its secret key and token once, in the ECS body: its credentials
    /// have none left, and the metadata bodies still carry them.
    #[test]
    fn a_served_set_holds_its_secrets_once() {
        let served = Served::new(sample(), UNIX_EPOCH);
        assert_eq!(served.credentials.secrets(), ["", ""]);
        for extended in [false, true] {
            let body = served.imds_body(extended);
            let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(body["SecretAccessKey"], "secret/KEY+value");
            assert_eq!(body["Token"], "session-token-value");
            assert_eq!(body["AccountId"].is_string(), extended);
        }
    }

    #[test]
    fn imds_body_has_code_type_and_z_times() {
        let updated = UNIX_EPOCH + Duration::from_secs(1_795_834_000);
        let credentials = sample();
        let secrets = credentials.secrets();
        let body = credentials.imds_body(secrets, updated, false);
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["Code"], "Success");
        assert_eq!(body["Type"], "AWS-HMAC");
        assert_eq!(body["LastUpdated"], "2026-11-28T02:46:40Z");
        assert_eq!(body["Expiration"], "2026-11-28T04:03:29Z");
        assert_eq!(body["Token"], "session-token-value");
        assert_eq!(body.as_object().unwrap().len(), 7);
    }

    #[test]
    fn debug_redacts_secrets() {
        let credentials = sample();
        let served = Served::new(credentials.clone(), UNIX_EPOCH);
        for text in [format!("{credentials:?}"), format!("{served:?}")] {
            for secret in credentials.secrets() {
                assert!(!text.contains(secret), "{text}");
            }
            assert!(text.contains("ASIA…3456"), "{text}");
        }
    }

    #[test]
    fn masking() {
        assert_eq!(mask("ASIAEXAMPLEKEY123456"), "ASIA…3456");
        assert_eq!(mask("short"), "****");
    }

    #[test]
    fn expiration_never_later_than_sts_said() {
        assert!(sample().expiration <= UNIX_EPOCH + Duration::from_millis(1_795_838_609_695));
    }
}
