//! Probe evaluation: response expectations -> measurement, measurements -> verdict, following Argo Rollouts'
//! analysis semantics (`analysis/analysis.go` `assessMetricStatus` / `assessMetricFailureInconclusiveOrError`;
//! `docs/reference/progressive-delivery-peers.md` §1.1):
//! - `failures > failure_limit` -> Fail; `consecutive_failures > consecutive_failure_limit` -> Fail;
//! - `consecutive_errors > error_limit` -> Error (checked last, so Error overrides Fail, as in Argo);
//! - `consecutive_successes >= consecutive_successes limit` (when > 0) -> Pass;
//! - `count` reached -> Pass, except when a consecutive-success limit is set and was not reached -> Fail
//!   (Argo: Failed when only the success limit is enabled; Argo's Inconclusive, when both limits are enabled,
//!   also maps to Fail here: a headless run has nobody to resume a paused analysis);
//! - otherwise Running. [`ProbeState::terminate`] ends a continuous probe: Pass unless a limit was violated.
//!
//! Where we differ from Argo's web provider: a non-matching HTTP status is a *Failure* here (it is the
//! expectation under test), while Argo counts non-2xx as an Error. Errors are for "could not measure"
//! (the probe infrastructure failed), which the side-effect layer decides.

use super::spec::{Expectation, ProbePolicy};
use serde::{Deserialize, Serialize};

/// One measurement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", content = "reason", rename_all = "kebab-case")]
pub enum Measurement {
    /// The response met the expectation.
    Success,
    /// The response (or its absence) violated the expectation.
    Failure(String),
    /// Could not measure (runner-side problem, Job not scheduled, ...).
    Error(String),
}

/// A probe's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// Done, green.
    Pass,
    /// Done, a limit was exceeded.
    Fail,
    /// Done, too many consecutive errors.
    Error,
    /// Keep measuring.
    Running,
}

/// What a probe observed: an HTTP response, or no response at all (curl exit 56/7/28: `000`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "observed", rename_all = "kebab-case")]
pub enum Observed {
    /// An HTTP response.
    Response {
        /// Status code.
        status: u16,
        /// Response headers.
        headers: Vec<(String, String)>,
        /// Body text.
        body: String,
    },
    /// No HTTP response (reset, refused, timeout).
    NoResponse {
        /// Why (for the report).
        reason: String,
    },
}

/// Check an observation against an expectation: `Success` or `Failure(reason)`. A missing response matches
/// only when the expected status set contains `0`.
pub fn check(expect: &Expectation, observed: &Observed) -> Measurement {
    match observed {
        Observed::NoResponse { reason } => {
            if expect.status.accepts(0) {
                Measurement::Success
            } else {
                Measurement::Failure(format!(
                    "no HTTP response ({reason}), expected status {}",
                    expect.status
                ))
            }
        }
        Observed::Response {
            status,
            headers,
            body,
        } => {
            if !expect.status.accepts(*status) {
                return Measurement::Failure(format!("status {status}, expected {}", expect.status));
            }
            let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
            if let Some(h) = expect.header_present.iter().find(|h| !has(h)) {
                return Measurement::Failure(format!("header {h} missing from the response"));
            }
            if let Some(h) = expect.header_absent.iter().find(|h| has(h)) {
                return Measurement::Failure(format!("header {h} present in the response, expected absent"));
            }
            if let Some(s) = &expect.body_contains
                && !body.contains(s.as_str())
            {
                return Measurement::Failure(format!("body does not contain {s:?}"));
            }
            Measurement::Success
        }
    }
}

/// Running counters of one probe (persistable in the journal).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeState {
    /// Measurements taken.
    pub measurements: u32,
    /// Successes.
    pub successes: u32,
    /// Failures.
    pub failures: u32,
    /// Errors.
    pub errors: u32,
    /// Current run of successes.
    pub consecutive_successes: u32,
    /// Current run of failures.
    pub consecutive_failures: u32,
    /// Current run of errors.
    pub consecutive_errors: u32,
    /// Reason of the last failure or error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reason: Option<String>,
}

