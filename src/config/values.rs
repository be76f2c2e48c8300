//! Value parsers: one pure function per kind of value, `&str` in, a checked value or the
//! sentence that says what is wrong out. Validation calls them; tests call them directly.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::DEFAULT_LISTEN;
use super::template::Template;

/// STS refuses `DurationSeconds` outside this range.
const DURATION_RANGE_SECS: std::ops::RangeInclusive<u64> = 900..=43_200;
/// Role names become one URL path segment, so they stay short and need no escaping.
const MAX_ROLE_NAME_LEN: usize = 64;

/// A syntactically valid IAM role ARN, with its account id split out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleArn {
    arn: String,
    account_id: String,
}

impl RoleArn {
    /// Parses `arn:<partition>:iam::<12 digits>:role/<optional path/><name>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let expected = "expected arn:aws:iam::<12-digit account id>:role/<role name>";
        let parts: Vec<&str> = text.splitn(6, ':').collect();
        let [arn, partition, service, region, account_id, resource] = parts[..] else {
            return Err(format!("{text:?} is not an ARN; {expected}"));
        };
        let partition_ok = !partition.is_empty()
            && partition
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '-');
        let account_ok = account_id.len() == 12 && account_id.bytes().all(|b| b.is_ascii_digit());
        let role_name = resource
            .strip_prefix("role/")
            .and_then(|r| r.rsplit('/').next());
        let name_ok = role_name.is_some_and(|name| {
            (1..=64).contains(&name.len()) && name.chars().all(is_iam_name_char)
        });
        let path_ok = resource.chars().all(|c| c == '/' || is_iam_name_char(c));
        if arn != "arn" || !partition_ok || service != "iam" || !region.is_empty() {
            return Err(format!("{text:?} is not an IAM ARN; {expected}"));
        }
        if !account_ok {
            return Err(format!(
                "{text:?} has account id {account_id:?}, which is not 12 digits"
            ));
        }
        if !name_ok || !path_ok {
            return Err(format!("{text:?} does not name a role; {expected}"));
        }
        Ok(Self {
            arn: text.to_owned(),
            account_id: account_id.to_owned(),
        })
    }

    /// The ARN as written.
    pub fn as_str(&self) -> &str {
        &self.arn
    }

    /// The account that owns the role, which is the account the credentials act in.
    pub fn account_id(&self) -> &str {
        &self.account_id
    }

    /// The role's IAM name: what follows the last `/` (any path dropped). Read on every
    /// metadata request: a plain scan from the end, where `rsplit` searched for a `char`.
    pub fn role_name(&self) -> &str {
        let start = (self.arn.bytes())
            .rposition(|b| b == b'/')
            .map_or(0, |slash| slash + 1);
        &self.arn[start..]
    }
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.arn)
    }
}

pub(super) fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let address: SocketAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not an address such as \"{DEFAULT_LISTEN}\""))?;
    if !address.ip().is_loopback() {
        return Err(format!(
            "{text:?} is not a loopback address; credentials are served on loopback only \
             (use 127.0.0.1:<port>)"
        ));
    }
    Ok(address)
}

pub(super) fn parse_token_file(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    if !path.is_absolute() || path.file_name().is_none() {
        return Err(format!("{text:?} is not an absolute file path"));
    }
    Ok(path)
}

pub(super) fn parse_region(text: &str) -> Result<String, String> {
    let valid = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !valid {
        return Err(format!(
            "{text:?} is not a region name such as \"ap-northeast-1\""
        ));
    }
    Ok(text.to_owned())
}

pub(super) fn parse_endpoint(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(char::is_whitespace) => {
            Ok(text.to_owned())
        }
        _ => Err(format!("{text:?} is not an http:// or https:// URL")),
    }
}

pub(super) fn parse_role_name(text: &str) -> Result<String, String> {
    let valid = (1..=MAX_ROLE_NAME_LEN).contains(&text.len())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && text != "."
        && text != "..";
    if !valid {
        return Err(format!(
            "{text:?} is not a role name: use 1 to {MAX_ROLE_NAME_LEN} letters, digits, '-', '_' or '.'"
        ));
    }
    Ok(text.to_owned())
}

/// Characters IAM and STS accept in role names and session names (`[\w+=,.@-]`).
pub(super) fn is_iam_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '=' | ',' | '.' | '@' | '-')
}

/// Whether `c` may stand in a session tag's key or value. STS takes `[\p{L}\p{Z}\p{N}_.:/=+\-@]`;
/// the standard library cannot tell a letter from a combining mark (which STS refuses), so
/// only ASCII letters, digits and spaces are taken: anything else becomes `-` in a rendered
/// value (which then ends in a hash) and is refused in the configuration.
pub(super) fn is_tag_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '.' | ':' | '/' | '=' | '+' | '-' | '@')
}

/// A `session_name` template; `{host}` is filled with the short form of `host_name`.
pub(super) fn parse_session_name(text: &str, host_name: &str) -> Result<Template, String> {
    Template::parse(text, host_name)
}

pub(super) fn parse_external_id(text: &str) -> Result<String, String> {
    let valid = (2..=1224).contains(&text.len())
        && text
            .chars()
            .all(|c| is_iam_name_char(c) || c == ':' || c == '/');
    if !valid {
        // The value is deliberately not echoed: external ids are often treated as secrets.
        return Err(
            "is not an external id: STS wants 2 to 1224 of letters, digits and +=,.@:/_-"
                .to_owned(),
        );
    }
    Ok(text.to_owned())
}

