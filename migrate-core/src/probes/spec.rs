//! Probe definitions (docs/design.md §5): what to request, from where, what to expect, and the Argo-style policy
//! that turns measurements into a verdict. Header values that may be secrets are redacted in `Debug`,
//! `Display` and serialization (reports), and kept usable through [`Headers::expose`].

use crate::steps::Step;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// A duration written like `"5s"`, `"500ms"`, `"2m"`, `"1h"`, `"1m30s"` (a unit is required; see
/// [`parse_duration`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Dur(pub Duration);

/// A duration string that does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid duration {input:?}: {why}; write e.g. \"500ms\", \"5s\", \"2m\", \"1h\" or \"1m30s\"")]
pub struct DurationError {
    /// The offending text.
    pub input: String,
    /// Why.
    pub why: String,
}

/// The longest duration any setting accepts: longer than any CI job or Lease, and far from the values at
/// which deadline arithmetic (`Instant + d`, Lease seconds as `i32`) would overflow.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Parse `"5s"`, `"500ms"`, `"2m"`, `"1h30m"`, `"1.5s"`, `"2 minutes"` with jiff's "friendly" duration
/// grammar (`jiff::fmt::friendly`, the format jiff prints and reads). Unitless numbers are rejected
/// (ambiguous), and so are negative durations, calendar units (days and longer vary in length) and anything
/// longer than [`MAX_DURATION`]. The error keeps the input and a short reason, followed by examples.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    static PARSER: jiff::fmt::friendly::SpanParser = jiff::fmt::friendly::SpanParser::new();
    let err = |why: &str| DurationError {
        input: s.to_string(),
        why: why.to_string(),
    };
    let t = s.trim();
    if t.is_empty() {
        return Err(err("empty"));
    }
    if t.bytes().all(|b| b.is_ascii_digit()) {
        return Err(err("missing unit"));
    }
    let total = PARSER
        .parse_unsigned_duration(t)
        .map_err(|e| err(&duration_reason(&e.to_string())))?;
    if total > MAX_DURATION {
        return Err(err("longer than 720h (30 days), the longest duration accepted"));
    }
    Ok(total)
}

/// A short reason for a duration jiff refused, in our words where jiff's are about its own API.
fn duration_reason(jiff_message: &str) -> String {
    let m = jiff_message
        .split_once("duration format: ")
        .map_or(jiff_message, |(_, rest)| rest);
    if m.contains("negative") {
        "negative".into()
    } else if m.contains("calendar units") {
        "days, weeks, months and years vary in length; use hours (\"24h\")".into()
    } else if m.contains("unit designator") {
        "unknown or missing unit".into()
    } else if m.contains("no integer was found") {
        "expected a number".into()
    } else {
        m.to_string()
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            write!(f, "0s")
        } else if ms.is_multiple_of(3_600_000) {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl std::str::FromStr for Dur {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_duration(s).map(Dur)
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = String::deserialize(d)?;
        t.parse().map_err(serde::de::Error::custom)
    }
}

impl Dur {
    /// From seconds.
    pub fn secs(n: u64) -> Self {
        Dur(Duration::from_secs(n))
    }
    /// From milliseconds.
    pub fn millis(n: u64) -> Self {
        Dur(Duration::from_millis(n))
    }
}

/// Header names whose values are always treated as secrets.
pub const DEFAULT_SECRET_HEADERS: [&str; 4] = ["authorization", "cookie", "x-api-key", "proxy-authorization"];

/// Text shown instead of a secret header value.
pub const REDACTED: &str = "<redacted>";

/// One request header; `secret` values never appear in Debug, Display or serialization.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    /// Header name.
    pub name: String,
    value: String,
    /// Whether the value is secret.
    pub secret: bool,
}

impl Header {
    /// A header; secret when its name is in [`DEFAULT_SECRET_HEADERS`] or its value starts with `secret:`
    /// (the prefix is stripped).
    pub fn new(name: &str, value: &str) -> Self {
        let (value, marked) = match value.strip_prefix("secret:") {
            Some(v) => (v.to_string(), true),
            None => (value.to_string(), false),
        };
        let by_name = DEFAULT_SECRET_HEADERS
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name));
        Header {
            name: name.to_string(),
            value,
            secret: marked || by_name,
        }
    }

    /// The real value, for sending the request only.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// The value safe to show.
    pub fn shown(&self) -> &str {
        if self.secret { REDACTED } else { &self.value }
    }
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.name, self.shown())
    }
}

