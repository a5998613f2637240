//! Terminal progress lines for CI logs: which namespace, which step, pods ready x/y. At most one line per
//! namespace per interval, unless its state (step, phase, message, completion) changes, so a 10-minute
//! rollout does not flood the log.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::steps::Step;

/// One observation of a namespace's progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgressUpdate {
    /// Namespace.
    pub namespace: String,
    /// Current step, if any.
    pub step: Option<Step>,
    /// Short state, e.g. "applying", "gating", "rolling back", "migrated".
    pub state: String,
    /// Pods ready / wanted, when a rollout is being watched.
    pub ready: Option<(u32, u32)>,
    /// Extra detail (e.g. the workload being restarted).
    pub detail: String,
}

impl ProgressUpdate {
    /// The line printed for this update.
    pub fn line(&self) -> String {
        let mut s = format!("[{}]", self.namespace);
        if let Some(step) = self.step {
            s.push_str(&format!(" step {}/6 {}", step.number(), step.name()));
        }
        s.push_str(&format!(": {}", self.state));
        if let Some((r, w)) = self.ready {
            s.push_str(&format!(", pods ready {r}/{w}"));
        }
        if !self.detail.is_empty() {
            s.push_str(&format!(" ({})", self.detail));
        }
        s
    }

    /// What counts as a state change: everything but the ready count, plus reaching full readiness.
    fn state_key(&self) -> StateKey {
        (
            self.step,
            self.state.clone(),
            self.detail.clone(),
            self.ready.is_some_and(|(r, w)| r >= w),
        )
    }
}

/// What must change for a line to print before the interval: step, state, detail, completion.
type StateKey = (Option<Step>, String, String, bool);

/// Rate-limited progress printer.
pub struct Progress<W: Write> {
    out: W,
    interval: Duration,
    last: HashMap<String, (Instant, StateKey)>,
    /// Namespaces that have their outcome: their updates print nothing until they start again.
    closed: std::collections::HashSet<String>,
}

impl<W: Write> Progress<W> {
    /// Prints to `out` (stdout in `main`), at most one unchanged line per namespace per `interval`.
    pub fn new(out: W, interval: Duration) -> Self {
        Progress {
            out,
            interval,
            last: HashMap::new(),
            closed: Default::default(),
        }
    }

    /// Records an update observed at `now`; prints it when the state changed or the interval passed.
    /// Returns whether a line was printed.
    pub fn update_at(&mut self, now: Instant, u: &ProgressUpdate) -> bool {
        if self.closed.contains(&u.namespace) {
            return false;
        }
        let key = u.state_key();
        let print = match self.last.get(&u.namespace) {
            None => true,
            Some((at, last_key)) => *last_key != key || now.saturating_duration_since(*at) >= self.interval,
        };
        if print {
            let _ = writeln!(self.out, "{}", u.line());
            let _ = self.out.flush();
            self.last.insert(u.namespace.clone(), (now, key));
        }
        print
    }

    /// Closes a namespace once it has its outcome (its later updates print nothing), or opens it again
    /// when it starts (a retried namespace).
    pub fn set_open(&mut self, namespace: &str, open: bool) {
        if open {
            self.closed.remove(namespace);
        } else {
            self.closed.insert(namespace.to_string());
        }
    }

    /// [`Progress::update_at`] with the current time.
    pub fn update(&mut self, u: &ProgressUpdate) -> bool {
        self.update_at(Instant::now(), u)
    }

    /// The writer (tests read what was printed).
    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn up(ready: u32, state: &str) -> ProgressUpdate {
        ProgressUpdate {
            namespace: "shop".into(),
            step: Some(Step::Restart),
            state: state.into(),
            ready: Some((ready, 4)),
            detail: "deployment/cart".into(),
        }
    }

    #[test]
    fn unchanged_state_is_rate_limited() {
        let mut p = Progress::new(Vec::new(), Duration::from_secs(10));
        let t0 = Instant::now();
        assert!(p.update_at(t0, &up(0, "restarting")));
        assert!(
            !p.update_at(t0 + Duration::from_secs(1), &up(1, "restarting")),
            "ready count alone waits"
        );
        assert!(!p.update_at(t0 + Duration::from_secs(9), &up(2, "restarting")));
        assert!(
            p.update_at(t0 + Duration::from_secs(10), &up(3, "restarting")),
            "interval passed"
        );
        assert!(
            p.update_at(t0 + Duration::from_secs(11), &up(4, "restarting")),
            "complete is a change"
        );
        assert!(
            p.update_at(t0 + Duration::from_secs(12), &up(4, "gating")),
            "state change"
        );
        let mut other = up(0, "restarting");
        other.namespace = "web".into();
        assert!(
            p.update_at(t0 + Duration::from_secs(12), &other),
            "namespaces are independent"
        );
        // Once the namespace has its outcome, nothing more is printed for it, until it starts again.
        p.set_open("shop", false);
        assert!(!p.update_at(t0 + Duration::from_secs(60), &up(0, "restarting")));
        assert!(!p.update_at(t0 + Duration::from_secs(61), &up(4, "gating")));
        p.set_open("shop", true);
        assert!(p.update_at(t0 + Duration::from_secs(62), &up(1, "restarting")));
        let text = String::from_utf8(p.into_inner()).unwrap();
        assert_eq!(text.lines().count(), 6);
        assert_eq!(
            text.lines().next().unwrap(),
            "[shop] step 4/6 restart: restarting, pods ready 0/4 (deployment/cart)"
        );
    }
}