impl ProbeState {
    /// Record a measurement and return the verdict so far.
    pub fn record(&mut self, m: &Measurement, policy: &ProbePolicy) -> Verdict {
        self.measurements += 1;
        match m {
            Measurement::Success => {
                self.successes += 1;
                self.consecutive_successes += 1;
                self.consecutive_failures = 0;
                self.consecutive_errors = 0;
            }
            Measurement::Failure(r) => {
                self.failures += 1;
                self.consecutive_failures += 1;
                self.consecutive_successes = 0;
                self.consecutive_errors = 0;
                self.last_reason = Some(r.clone());
            }
            Measurement::Error(r) => {
                self.errors += 1;
                self.consecutive_errors += 1;
                self.consecutive_successes = 0;
                // Argo: an error does not reset the failure count; a consecutive-failure run is broken by it.
                self.consecutive_failures = 0;
                self.last_reason = Some(r.clone());
            }
        }
        self.verdict(policy)
    }

    fn limit_verdict(&self, policy: &ProbePolicy) -> Option<Verdict> {
        let mut v = None;
        if self.failures > policy.failure_limit {
            v = Some(Verdict::Fail);
        }
        if policy
            .consecutive_failure_limit
            .is_some_and(|l| self.consecutive_failures > l)
        {
            v = Some(Verdict::Fail);
        }
        if self.consecutive_errors > policy.error_limit {
            v = Some(Verdict::Error);
        }
        v
    }

    /// The verdict for the measurements so far.
    pub fn verdict(&self, policy: &ProbePolicy) -> Verdict {
        if let Some(v) = self.limit_verdict(policy) {
            return v;
        }
        if policy.consecutive_successes > 0 && self.consecutive_successes >= policy.consecutive_successes {
            return Verdict::Pass;
        }
        // Errors are retried and do not count toward `count` (Argo counts them, but retries them after
        // DefaultErrorRetryInterval; a probe that only errors ends through the error limit).
        if let Some(count) = policy.count
            && self.successes + self.failures >= count
        {
            if policy.consecutive_successes > 0 {
                return Verdict::Fail;
            }
            return Verdict::Pass;
        }
        Verdict::Running
    }

    /// End the probe now (continuous probes at the end of step 4): Pass unless a limit was violated.
    pub fn terminate(&self, policy: &ProbePolicy) -> Verdict {
        self.limit_verdict(policy).unwrap_or(Verdict::Pass)
    }