/// Request headers (a map `name: value` in configuration).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Headers(pub Vec<Header>);

impl Headers {
    /// Mark the headers named in `names` (case-insensitive) as secret.
    pub fn mark_secret(&mut self, names: &[String]) {
        for h in &mut self.0 {
            if names.iter().any(|n| n.eq_ignore_ascii_case(&h.name)) {
                h.secret = true;
            }
        }
    }

    /// `(name, real value)` pairs to send.
    pub fn expose(&self) -> Vec<(String, String)> {
        self.0.iter().map(|h| (h.name.clone(), h.value.clone())).collect()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

impl fmt::Display for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|h| format!("{}: {}", h.name, h.shown()))
            .collect();
        write!(f, "{}", parts.join(", "))
    }
}

impl Serialize for Headers {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for h in &self.0 {
            m.serialize_entry(&h.name, h.shown())?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = std::collections::BTreeMap::<String, String>::deserialize(d)?;
        Ok(Headers(m.iter().map(|(k, v)| Header::new(k, v)).collect()))
    }
}

/// Query parameter names whose values are treated as secrets in shown URLs (case-insensitive).
const SECRET_QUERY_KEYS: [&str; 9] = [
    "token",
    "access_token",
    "api_key",
    "apikey",
    "key",
    "password",
    "secret",
    "sig",
    "signature",
];

/// A URL safe to show in logs, Events and reports: the password of `user:password@` and the values of
/// query parameters that carry credentials ([`SECRET_QUERY_KEYS`]) are replaced by [`REDACTED`]. A URL
/// that does not parse is shown as its scheme and host part only, up to the first `/` after `//`.
pub fn redacted_url(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        return format!("{scheme}://{host}/{REDACTED}");
    };
    if u.password().is_some() {
        let _ = u.set_password(Some(REDACTED));
    }
    if u.query().is_some() {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(k, v)| {
                let secret = SECRET_QUERY_KEYS.iter().any(|s| s.eq_ignore_ascii_case(&k));
                (
                    k.into_owned(),
                    if secret {
                        REDACTED.to_string()
                    } else {
                        v.into_owned()
                    },
                )
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

fn serialize_redacted_url<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redacted_url(url))
}

/// HTTP probe: a request sent by the runner (directly, or through `proxy`, e.g. meshsim's proxy endpoint).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "HttpProbeRaw")]
pub struct HttpProbe {
    /// URL, e.g. `http://api.app.svc.cluster.local/get` (shown redacted, see [`redacted_url`]).
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: String,
    /// Method (default GET).
    pub method: String,
    /// Request headers.
    pub headers: Headers,
    /// Request body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<String>,
    /// HTTP proxy URL to send the request through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<String>,
    /// Source hint `ns/pod` (meshsim's proxy reads it from a header to pick the caller workload).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Extra header names whose values are secret.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secret_headers: Vec<String>,
}

#[derive(Deserialize)]
struct HttpProbeRaw {
    url: String,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default)]
    headers: Headers,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    proxy: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    secret_headers: Vec<String>,
}

impl From<HttpProbeRaw> for HttpProbe {
    fn from(r: HttpProbeRaw) -> Self {
        let mut headers = r.headers;
        headers.mark_secret(&r.secret_headers);
        HttpProbe {
            url: r.url,
            method: r.method.to_ascii_uppercase(),
            headers,
            body: r.body,
            proxy: r.proxy,
            source: r.source,
            secret_headers: r.secret_headers,
        }
    }
}

fn default_method() -> String {
    "GET".into()
}

/// Default curl image of job probes, pinned by tag and digest: a probe Job must run the same curl on
/// every node and every run, and an implicit `latest` would let a registry push change what the gates
/// measure. The digest is the multi-arch index digest of the 8.21.0 tag as public manifests pin it (not
/// pulled on our build machines); refresh with `crane digest curlimages/curl:TAG`. Documented with the
/// same value in `config/default.toml`.
pub const DEFAULT_JOB_IMAGE: &str =
    "curlimages/curl:8.21.0@sha256:7c12af72ceb38b7432ab85e1a265cff6ae58e06f95539d539b654f2cfa64bb13";

