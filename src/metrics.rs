//! Metrics in the Prometheus/OpenMetrics text format: requests by route and status, refreshes
//! by role and outcome and failed ones by STS error code, seconds until each role's credentials
//! expire, live user sessions of each role served per user, STS call latency, open, evicted and
//! refused connections, audit lines folded, the guard's state. None of them carries a secret.
//! `deploy/prometheus` has alert rules on them (with tests) and a dashboard.
//!
//! Counters are updated where things happen (the request guard, the refresher, the accept
//! loop); the expiry and session gauges are computed from the role table when scraped, so they
//! are never stale and a role removed by a reload disappears.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::guard_state::GuardState;

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// The content type of [`as_text_format`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The format a scrape asked for: OpenMetrics when its `Accept` names it (Prometheus does),
/// else the Prometheus text format (curl, `promtool check metrics`, older scrapers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    Text,
}

impl Format {
    /// The format `headers` ask for.
    pub fn asked_in(headers: &axum::http::HeaderMap) -> Self {
        let accept = headers.get(axum::http::header::ACCEPT);
        let accept = accept.and_then(|value| value.to_str().ok()).unwrap_or("");
        match accept.contains("application/openmetrics-text") {
            true => Format::OpenMetrics,
            false => Format::Text,
        }
    }
}

/// OpenMetrics text as the Prometheus text format (0.0.4): a counter family `x` is named
/// `x_total` there in its `HELP` and `TYPE` lines, as its samples are, and there is no `# EOF`.
/// Pure.
pub fn as_text_format(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(name) = line
            .strip_prefix("# TYPE ")
            .and_then(|rest| rest.strip_suffix(" counter"))
        {
            counters.insert(name);
        }
    }
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, after) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {after}"))
        });
        match renamed {
            Some(line) => text.push_str(&line),
            None => text.push_str(line),
        }
        text.push('\n');
    }
    text
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefreshLabels {
    role: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    role: String,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    reason: &'static str,
}

/// STS error codes (and the daemon's own, for calls that got no answer) counted by name; any
/// other is `Other`, so that no answer can create label sets without end.
const FAILURE_CODES: &[&str] = &[
    "AccessDenied",
    "ExpiredToken",
    "InvalidClientTokenId",
    "SignatureDoesNotMatch",
    "RegionDisabledException",
    "MalformedPolicyDocument",
    "PackedPolicyTooLarge",
    "ValidationError",
    "Throttling",
    "InternalFailure",
    "ServiceUnavailable",
    "IDPCommunicationError",
    "Timeout",
    "Unreachable",
    "NoSourceCredentials",
    "RequestNotBuilt",
    "EmptyResponse",
    "BadExpiration",
    "IncompleteCredentials",
];

/// The label an STS error code is counted under.
pub fn failure_code_label(code: &str) -> &'static str {
    FAILURE_CODES
        .iter()
        .find(|known| **known == code)
        .copied()
        .unwrap_or("Other")
}

/// Why a connection was closed unanswered by fair admission, as a label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedBecause {
    /// Its holder holds `max_connections_per_user`.
    UserAtLimit,
    /// Every place is taken by holders within their fair share.
    AllTaken,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RoleLabels {
    role: String,
}