    /// A one-line summary for messages.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} measurements: {} ok, {} failed, {} errors",
            self.measurements, self.successes, self.failures, self.errors
        );
        if let Some(r) = &self.last_reason {
            s.push_str(&format!("; last: {r}"));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probes::spec::StatusSet;

    fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> Observed {
        Observed::Response {
            status,
            headers: headers
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            body: body.into(),
        }
    }

    #[test]
    fn expectation_status() {
        let e = Expectation::default();
        assert_eq!(check(&e, &resp(200, &[], "")), Measurement::Success);
        assert!(
            matches!(check(&e, &resp(503, &[], "")), Measurement::Failure(r) if r.contains("status 503"))
        );
        let denied = Expectation {
            status: StatusSet(vec![(403, 403)]),
            ..Default::default()
        };
        assert_eq!(
            check(&denied, &resp(403, &[], "RBAC: access denied")),
            Measurement::Success
        );
        assert!(matches!(
            check(&denied, &resp(200, &[], "")),
            Measurement::Failure(_)
        ));
    }

    #[test]
    fn expectation_no_response() {
        let e = Expectation::default();
        let nr = Observed::NoResponse {
            reason: "connection reset".into(),
        };
        assert!(matches!(check(&e, &nr), Measurement::Failure(r) if r.contains("connection reset")));
        let reset_ok = Expectation {
            status: StatusSet(vec![(0, 0)]),
            ..Default::default()
        };
        assert_eq!(check(&reset_ok, &nr), Measurement::Success);
    }

    #[test]
    fn expectation_headers_and_body() {
        let e = Expectation {
            header_present: vec!["x-request-id".into()],
            body_contains: Some("Hostname=api".into()),
            ..Default::default()
        };
        assert_eq!(
            check(&e, &resp(200, &[("X-Request-Id", "1")], "Hostname=api-1")),
            Measurement::Success
        );
        assert!(
            matches!(check(&e, &resp(200, &[], "Hostname=api-1")), Measurement::Failure(r) if r.contains("missing"))
        );
        assert!(
            matches!(check(&e, &resp(200, &[("x-request-id", "1")], "nope")), Measurement::Failure(r) if r.contains("body"))
        );
        let l4 = Expectation {
            header_absent: vec!["x-request-id".into()],
            ..Default::default()
        };
        assert_eq!(check(&l4, &resp(200, &[], "")), Measurement::Success);
        assert!(
            matches!(check(&l4, &resp(200, &[("x-request-id", "1")], "")), Measurement::Failure(r) if r.contains("absent"))
        );
    }

    fn run(policy: &ProbePolicy, ms: &[Measurement]) -> Vec<Verdict> {
        let mut s = ProbeState::default();
        ms.iter().map(|m| s.record(m, policy)).collect()
    }
    fn f() -> Measurement {
        Measurement::Failure("x".into())
    }
    fn e() -> Measurement {
        Measurement::Error("x".into())
    }
    const S: Measurement = Measurement::Success;

    #[test]
    fn default_policy_count_and_failure_limit() {
        let p = ProbePolicy::default();
        assert_eq!(
            run(&p, &[S, S, S]),
            vec![Verdict::Running, Verdict::Running, Verdict::Pass]
        );
        assert_eq!(run(&p, &[S, f()]), vec![Verdict::Running, Verdict::Fail]);
        let p2 = ProbePolicy {
            failure_limit: 1,
            ..Default::default()
        };
        assert_eq!(
            run(&p2, &[f(), S, f()]),
            vec![Verdict::Running, Verdict::Running, Verdict::Fail]
        );
        assert_eq!(
            run(&p2, &[f(), S, S]),
            vec![Verdict::Running, Verdict::Running, Verdict::Pass]
        );
    }

    #[test]
    fn consecutive_failure_limit() {
        let p = ProbePolicy {
            failure_limit: 10,
            consecutive_failure_limit: Some(1),
            count: None,
            ..Default::default()
        };
        assert_eq!(
            run(&p, &[f(), S, f(), f()]),
            vec![
                Verdict::Running,
                Verdict::Running,
                Verdict::Running,
                Verdict::Fail
            ]
        );
    }

    #[test]
    fn error_limit_and_error_overrides_fail() {
        let p = ProbePolicy::default(); // error_limit 4
        let v = run(&p, &[e(), e(), e(), e(), e()]);
        assert_eq!(v[3], Verdict::Running);
        assert_eq!(v[4], Verdict::Error);
        // Errors do not count toward `count`.
        assert_eq!(run(&p, &[S, e(), S, S]).last(), Some(&Verdict::Pass));
        let p = ProbePolicy {
            failure_limit: 0,
            error_limit: 0,
            count: None,
            ..Default::default()
        };
        let mut s = ProbeState::default();
        s.record(&f(), &p);
        assert_eq!(s.record(&e(), &p), Verdict::Error);
    }

    #[test]
    fn consecutive_successes() {
        let p = ProbePolicy {
            consecutive_successes: 2,
            count: Some(4),
            failure_limit: 5,
            ..Default::default()
        };
        assert_eq!(run(&p, &[S, S]), vec![Verdict::Running, Verdict::Pass]);
        assert_eq!(run(&p, &[S, f(), S, f()]).last(), Some(&Verdict::Fail));
    }

    #[test]
    fn continuous_with_budget_and_terminate() {
        let p = ProbePolicy {
            count: None,
            failure_limit: 2,
            ..Default::default()
        };
        let mut s = ProbeState::default();
        for m in [S, f(), S, S, f(), S] {
            assert_eq!(s.record(&m, &p), Verdict::Running);
        }
        assert_eq!(s.terminate(&p), Verdict::Pass);
        assert_eq!(s.record(&f(), &p), Verdict::Fail);
        assert_eq!(s.terminate(&p), Verdict::Fail);
        assert!(s.summary().contains("3 failed"));
    }

    #[test]
    fn state_serde() {
        let mut s = ProbeState::default();
        s.record(&f(), &ProbePolicy::default());
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["failures"], 1);
        assert_eq!(
            serde_json::to_value(Measurement::Failure("r".into())).unwrap()["result"],
            "failure"
        );
        assert_eq!(serde_json::to_value(Verdict::Running).unwrap(), "running");
    }
}