/// A `source_identity` template, which STS also forbids to start with `aws:`.
pub(super) fn parse_source_identity(text: &str, host_name: &str) -> Result<Template, String> {
    if text.starts_with("aws:") {
        return Err(format!("{text:?} starts with \"aws:\", which STS reserves"));
    }
    Template::parse(text, host_name)
        .map_err(|reason| reason.replace("is not a session name", "is not a source identity"))
}

/// Parses durations such as `1h`, `90m`, `3600s` or `1h30m`, within what STS accepts.
pub(super) fn parse_session_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration(text).ok_or_else(|| {
        format!("{text:?} is not a duration such as \"1h\", \"45m\" or \"3600s\"")
    })?;
    let (min, max) = (DURATION_RANGE_SECS.start(), DURATION_RANGE_SECS.end());
    if !DURATION_RANGE_SECS.contains(&duration.as_secs()) {
        return Err(format!(
            "{text:?} is outside what STS accepts ({}m to {}h)",
            min / 60,
            max / 3600
        ));
    }
    Ok(duration)
}

/// Parses a sequence of `<digits><unit>` groups, unit one of `h`, `m`, `s`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let unit = match c {
            'h' => 3600,
            'm' => 60,
            's' => 1,
            _ => return None,
        };
        let amount: u64 = digits.parse().ok()?;
        total = total.checked_add(amount.checked_mul(unit)?)?;
        digits.clear();
    }
    (digits.is_empty() && !text.is_empty()).then(|| Duration::from_secs(total))
}

/// A session name derived from the host name: STS shows it in CloudTrail, so it should say
/// which host made the call. Characters STS refuses become `-`.
pub fn session_name_from_host(host_name: &str) -> String {
    let cleaned: String = host_name
        .chars()
        .map(|c| if is_iam_name_char(c) { c } else { '-' })
        .take(64)
        .collect();
    if cleaned.len() < 2 {
        "assume-roled".to_owned()
    } else {
        cleaned
    }
}

/// Whether `name` is a user or group name as `useradd` and `groupadd` accept it.
pub(super) fn is_account_name(name: &str) -> bool {
    let mut chars = name.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
    first_ok
        && name.len() <= 32
        && chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.'))
}

/// A network in CIDR notation (`172.17.0.0/16`, `fd00::/8`), for `allowed_networks`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// Parses `<address>/<prefix length>`; the address must have no bits past the prefix.
    pub fn parse(text: &str) -> Result<Self, String> {
        let expected = "expected a network such as \"172.17.0.0/16\"";
        let (address, prefix) = text
            .split_once('/')
            .ok_or_else(|| format!("{text:?} has no prefix length; {expected}"))?;
        let address: IpAddr = address
            .parse()
            .map_err(|_| format!("{text:?} is not an address; {expected}"))?;
        let bits = if address.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = prefix
            .parse()
            .ok()
            .filter(|p| u32::from(*p) <= bits)
            .ok_or_else(|| format!("{text:?} has a prefix length outside 0 to {bits}"))?;
        let network = Self { address, prefix };
        if !network.contains(address) || network.host_bits(address) != 0 {
            return Err(format!(
                "{text:?} has bits set past its prefix length; did you mean {}?",
                network.masked()
            ));
        }
        Ok(network)
    }

    /// Whether `address` is in this network (an IPv4 address never is in an IPv6 network).
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.address, address) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    fn host_bits(&self, address: IpAddr) -> u128 {
        match address {
            IpAddr::V4(ip) => u128::from(
                u32::from(ip) & u32::MAX.checked_shr(u32::from(self.prefix)).unwrap_or(0),
            ),
            IpAddr::V6(ip) => {
                u128::from(ip) & u128::MAX.checked_shr(u32::from(self.prefix)).unwrap_or(0)
            }
        }
    }

    fn masked(&self) -> String {
        let address = match self.address {
            IpAddr::V4(ip) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(ip) & mask).into())
            }
            IpAddr::V6(ip) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(ip) & mask).into())
            }
        };
        format!("{address}/{}", self.prefix)
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

/// A `[containers] listen` address: one SDKs accept for containers.
pub(super) fn parse_container_listen(text: &str) -> Result<SocketAddr, String> {
    let allowed = "169.254.170.23:<port>, 169.254.170.2:<port> or [fd00:ec2::23]:<port>";
    let address: SocketAddr = text
        .parse()
        .map_err(|_| format!("{text:?} is not an address such as \"169.254.170.23:80\""))?;
    if !super::CONTAINER_ADDRESSES.contains(&address.ip()) {
        return Err(format!(
            "{text:?} is not an address SDKs accept for container credentials: use {allowed}"
        ));
    }
    // A port below 1024 cannot be taken by a local user while the daemon is down (who would
    // then collect the containers' tokens, or hand them credentials of their own).
    if address.port() >= 1024 || address.port() == 0 {
        return Err(format!(
            "{text:?} has port {}: use a privileged port (below 1024, such as 80), which no \
             local user can take while the daemon is down",
            address.port()
        ));
    }
    Ok(address)
}