/// Job probe: a Kubernetes Job running curl in `source_namespace` as `service_account`, so the request
/// carries a mesh identity (needed for L7 AuthorizationPolicy expectations).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "JobProbeRaw")]
pub struct JobProbe {
    /// Namespace the Job runs in.
    pub source_namespace: String,
    /// Service account of the Job's pod.
    pub service_account: String,
    /// URL (shown redacted, see [`redacted_url`]).
    #[serde(serialize_with = "serialize_redacted_url")]
    pub url: String,
    /// Method.
    pub method: String,
    /// Request headers.
    pub headers: Headers,
    /// Container image (default [`DEFAULT_JOB_IMAGE`], a digest-pinned `curlimages/curl`).
    pub image: String,
    /// Deadline for the Job to finish.
    pub timeout: Dur,
    /// Extra header names whose values are secret.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secret_headers: Vec<String>,
}

#[derive(Deserialize)]
struct JobProbeRaw {
    source_namespace: String,
    #[serde(default = "default_sa")]
    service_account: String,
    url: String,
    #[serde(default = "default_method")]
    method: String,
    #[serde(default)]
    headers: Headers,
    #[serde(default = "default_image")]
    image: String,
    #[serde(default = "default_job_timeout")]
    timeout: Dur,
    #[serde(default)]
    secret_headers: Vec<String>,
}

fn default_sa() -> String {
    "default".into()
}
fn default_image() -> String {
    DEFAULT_JOB_IMAGE.into()
}
fn default_job_timeout() -> Dur {
    Dur::secs(60)
}

impl From<JobProbeRaw> for JobProbe {
    fn from(r: JobProbeRaw) -> Self {
        let mut headers = r.headers;
        headers.mark_secret(&r.secret_headers);
        JobProbe {
            source_namespace: r.source_namespace,
            service_account: r.service_account,
            url: r.url,
            method: r.method.to_ascii_uppercase(),
            headers,
            image: r.image,
            timeout: r.timeout,
            secret_headers: r.secret_headers,
        }
    }
}

/// How the probe is sent (`kind = "http" | "job"` in configuration).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ProbeKind {
    /// From the runner.
    Http(HttpProbe),
    /// From a Job inside the mesh.
    Job(JobProbe),
}

/// Accepted HTTP status codes: a list of inclusive ranges. Written as `200`, `"200-299"`, `"200,204"`,
/// `[200, "300-399"]`. Code `0` stands for "no HTTP response" (connection reset/refused, curl's `000`),
/// which is what ztunnel's denial looks like to a caller without an Envoy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusSet(pub Vec<(u16, u16)>);

impl Default for StatusSet {
    fn default() -> Self {
        StatusSet(vec![(200, 299)])
    }
}

impl StatusSet {
    /// Does the set accept `code`?
    pub fn accepts(&self, code: u16) -> bool {
        self.0.iter().any(|(a, b)| (*a..=*b).contains(&code))
    }

    fn parse_item(s: &str) -> Result<(u16, u16), String> {
        let s = s.trim();
        let num = |x: &str| {
            x.trim()
                .parse::<u16>()
                .map_err(|_| format!("invalid status {x:?}"))
        };
        match s.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(format!("empty status range {s:?}"));
                }
                Ok((a, b))
            }
            None => {
                let n = num(s)?;
                Ok((n, n))
            }
        }
    }

    /// Parse `"200-299,404"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let items: Result<Vec<_>, _> = s.split(',').map(Self::parse_item).collect();
        let items = items?;
        if items.is_empty() {
            return Err("empty status set".into());
        }
        Ok(StatusSet(items))
    }
}

impl fmt::Display for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .0
            .iter()
            .map(|(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") })
            .collect();
        write!(f, "{}", parts.join(","))
    }
}

impl Serialize for StatusSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for StatusSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Item {
            Code(u16),
            Text(String),
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(Item),
            List(Vec<Item>),
        }
        let items = match Raw::deserialize(d)? {
            Raw::One(i) => vec![i],
            Raw::List(l) => l,
        };
        let mut out = Vec::new();
        for i in items {
            match i {
                Item::Code(c) => out.push((c, c)),
                Item::Text(t) => out.extend(StatusSet::parse(&t).map_err(serde::de::Error::custom)?.0),
            }
        }
        if out.is_empty() {
            return Err(serde::de::Error::custom("empty status set"));
        }
        Ok(StatusSet(out))
    }
}