/// The daemon's metrics; shared by reference, updated without locks on the hot path beyond a
/// read lock to find a label set that already exists.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    refreshes: Family<RefreshLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
    refused: Family<RefusedLabels, Counter>,
    audit_folded: Counter,
    expiry: Family<RoleLabels, Gauge<f64, AtomicU64>>,
    sessions: Family<RoleLabels, Gauge>,
    sts_latency: Histogram,
    connections: Gauge,
    evicted: Counter,
    /// The metadata guard, as its watch last wrote it (`guard::watch`).
    guard_in_place: Gauge,
    guard_lockdown: Gauge,
    guard_reapplied: Counter,
    /// The watch's own count at the last scrape: the counter moves by the difference.
    guard_reapplied_seen: AtomicU64,
    /// The counters of the answers nearly every request gets, found once: a lookup in
    /// `requests` takes its lock and hashes the labels.
    hot: [(RequestLabels, Counter); 2],
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("assume_roled");
        let requests = Family::<RequestLabels, Counter>::default();
        let refreshes = Family::<RefreshLabels, Counter>::default();
        let failures = Family::<FailureLabels, Counter>::default();
        let refused = Family::<RefusedLabels, Counter>::default();
        let audit_folded = Counter::default();
        let expiry = Family::<RoleLabels, Gauge<f64, AtomicU64>>::default();
        let sessions = Family::<RoleLabels, Gauge>::default();
        // 5 ms to about 20 s.
        let sts_latency = Histogram::new(exponential_buckets(0.005, 2.0, 13));
        let connections = Gauge::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        registry.register(
            "refreshes",
            "STS AssumeRole attempts by role and outcome",
            refreshes.clone(),
        );
        registry.register(
            "refresh_failures",
            "Failed STS AssumeRole attempts by role and error code (Other: a code not listed)",
            failures.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed unanswered by fair admission, by reason (user_at_limit: the \
             holder holds max_connections_per_user; all_taken: every place is in fair use)",
            refused.clone(),
        );
        registry.register(
            "audit_lines_folded",
            "Audit lines past audit_lines_per_minute, counted by outcome instead of written",
            audit_folded.clone(),
        );
        registry.register(
            "credentials_expiry_seconds",
            "Seconds until the served credentials of each role expire",
            expiry.clone(),
        );
        registry.register(
            "user_sessions",
            "Live per-user sessions of each role served per user",
            sessions.clone(),
        );
        registry.register(
            "sts_call_duration_seconds",
            "STS AssumeRole call latency",
            sts_latency.clone(),
        );
        registry.register(
            "open_connections",
            "Client connections being served",
            connections.clone(),
        );
        let evicted = Counter::default();
        registry.register(
            "connections_evicted",
            "Idle connections closed to admit another holder's under its fair share",
            evicted.clone(),
        );
        let (guard_in_place, guard_lockdown) = (Gauge::default(), Gauge::default());
        let guard_reapplied = Counter::default();
        registry.register(
            "guard_in_place",
            "1 when the metadata guard's watch has what the configuration asks for in place \
             (0: the lockdown, a failure, or no watch running)",
            guard_in_place.clone(),
        );
        registry.register(
            "guard_lockdown",
            "1 when the guard refuses metadata to all but root because the configuration \
             cannot be used",
            guard_lockdown.clone(),
        );
        registry.register(
            "guard_reapplied",
            "Times the guard's watch put its table back after it was removed or changed",
            guard_reapplied.clone(),
        );
        // Both reasons from the start, at 0: a rate or increase then sees the first refusal (a
        // series that appears at 1 has no increase to show).
        for reason in ["user_at_limit", "all_taken"] {
            let _ = refused.get_or_create(&RefusedLabels { reason });
        }
        let hot = [("roles", 200), ("imds_credentials", 200)].map(|(route, status)| {
            let labels = RequestLabels { route, status };
            let counter = requests.get_or_create(&labels).clone();
            (labels, counter)
        });
        Self {
            hot,
            registry,
            requests,
            refreshes,
            failures,
            refused,
            audit_folded,
            expiry,
            sessions,
            sts_latency,
            connections,
            evicted,
            guard_in_place,
            guard_lockdown,
            guard_reapplied,
            guard_reapplied_seen: AtomicU64::new(0),
        }
    }

    /// Sets the guard's series from what its watch last wrote (`None`: no watch).
    fn guard(&self, state: Option<GuardState>) {
        let state = state.unwrap_or_default();
        self.guard_in_place.set(i64::from(state.in_place));
        self.guard_lockdown.set(i64::from(state.lockdown));
        let before = self
            .guard_reapplied_seen
            .swap(state.reapplied, Ordering::Relaxed);
        // A restarted watch counts from zero again: all of its count is new.
        let new = if state.reapplied >= before {
            state.reapplied - before
        } else {
            state.reapplied
        };
        self.guard_reapplied.inc_by(new);
    }

    /// Counts one answered request; `route` comes from [`route_label`].
    pub fn request(&self, route: &'static str, status: u16) {
        let labels = RequestLabels { route, status };
        match self.hot.iter().find(|(hot, _)| *hot == labels) {
            Some((_, counter)) => counter.inc(),
            None => self.requests.get_or_create(&labels).inc(),
        };
    }

    /// Counts one refresh attempt: `outcome` is `success`, `transient` or `configuration`.
    pub fn refresh(&self, role: &str, outcome: &'static str, seconds: f64) {
        let labels = RefreshLabels {
            role: role.to_owned(),
            outcome,
        };
        self.refreshes.get_or_create(&labels).inc();
        self.sts_latency.observe(seconds);
    }

    /// Counts one failed refresh attempt of `role` by its STS error code.
    pub fn refresh_failed(&self, role: &str, code: &str) {
        let labels = FailureLabels {
            role: role.to_owned(),
            code: failure_code_label(code),
        };
        self.failures.get_or_create(&labels).inc();
    }

    /// A connection closed unanswered by fair admission.
    pub fn connection_refused(&self, because: RefusedBecause) {
        let reason = match because {
            RefusedBecause::UserAtLimit => "user_at_limit",
            RefusedBecause::AllTaken => "all_taken",
        };
        self.refused.get_or_create(&RefusedLabels { reason }).inc();
    }

    /// The counter of folded audit lines, for the audit to count into.
    pub fn audit_lines_folded(&self) -> Counter {
        self.audit_folded.clone()
    }

    pub fn connection_opened(&self) {
        self.connections.inc();
    }

    pub fn connection_closed(&self) {
        self.connections.dec();
    }

    /// An idle connection was closed to make room for another holder's (fair admission).
    pub fn connection_evicted(&self) {
        self.evicted.inc();
    }

    /// The text a scrape gets, with the gauges of each role's expiry (left at `now`) and of
    /// each per-user role's live sessions.
    pub fn render<'a>(
        &self,
        expiries: impl IntoIterator<Item = (&'a str, SystemTime)>,
        sessions: impl IntoIterator<Item = (&'a str, usize)>,
        guard: Option<GuardState>,
        now: SystemTime,
    ) -> String {
        self.guard(guard);
        self.sessions.clear();
        for (name, live) in sessions {
            let labels = RoleLabels {
                role: name.to_owned(),
            };
            self.sessions.get_or_create(&labels).set(live as i64);
        }
        self.expiry.clear();
        for (name, expiry) in expiries {
            let left = match expiry.duration_since(now) {
                Ok(left) => left.as_secs_f64(),
                Err(past) => -past.duration().as_secs_f64(),
            };
            let labels = RoleLabels {
                role: name.to_owned(),
            };
            self.expiry.get_or_create(&labels).set(left);
        }
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }
}

