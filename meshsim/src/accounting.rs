//! Request accounting: counts of API requests per verb, resource, namespace and user agent, plus a bounded
//! request log, readable over HTTP (benchmarks count API calls per migrated namespace; tests prove that
//! nothing mutating reached the cluster).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// How many requests the log keeps (older ones fall off; counters keep counting).
pub const LOG_LIMIT: usize = 100_000;

/// One API request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// RFC 3339 with microseconds, when the answer (or, for watches, the stream) started.
    pub time: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`, `discovery`.
    pub verb: String,
    /// Resource plural with subresource (`pods/status`, `pods/log`); empty for discovery.
    pub resource: String,
    /// API group of the resource (`""` for core and discovery).
    pub group: String,
    /// Namespace from the URL (for `namespaces` objects: empty, the name is in `name`).
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// `User-Agent` header as sent (`kubectl/v1.32.4 (linux/amd64) kubernetes/...`).
    pub user_agent: String,
    /// `dryRun=All` was asked.
    pub dry_run: bool,
    /// HTTP status code answered (200 for a watch that started streaming).
    pub code: u16,
    pub method: String,
    pub path: String,
    /// The authenticated (or impersonated) user name the request was authorised as.
    #[serde(default)]
    pub user: String,
    /// The client's address (`ip:port` of its TCP connection): tells apart two clients that send the same
    /// User-Agent (two runners racing for the fleet Lease).
    #[serde(default)]
    pub peer: String,
}

impl RequestRecord {
    /// A write that reached the store: create/update/patch/delete/deletecollection without dry run.
    /// Reviews (`selfsubjectaccessreviews`, ...) are creates that store nothing, so they are not writes.
    pub fn is_mutating(&self) -> bool {
        !self.dry_run
            && is_mutating_verb(&self.verb)
            && !crate::resources::REVIEWS
                .iter()
                .any(|r| r.plural == self.resource && r.group == self.group)
    }

    /// The first word of the user agent (`kubectl`, `ambient-migrate`, ...), for grouping.
    pub fn agent(&self) -> &str {
        short_agent(&self.user_agent)
    }
}

/// Whether a verb changes state (dry run aside).
pub fn is_mutating_verb(verb: &str) -> bool {
    matches!(
        verb,
        "create" | "update" | "patch" | "delete" | "deletecollection"
    )
}

/// `kubectl/v1.32.4 (linux/amd64) kubernetes/abc` -> `kubectl`.
pub fn short_agent(ua: &str) -> &str {
    ua.split(['/', ' ']).next().unwrap_or("")
}

#[derive(Debug, Default)]
struct Inner {
    /// (verb, resource, namespace, user agent) -> count.
    counters: BTreeMap<(String, String, String, String), u64>,
    log: VecDeque<RequestRecord>,
    total: u64,
}

/// Request counters and log (filled by the API layer for every Kubernetes API request; meshsim's own
/// `/meshsim/*` control endpoints are not counted).
#[derive(Debug, Default)]
pub struct Accounting {
    inner: Mutex<Inner>,
}

impl Accounting {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one request.
    pub fn record(&self, rec: RequestRecord) {
        let mut inner = self.lock();
        let key = (
            rec.verb.clone(),
            rec.resource.clone(),
            rec.namespace.clone().unwrap_or_default(),
            rec.user_agent.clone(),
        );
        *inner.counters.entry(key).or_insert(0) += 1;
        inner.total += 1;
        inner.log.push_back(rec);
        while inner.log.len() > LOG_LIMIT {
            inner.log.pop_front();
        }
    }

    /// `{total, mutating, counters: [{verb, resource, namespace, user_agent, count}]}` (mutating is counted
    /// over the kept log).
    pub fn snapshot(&self) -> Value {
        let inner = self.lock();
        let counters: Vec<Value> = inner
            .counters
            .iter()
            .map(|((verb, resource, namespace, ua), n)| {
                json!({"verb": verb, "resource": resource, "namespace": namespace, "user_agent": ua, "count": n})
            })
            .collect();
        let mutating = inner.log.iter().filter(|r| r.is_mutating()).count();
        json!({"total": inner.total, "mutating": mutating, "counters": counters})
    }

    /// The kept log, oldest first.
    pub fn log(&self) -> Vec<RequestRecord> {
        self.lock().log.iter().cloned().collect()
    }

    /// Forgets everything (counters and log).
    pub fn reset(&self) {
        *self.lock() = Inner::default();
    }

    /// Requests in the kept log that satisfy `filter`.
    pub fn count(&self, filter: impl Fn(&RequestRecord) -> bool) -> usize {
        self.lock().log.iter().filter(|r| filter(r)).count()
    }

    /// Mutating requests (see [`RequestRecord::is_mutating`]) in the kept log that satisfy `filter`.
    pub fn mutating_count(&self, filter: impl Fn(&RequestRecord) -> bool) -> usize {
        self.count(|r| r.is_mutating() && filter(r))
    }

    /// Total requests recorded since the last reset (not bounded by the log).
    pub fn total(&self) -> u64 {
        self.lock().total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(verb: &str, dry_run: bool) -> RequestRecord {
        RequestRecord {
            time: String::new(),
            verb: verb.into(),
            resource: "namespaces".into(),
            group: String::new(),
            namespace: None,
            name: Some("shop".into()),
            user_agent: "kubectl/v1.32.4 (linux/amd64) kubernetes/x".into(),
            dry_run,
            code: 200,
            method: "PATCH".into(),
            path: "/api/v1/namespaces/shop".into(),
            user: "kubernetes-admin".into(),
            peer: "127.0.0.1:40000".into(),
        }
    }

    #[test]
    fn counts_mutations_and_resets() {
        let a = Accounting::default();
        a.record(rec("get", false));
        a.record(rec("patch", true));
        a.record(rec("patch", false));
        assert_eq!(a.mutating_count(|_| true), 1);
        assert_eq!(a.count(|r| r.agent() == "kubectl"), 3);
        let s = a.snapshot();
        assert_eq!(s["total"], 3);
        assert_eq!(s["mutating"], 1);
        assert_eq!(s["counters"].as_array().unwrap().len(), 2);
        a.reset();
        assert_eq!(a.total(), 0);
        assert!(a.log().is_empty());
    }
}