/// What a response must look like.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Expectation {
    /// Accepted status codes (default 200-299).
    pub status: StatusSet,
    /// Substring the body must contain.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_contains: Option<String>,
    /// Headers that must be present (case-insensitive), e.g. `x-request-id` (an Envoy was on the path).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub header_present: Vec<String>,
    /// Headers that must be absent, e.g. `x-request-id` (L4-only path).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub header_absent: Vec<String>,
}

/// Argo-style measurement policy (docs/design.md §5; `docs/reference/progressive-delivery-peers.md` §1.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbePolicy {
    /// Time between measurements (default 2s).
    pub interval: Dur,
    /// Total measurements; `None` = until stopped (continuous mode) (default 3).
    pub count: Option<u32>,
    /// Consecutive successes that end the probe early with Pass (0 = disabled, default).
    pub consecutive_successes: u32,
    /// Total failures tolerated (default 0; the probe fails at `failure_limit + 1`).
    pub failure_limit: u32,
    /// Consecutive failures tolerated (`None` = no separate limit).
    pub consecutive_failure_limit: Option<u32>,
    /// Consecutive errors tolerated (default 4, Argo's `consecutiveErrorLimit`).
    pub error_limit: u32,
    /// Per-request timeout (default 10s).
    pub timeout: Dur,
    /// Delay before the first measurement (default 0).
    pub initial_delay: Dur,
}

impl Default for ProbePolicy {
    fn default() -> Self {
        ProbePolicy {
            interval: Dur::secs(2),
            count: Some(3),
            consecutive_successes: 0,
            failure_limit: 0,
            consecutive_failure_limit: None,
            error_limit: 4,
            timeout: Dur::secs(10),
            initial_delay: Dur::default(),
        }
    }
}

/// When a probe runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ProbeSchedule {
    /// Steps after which the probe runs (as part of that step's gate).
    pub after_steps: Vec<Step>,
    /// Run continuously during step 4 (restart), counting against the policy's budget.
    pub during_restart: bool,
    /// Run after a rollback (verification).
    pub after_rollback: bool,
}

impl Default for ProbeSchedule {
    fn default() -> Self {
        ProbeSchedule {
            after_steps: vec![
                Step::EnableAmbient,
                Step::RemoveInjection,
                Step::Restart,
                Step::RemoveSidecarPolicies,
                Step::Validate,
            ],
            during_restart: true,
            after_rollback: true,
        }
    }
}

/// One traffic probe.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProbeSpec {
    /// Unique name (used in reports and Job names).
    pub name: String,
    /// How it is sent.
    #[serde(flatten)]
    pub kind: ProbeKind,
    /// What the response must look like.
    #[serde(default)]
    pub expect: Expectation,
    /// Measurement policy.
    #[serde(default)]
    pub policy: ProbePolicy,
    /// An L7 expectation (e.g. "DELETE gets 403"): only meaningful once the waypoint enforces the twins, so
    /// it runs only after steps 5 and 6 (and after rollback, where sidecars enforce the original policy).
    #[serde(default)]
    pub l7: bool,
    /// When it runs (L7 probes ignore steps before 5 and `during_restart`).
    #[serde(default)]
    pub schedule: ProbeSchedule,
}

impl ProbeSpec {
    /// Does this probe run as part of `step`'s gate?
    pub fn runs_after(&self, step: Step) -> bool {
        if self.l7 && step < Step::RemoveSidecarPolicies {
            return false;
        }
        self.schedule.after_steps.contains(&step)
    }

    /// Does this probe run continuously during the restart?
    pub fn runs_during_restart(&self) -> bool {
        !self.l7 && self.schedule.during_restart
    }

    /// Does this probe verify a rollback?
    pub fn runs_after_rollback(&self) -> bool {
        self.schedule.after_rollback
    }

    /// Namespaces named by the probe: the Job's source namespace, the `source` hint's namespace and the
    /// target namespace from the URL host (`svc.ns[.svc.cluster.local]`). Used for the caller graph.
    pub fn caller_and_target(&self) -> (Option<String>, Option<String>) {
        let (source, url) = match &self.kind {
            ProbeKind::Http(h) => (
                h.source
                    .as_ref()
                    .and_then(|s| s.split('/').next())
                    .map(str::to_string),
                &h.url,
            ),
            ProbeKind::Job(j) => (Some(j.source_namespace.clone()), &j.url),
        };
        (source, url_namespace(url))
    }
}