/// Whether a scrape may see role names: behind the server's token it may; on
/// `metrics_listen`, which any local user can read, it may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    Shown,
    Withheld,
}

/// `text` (a rendered scrape) with no role named: each role-labelled series folded over its
/// roles (refreshes and sessions summed, the expiry the soonest). Users are never named in
/// metrics. Pure.
pub fn without_names(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // The current family's role-labelled series folded (series without the role, value),
    // written when the family ends: samples stay under their family's metadata.
    let mut folded: Vec<(String, f64)> = Vec::new();
    for line in text.lines() {
        let Some((series, value)) = role_sample(line) else {
            // A role-labelled line that could not be read is left out, never passed on.
            if line.contains("role=\"") && !line.starts_with('#') {
                continue;
            }
            if line.starts_with("# HELP ") || line == "# EOF" {
                for (series, value) in folded.drain(..) {
                    out.push_str(&format!("{series} {value}\n"));
                }
            }
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let soonest = series.starts_with("assume_roled_credentials_expiry_seconds");
        match folded.iter_mut().find(|(known, _)| *known == series) {
            Some((_, total)) if soonest => *total = total.min(value),
            Some((_, total)) => *total += value,
            None => folded.push((series, value)),
        }
    }
    out
}

/// A sample line with a `role` label: the series without it, and the value.
fn role_sample(line: &str) -> Option<(String, f64)> {
    let (name, rest) = line.split_once('{')?;
    let (labels, value) = rest.split_once("} ")?;
    let value: f64 = value.trim().parse().ok()?;
    let mut kept = Vec::new();
    let mut had_role = false;
    for label in labels.split(',') {
        if label.starts_with("role=") {
            had_role = true;
        } else if !label.is_empty() {
            kept.push(label);
        }
    }
    if !had_role {
        return None;
    }
    let series = match kept.is_empty() {
        true => name.to_owned(),
        false => format!("{name}{{{}}}", kept.join(",")),
    };
    Some((series, value))
}

/// A bounded set of route names, so that arbitrary paths cannot create label sets.
pub fn route_label(path: &str) -> &'static str {
    match path {
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/status" => "status",
        "/metrics" => "metrics",
        "/latest/api/token" => "imds_token",
        _ if path.starts_with("/roles/") => "roles",
        _ if path.starts_with("/latest/meta-data/iam/security-credentials/") => "imds_credentials",
        _ if path.starts_with("/latest/") => "imds_other",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_labels_are_bounded() {
        assert_eq!(route_label("/roles/piyo"), "roles");
        assert_eq!(route_label("/roles/../../etc/passwd"), "roles");
        assert_eq!(
            route_label("/latest/meta-data/iam/security-credentials/x"),
            "imds_credentials"
        );
        assert_eq!(route_label("/latest/meta-data/instance-id"), "imds_other");
        assert_eq!(route_label("/anything/else"), "other");
    }

    /// The guard's series follow the watch's state file; a restarted watch (its count back to
    /// a smaller number) adds its whole count, and the counter never goes down.
    #[test]
    fn guard_series_follow_the_watch() {
        let metrics = Metrics::new();
        let render = |state| metrics.render([], [], state, SystemTime::now());
        let text = render(None);
        assert!(text.contains("assume_roled_guard_in_place 0"), "{text}");
        let state = |in_place, lockdown, reapplied| {
            Some(GuardState {
                in_place,
                lockdown,
                reapplied,
            })
        };
        let text = render(state(true, false, 3));
        assert!(text.contains("assume_roled_guard_in_place 1"), "{text}");
        assert!(
            text.contains("assume_roled_guard_reapplied_total 3"),
            "{text}"
        );
        let text = render(state(false, true, 5));
        assert!(text.contains("assume_roled_guard_lockdown 1"), "{text}");
        assert!(
            text.contains("assume_roled_guard_reapplied_total 5"),
            "{text}"
        );
        let text = render(state(true, false, 1));
        assert!(
            text.contains("assume_roled_guard_reapplied_total 6"),
            "{text}"
        );
    }

    /// On the metrics listener no role is named: series are folded over roles.
    #[test]
    fn names_are_withheld_where_there_is_no_token() {
        let metrics = Metrics::new();
        metrics.refresh("piyo", "success", 0.02);
        metrics.refresh("fuga", "success", 0.02);
        metrics.refresh("fuga", "transient", 0.02);
        let now = SystemTime::now();
        let soon = now + std::time::Duration::from_secs(100);
        let later = now + std::time::Duration::from_secs(900);
        let text = metrics.render(
            [("piyo", later), ("fuga", soon)],
            [("mine", 3), ("ours", 2)],
            None,
            now,
        );
        let anonymous = without_names(&text);
        for name in ["piyo", "fuga", "mine", "ours", "role="] {
            assert!(!anonymous.contains(name), "{name} in:\n{anonymous}");
        }
        assert!(
            anonymous.contains("assume_roled_refreshes_total{outcome=\"success\"} 2\n"),
            "{anonymous}"
        );
        assert!(anonymous.contains("assume_roled_refreshes_total{outcome=\"transient\"} 1\n"));
        assert!(
            anonymous.contains("assume_roled_user_sessions 5\n"),
            "{anonymous}"
        );
        let soonest = anonymous
            .lines()
            .find_map(|l| l.strip_prefix("assume_roled_credentials_expiry_seconds "))
            .unwrap();
        assert!(
            (99.0..=100.0).contains(&soonest.parse::<f64>().unwrap()),
            "{soonest}"
        );
        assert!(anonymous.ends_with("# EOF\n"));
        assert!(anonymous.contains("assume_roled_open_connections"));
    }

    #[test]
    fn counters_appear_in_the_text() {
        let metrics = Metrics::new();
        metrics.request(route_label("/roles/piyo"), 200);
        metrics.request(route_label("/roles/piyo"), 200);
        metrics.request(route_label("/nope"), 401);
        metrics.refresh("piyo", "success", 0.02);
        metrics.connection_opened();
        let text = metrics.render([], [("fuga", 3)], None, SystemTime::now());
        assert!(
            text.contains("assume_roled_http_requests_total{route=\"roles\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("assume_roled_http_requests_total{route=\"other\",status=\"401\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("assume_roled_refreshes_total{role=\"piyo\",outcome=\"success\"} 1"),
            "{text}"
        );
        assert!(text.contains("assume_roled_open_connections 1"), "{text}");
        assert!(
            text.contains("assume_roled_user_sessions{role=\"fuga\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("assume_roled_sts_call_duration_seconds_count 1"),
            "{text}"
        );
    }

    /// What the alert rules in deploy/prometheus read: failures by code (a code not listed is
    /// `Other`, so an answer cannot make label sets without end), refusals by reason, folds.
    #[test]
    fn failures_refusals_and_folds_are_counted() {
        let metrics = Metrics::new();
        metrics.refresh_failed("piyo", "AccessDenied");
        metrics.refresh_failed("piyo", "AccessDenied");
        metrics.refresh_failed("piyo", "SomethingNew<script>");
        metrics.connection_refused(RefusedBecause::UserAtLimit);
        metrics.audit_lines_folded().inc_by(3);
        let text = metrics.render([], [], None, SystemTime::now());
        for line in [
            "assume_roled_refresh_failures_total{role=\"piyo\",code=\"AccessDenied\"} 2",
            "assume_roled_refresh_failures_total{role=\"piyo\",code=\"Other\"} 1",
            "assume_roled_connections_refused_total{reason=\"user_at_limit\"} 1",
            "assume_roled_audit_lines_folded_total 3",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
        assert_eq!(failure_code_label("Throttling"), "Throttling");
        assert_eq!(failure_code_label("throttling"), "Other");
    }

    #[test]
    fn openmetrics_becomes_the_text_format() {
        let metrics = Metrics::new();
        metrics.refresh("piyo", "success", 0.02);
        let open = metrics.render([], [], None, SystemTime::now());
        assert!(open.ends_with("# EOF\n"), "{open}");
        let text = as_text_format(&open);
        assert!(!text.contains("# EOF"), "{text}");
        assert!(
            text.contains("# TYPE assume_roled_refreshes_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP assume_roled_refreshes_total STS AssumeRole"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE assume_roled_open_connections gauge\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE assume_roled_sts_call_duration_seconds histogram\n"),
            "{text}"
        );
        let samples = |t: &str| t.lines().filter(|l| !l.starts_with('#')).count();
        assert_eq!(samples(&text), samples(&open), "every sample kept as it is");
        let headers = |accept: &str| {
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(axum::http::header::ACCEPT, accept.parse().unwrap());
            headers
        };
        let prometheus =
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        assert_eq!(Format::asked_in(&headers(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::asked_in(&headers("*/*")), Format::Text);
        assert_eq!(
            Format::asked_in(&axum::http::HeaderMap::new()),
            Format::Text
        );
    }

    /// Every metric the alert rules and the dashboard in `deploy/` name is one of these (a
    /// renamed metric would leave an alert that never fires, silently).
    #[test]
    fn the_deploy_rules_and_dashboard_name_only_these_metrics() {
        let metrics = Metrics::new();
        metrics.refresh("piyo", "success", 0.02);
        metrics.refresh_failed("piyo", "AccessDenied");
        let text = metrics.render(
            [("piyo", SystemTime::now())],
            [("piyo", 1)],
            None,
            SystemTime::now(),
        );
        let families: Vec<&str> = (text.lines())
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|rest| rest.split(' ').next())
            .collect();
        let deployed = [
            include_str!("../deploy/prometheus/assume-roled.rules.yml"),
            include_str!("../deploy/grafana/assume-roled.json"),
        ];
        let mut named = 0;
        for text in deployed {
            for name in metric_names(text) {
                let family = ["_total", "_bucket", "_count", "_sum"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .unwrap_or(name);
                assert!(
                    families.contains(&family),
                    "{name} is not a metric: {families:?}"
                );
                named += 1;
            }
        }
        assert!(named > 20, "the files name metrics: {named}");
    }

    /// Every `assume_roled_*` name in `text`.
    fn metric_names(text: &str) -> Vec<&str> {
        let mut names = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("assume_roled_") {
            let length = rest[at..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len() - at);
            names.push(&rest[at..at + length]);
            rest = &rest[at + length..];
        }
        names
    }
}