/// The namespace of `http://svc.ns.svc.cluster.local[:port]/path` or `http://svc.ns/...`; `None` for a bare
/// service name or a host of three or more labels without `.svc`. A two-label external host (`example.com`)
/// is indistinguishable from `svc.ns` and yields its last label.
pub fn url_namespace(url: &str) -> Option<String> {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let host = rest.split(['/', '?']).next()?.split(':').next()?;
    let parts: Vec<&str> = host.split('.').collect();
    match parts.as_slice() {
        [_, ns] => Some(ns.to_string()),
        [_, ns, "svc", ..] => Some(ns.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shown_urls_hide_credentials() {
        assert_eq!(
            redacted_url("https://probe:hunter2@api.example.com/health?token=abc&x=1"),
            format!(
                "https://probe:{}@api.example.com/health?token=%3Credacted%3E&x=1",
                "%3Credacted%3E"
            )
        );
        assert_eq!(redacted_url("http://api.shop/get"), "http://api.shop/get");
        let odd = redacted_url("http://user:pw@[bad/x?key=1");
        assert!(!odd.contains("pw") && !odd.contains("user"), "{odd}");
        let p: HttpProbe = serde_json::from_value(json!({"url": "http://u:secret@api/x?api_key=k"})).unwrap();
        let shown = serde_json::to_string(&p).unwrap();
        assert!(!shown.contains("secret") && !shown.contains("=k"), "{shown}");
        assert_eq!(
            p.url, "http://u:secret@api/x?api_key=k",
            "the real URL is kept for sending"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration(" 10s ").unwrap(), Duration::from_secs(10));
        assert!(parse_duration("").is_err());
        assert!(
            parse_duration("5")
                .unwrap_err()
                .to_string()
                .contains("missing unit")
        );
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2 minutes").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("-3s").unwrap_err().why, "negative");
        assert_eq!(parse_duration("5x").unwrap_err().why, "unknown or missing unit");
        assert!(parse_duration("1d").unwrap_err().why.contains("24h"));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("5s3").is_err());
        // Bounded: no deadline arithmetic can overflow on a setting.
        assert_eq!(parse_duration("720h").unwrap(), MAX_DURATION);
        let long = parse_duration("721h").unwrap_err();
        assert!(long.why.contains("longest duration accepted"), "{long}");
        assert!(parse_duration("18446744073709551615s").is_err());
        assert!(parse_duration("5124095576030431h").is_err());
        assert_eq!(Dur::millis(1500).to_string(), "1500ms");
        assert_eq!(Dur::secs(120).to_string(), "2m");
        assert_eq!(Dur::secs(0).to_string(), "0s");
        let d: Dur = serde_json::from_value(json!("250ms")).unwrap();
        assert_eq!(d, Dur::millis(250));
        assert!(serde_json::from_value::<Dur>(json!(7)).is_err());
        assert_eq!(serde_json::to_value(Dur::secs(7)).unwrap(), json!("7s"));
        assert!(serde_json::from_value::<Dur>(json!("abc")).is_err());
    }

    #[test]
    fn status_sets() {
        let s: StatusSet = serde_json::from_value(json!(200)).unwrap();
        assert!(s.accepts(200) && !s.accepts(201));
        let s: StatusSet = serde_json::from_value(json!("200-299")).unwrap();
        assert!(s.accepts(204) && !s.accepts(300));
        let s: StatusSet = serde_json::from_value(json!([403, "500-503"])).unwrap();
        assert!(s.accepts(403) && s.accepts(502) && !s.accepts(200));
        assert_eq!(s.to_string(), "403,500-503");
        let s: StatusSet = serde_json::from_value(json!("0,503")).unwrap();
        assert!(s.accepts(0));
        assert!(serde_json::from_value::<StatusSet>(json!("300-200")).is_err());
        assert!(serde_json::from_value::<StatusSet>(json!("abc")).is_err());
        assert!(serde_json::from_value::<StatusSet>(json!([])).is_err());
        assert!(StatusSet::default().accepts(200));
    }

    #[test]
    fn http_probe_defaults_and_redaction() {
        let p: ProbeSpec = serde_json::from_value(json!({
            "name": "web-to-api",
            "kind": "http",
            "url": "http://api.app.svc.cluster.local/get",
            "headers": {"Authorization": "Bearer abc", "x-token": "secret:s3cr3t", "x-trace": "1",
                        "x-custom": "c"},
            "secret_headers": ["X-Custom"],
            "source": "app/web-123"
        }))
        .unwrap();
        let ProbeKind::Http(h) = &p.kind else {
            panic!("http expected")
        };
        assert_eq!(h.method, "GET");
        let exposed = h.headers.expose();
        assert!(exposed.contains(&("x-token".into(), "s3cr3t".into())));
        assert!(exposed.contains(&("Authorization".into(), "Bearer abc".into())));
        let dbg = format!("{p:?}");
        assert!(
            !dbg.contains("abc") && !dbg.contains("s3cr3t") && !dbg.contains("\"c\""),
            "{dbg}"
        );
        assert!(dbg.contains("x-trace: 1"));
        let shown = h.headers.to_string();
        assert!(shown.contains("x-custom: <redacted>") && shown.contains("x-trace: 1"));
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["headers"]["Authorization"], REDACTED);
        assert_eq!(v["headers"]["x-token"], REDACTED);
        assert_eq!(v["headers"]["x-custom"], REDACTED);
        assert_eq!(v["headers"]["x-trace"], "1");
        assert_eq!(v["kind"], "http");
        assert!(!v.to_string().contains("s3cr3t"));
        assert_eq!(p.expect.status, StatusSet::default());
        assert_eq!(p.policy, ProbePolicy::default());
        assert_eq!(p.caller_and_target(), (Some("app".into()), Some("app".into())));
    }

    #[test]
    fn default_job_image_is_pinned_and_documented_in_default_toml() {
        let (name_tag, digest) = DEFAULT_JOB_IMAGE
            .split_once("@sha256:")
            .expect("pinned by digest");
        assert!(
            name_tag.starts_with("curlimages/curl:8."),
            "{name_tag}: a curl 8 tag"
        );
        assert_eq!(digest.len(), 64, "a sha256 digest: {digest}");
        assert!(
            digest
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        let documented = format!("image = \"{DEFAULT_JOB_IMAGE}\"");
        assert!(
            include_str!("../../../config/default.toml").contains(&documented),
            "config/default.toml documents the job probe image as {documented}"
        );
    }

    #[test]
    fn job_probe_defaults() {
        let p: ProbeSpec = serde_json::from_value(json!({
            "name": "delete-denied", "kind": "job", "source_namespace": "other", "url": "http://api.app/x",
            "method": "delete", "expect": {"status": 403}, "l7": true,
            "policy": {"interval": "1s", "count": 2, "failure_limit": 1}
        }))
        .unwrap();
        let ProbeKind::Job(j) = &p.kind else {
            panic!("job expected")
        };
        assert_eq!(j.image, DEFAULT_JOB_IMAGE);
        assert_eq!(j.service_account, "default");
        assert_eq!(j.method, "DELETE");
        assert_eq!(j.timeout, Dur::secs(60));
        assert_eq!(p.policy.interval, Dur::secs(1));
        assert_eq!(p.policy.error_limit, 4);
        assert_eq!(p.policy.failure_limit, 1);
        assert!(p.expect.status.accepts(403));
        assert!(!p.runs_after(Step::Restart));
        assert!(p.runs_after(Step::RemoveSidecarPolicies));
        assert!(p.runs_after(Step::Validate));
        assert!(!p.runs_during_restart());
        assert!(p.runs_after_rollback());
        assert_eq!(p.caller_and_target(), (Some("other".into()), Some("app".into())));
    }

    #[test]
    fn schedule_for_plain_probe() {
        let p: ProbeSpec =
            serde_json::from_value(json!({"name": "a", "kind": "http", "url": "http://api/x"})).unwrap();
        assert!(!p.runs_after(Step::ActivateWaypoint));
        assert!(p.runs_after(Step::EnableAmbient));
        assert!(p.runs_during_restart());
        assert_eq!(p.caller_and_target(), (None, None));
    }

    #[test]
    fn url_namespaces() {
        assert_eq!(
            url_namespace("http://api.app.svc.cluster.local:8080/x"),
            Some("app".into())
        );
        assert_eq!(url_namespace("http://api.app/x?y=1"), Some("app".into()));
        assert_eq!(url_namespace("http://api/x"), None);
        assert_eq!(url_namespace("https://www.example.com/x"), None);
    }
}
