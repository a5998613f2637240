//! The fleet runner (docs/design.md §6): canary namespaces first and alone, then the rest with bounded
//! concurrency (a namespace starts as soon as a slot frees: no wave waits for the slowest of the one
//! before), a fleet failure budget, already-migrated namespaces skipped, and a stop signal (SIGTERM / Ctrl-C
//! from a CI cancellation) that starts nothing new but lets in-flight namespaces reach a safe state.
//!
//! The runner is generic over the per-namespace job so that its scheduling decisions are unit-tested
//! without a cluster; the engine supplies the real job.

use std::collections::{BTreeSet, HashSet};
use std::future::Future;

use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// How one namespace ended, as far as the fleet cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NsOutcome {
    /// Migrated and validated (now or by an earlier run).
    Migrated,
    /// Already migrated by an earlier run: nothing done.
    AlreadyMigrated,
    /// A gate failed and the namespace was rolled back cleanly.
    RolledBack,
    /// A gate failed and `on_gate_failure = "hold"` left it as it was.
    Held,
    /// The rollback failed or the state is inconsistent: a human is needed.
    RollbackFailed,
    /// Preflight blocked it: nothing touched.
    Blocked,
    /// Not started (fleet stopped: canary failed, budget spent, or cancelled).
    NotStarted,
    /// The lease was lost or the journal fenced: stopped without finishing.
    Aborted,
}

impl NsOutcome {
    /// Counts against `max_failed_namespaces`.
    pub fn is_failure(self) -> bool {
        matches!(
            self,
            NsOutcome::RolledBack | NsOutcome::Held | NsOutcome::RollbackFailed | NsOutcome::Aborted
        )
    }

    /// Success for the purpose of letting the fleet continue after canaries.
    pub fn is_success(self) -> bool {
        matches!(self, NsOutcome::Migrated | NsOutcome::AlreadyMigrated)
    }
}

/// Scheduling settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetOptions {
    /// Namespaces run one at a time, first; nothing else starts unless all of them succeed.
    pub canaries: Vec<String>,
    /// Namespaces in flight at once after the canaries (at least 1).
    pub concurrency: usize,
    /// Once more than this many namespaces failed, no new namespace starts.
    pub max_failed_namespaces: usize,
}

/// The order in which namespaces start: canaries (in their given order) then the rest, each once. Borrowed:
/// the preflight asks for it for every namespace's fleet position.
pub fn queue<'a>(namespaces: &'a [String], canaries: &'a [String]) -> Vec<&'a String> {
    let mut seen: HashSet<&str> = HashSet::with_capacity(namespaces.len() + canaries.len());
    canaries
        .iter()
        .chain(namespaces)
        .filter(|n| seen.insert(n.as_str()))
        .collect()
}

/// The [`queue`] in waves: each canary alone, then the rest in waves of `concurrency`. Duplicates are
/// dropped; canaries not in the fleet are added first (validation of settings rejects them earlier with a
/// clear message).
pub fn waves(namespaces: &[String], opts: &FleetOptions) -> Vec<Vec<String>> {
    let queue = queue(namespaces, &opts.canaries);
    // The canaries are the queue's first entries.
    let canaries = queue.iter().take_while(|n| opts.canaries.contains(n)).count();
    let (canaries, rest) = queue.split_at(canaries);
    canaries
        .iter()
        .map(|c| vec![(*c).clone()])
        .chain(
            rest.chunks(opts.concurrency.max(1))
                .map(|w| w.iter().map(|n| (*n).clone()).collect()),
        )
        .collect()
}

/// Orders namespaces so that callers come before the namespaces they call (`fleet.order = "callers-first"`):
/// a migrated namespace's waypoint is bypassed by callers still on sidecars (docs/design.md §3.1 fact 3), so
/// migrating callers first shortens that window. Stable: namespaces without a caller relation keep their
/// order; a cycle is broken where it is first entered.
pub fn callers_first(
    namespaces: &[String],
    callers: &std::collections::BTreeMap<String, Vec<String>>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut visiting: BTreeSet<String> = BTreeSet::new();
    fn visit(
        n: &String,
        namespaces: &[String],
        callers: &std::collections::BTreeMap<String, Vec<String>>,
        visiting: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        if out.contains(n) || !visiting.insert(n.clone()) {
            return;
        }
        for c in callers.get(n).into_iter().flatten() {
            if namespaces.contains(c) {
                visit(c, namespaces, callers, visiting, out);
            }
        }
        if !out.contains(n) {
            out.push(n.clone());
        }
    }
    for n in namespaces {
        visit(n, namespaces, callers, &mut visiting, &mut out);
    }
    out
}

/// Marks a namespace finished in the shared set when dropped: when its job returns, but also when it
/// panics or is cancelled, so a namespace waiting for it (callers first) is never left waiting forever.
pub struct DoneGuard {
    ns: String,
    done: std::sync::Arc<watch::Sender<BTreeSet<String>>>,
}

impl DoneGuard {
    /// Guards `ns`; `done` is the set every waiting namespace watches.
    pub fn new(ns: &str, done: std::sync::Arc<watch::Sender<BTreeSet<String>>>) -> Self {
        DoneGuard {
            ns: ns.to_string(),
            done,
        }
    }
}

impl Drop for DoneGuard {
    fn drop(&mut self) {
        self.done.send_modify(|d| {
            d.insert(self.ns.clone());
        });
    }
}

/// Waits until every namespace of `callers` has finished (callers first). Returns false, at once, when
/// the run is asked to stop (or the stop sender is gone): the waiting namespace then does not start.
pub async fn wait_for_callers(
    done: &mut watch::Receiver<BTreeSet<String>>,
    callers: &[String],
    stop: &mut watch::Receiver<bool>,
) -> bool {
    let stopped = |stop: &watch::Receiver<bool>| *stop.borrow() || stop.has_changed().is_err();
    loop {
        if stopped(stop) {
            return false;
        }
        if callers.iter().all(|c| done.borrow().contains(c)) {
            return true;
        }
        tokio::select! {
            r = done.changed() => if r.is_err() {
                // No sender left: nothing can finish any more.
                return callers.iter().all(|c| done.borrow().contains(c));
            },
            _ = stop.changed() => {}
        }
    }
}

/// What the runner did with each namespace, in start order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetResult {
    pub outcomes: Vec<(String, NsOutcome)>,
    /// Why the fleet stopped early, if it did.
    pub stopped: Option<String>,
    /// Most namespaces in flight at the same time (a test checks it against `concurrency`).
    pub max_in_flight: usize,
}

/// Runs `job` for every namespace, canaries first. A canary that does not succeed stops the fleet; after
/// the canaries, up to `concurrency` namespaces run at once (a new one starts as soon as one finishes,
/// so a slow namespace does not hold a whole wave); when the failure budget is exceeded or `stop` turns
/// true, nothing new starts and in-flight jobs finish (they watch `stop` themselves to reach a safe state).
pub async fn run<F, Fut>(
    namespaces: &[String],
    opts: &FleetOptions,
    stop: watch::Receiver<bool>,
    job: F,
) -> FleetResult
where
    F: Fn(String, bool) -> Fut,
    Fut: Future<Output = NsOutcome> + Send + 'static,
{
    let plan = waves(namespaces, opts);
    let canary_count = opts.canaries.iter().collect::<BTreeSet<_>>().len();
    let mut outcomes: Vec<(String, NsOutcome)> = Vec::new();
    let mut stopped: Option<String> = None;
    let mut max_in_flight = 0usize;
    let mut failed = 0usize;

    let queue: Vec<(String, bool)> = plan
        .into_iter()
        .enumerate()
        .flat_map(|(i, wave)| wave.into_iter().map(move |ns| (ns, i < canary_count)))
        .collect();
    let mut pending = queue.into_iter().peekable();
    let mut set: tokio::task::JoinSet<(String, NsOutcome)> = tokio::task::JoinSet::new();
    let limit = opts.concurrency.max(1);

    loop {
        // Start what may start.
        while stopped.is_none() {
            let Some((ns, canary)) = pending.peek().cloned() else {
                break;
            };
            if *stop.borrow() {
                stopped = Some("stop requested (SIGTERM/Ctrl-C): no new namespace starts".into());
                break;
            }
            if failed > opts.max_failed_namespaces {
                stopped = Some(format!(
                    "failure budget spent: {failed} namespaces failed, max_failed_namespaces = {}",
                    opts.max_failed_namespaces
                ));
                break;
            }
            // Canaries run alone: wait until nothing is in flight before and after them.
            let busy = set.len();
            if (canary && busy > 0) || busy >= limit {
                break;
            }
            // Nothing else starts before every canary has finished (and succeeded: see below).
            if !canary && outcomes.len() < canary_count {
                break;
            }
            pending.next();
            let fut = job(ns.clone(), canary);
            // `map`, not an async block around `fut.await`: the block would hold the job's future twice
            // (once captured, once awaited), doubling every job's task allocation.
            set.spawn(fut.map(move |outcome| (ns, outcome)));
            // What the limit above counts: namespaces started and not yet collected.
            max_in_flight = max_in_flight.max(set.len());
            if canary {
                break;
            }
        }
        let Some(joined) = set.join_next().await else {
            break;
        };
        let (ns, outcome) = match joined {
            Ok(r) => r,
            Err(e) => {
                // A panicking job is a bug; the namespace state is unknown.
                (format!("<panicked: {e}>"), NsOutcome::RollbackFailed)
            }
        };
        let was_canary = opts.canaries.contains(&ns);
        if outcome.is_failure() {
            failed += 1;
        }
        outcomes.push((ns.clone(), outcome));
        if was_canary && !outcome.is_success() && stopped.is_none() {
            stopped = Some(format!(
                "canary namespace {ns} did not migrate ({outcome:?}): the fleet stops"
            ));
        }
    }
    for (ns, _) in pending {
        outcomes.push((ns, NsOutcome::NotStarted));
    }
    FleetResult {
        outcomes,
        stopped,
        max_in_flight,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn opts(canaries: &[&str], concurrency: usize, budget: usize) -> FleetOptions {
        FleetOptions {
            canaries: names(canaries),
            concurrency,
            max_failed_namespaces: budget,
        }
    }

    #[tokio::test]
    async fn a_caller_that_panics_still_releases_its_callees() {
        let (tx, rx) = watch::channel(BTreeSet::new());
        let tx = Arc::new(tx);
        let caller = {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _g = DoneGuard::new("web", tx);
                panic!("caller job crashed");
            })
        };
        assert!(caller.await.unwrap_err().is_panic());
        let (_stop_tx, mut stop) = watch::channel(false);
        let mut done = rx.clone();
        let waited = tokio::time::timeout(
            Duration::from_secs(2),
            wait_for_callers(&mut done, &names(&["web"]), &mut stop),
        )
        .await
        .expect("the wait ends");
        assert!(waited);
    }

    #[tokio::test]
    async fn a_stop_ends_the_wait_for_callers() {
        let (tx, rx) = watch::channel(BTreeSet::new());
        let _keep = tx;
        let (stop_tx, mut stop) = watch::channel(false);
        let mut done = rx.clone();
        let wait =
            tokio::spawn(async move { wait_for_callers(&mut done, &names(&["web"]), &mut stop).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop_tx.send(true).unwrap();
        let started = tokio::time::timeout(Duration::from_secs(2), wait)
            .await
            .expect("the wait honours stop")
            .unwrap();
        assert!(!started, "a stopped run must not start the waiting namespace");
    }

    #[test]
    fn callers_go_first_and_cycles_keep_list_order() {
        let mut callers = std::collections::BTreeMap::new();
        callers.insert("api".to_string(), names(&["web", "batch"]));
        callers.insert("web".to_string(), names(&["edge"]));
        callers.insert("a".to_string(), names(&["b"]));
        callers.insert("b".to_string(), names(&["a"]));
        let order = callers_first(&names(&["api", "web", "edge", "db", "a", "b"]), &callers);
        assert_eq!(order, names(&["edge", "web", "api", "db", "b", "a"]));
    }

    #[test]
    fn canaries_come_first_and_alone() {
        let w = waves(&names(&["a", "b", "c", "d", "e"]), &opts(&["c"], 2, 0));
        assert_eq!(w, vec![names(&["c"]), names(&["a", "b"]), names(&["d", "e"])]);
    }

    async fn run_with(
        ns: &[&str],
        o: FleetOptions,
        results: HashMap<&'static str, NsOutcome>,
    ) -> FleetResult {
        let (_tx, rx) = watch::channel(false);
        let results = Arc::new(
            results
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect::<HashMap<_, _>>(),
        );
        run(&names(ns), &o, rx, move |n, _canary| {
            let r = results.get(&n).copied().unwrap_or(NsOutcome::Migrated);
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                r
            }
        })
        .await
    }

    #[tokio::test]
    async fn failed_canary_stops_everything_else() {
        let r = run_with(
            &["a", "b", "c"],
            opts(&["a"], 2, 5),
            HashMap::from([("a", NsOutcome::RolledBack)]),
        )
        .await;
        assert_eq!(
            r.outcomes,
            vec![
                ("a".into(), NsOutcome::RolledBack),
                ("b".into(), NsOutcome::NotStarted),
                ("c".into(), NsOutcome::NotStarted)
            ]
        );
        assert!(r.stopped.unwrap().contains("canary"));
    }

    #[tokio::test]
    async fn concurrency_is_respected_and_failures_do_not_stop_within_budget() {
        let r = run_with(
            &["a", "b", "c", "d", "e", "f"],
            opts(&[], 2, 1),
            HashMap::from([("b", NsOutcome::RolledBack)]),
        )
        .await;
        assert_eq!(r.max_in_flight, 2);
        assert!(r.stopped.is_none());
        assert_eq!(
            r.outcomes
                .iter()
                .filter(|(_, o)| *o == NsOutcome::Migrated)
                .count(),
            5
        );
    }

    #[tokio::test]
    async fn budget_exceeded_stops_new_starts() {
        let r = run_with(
            &["a", "b", "c", "d", "e"],
            opts(&[], 1, 0),
            HashMap::from([("a", NsOutcome::RolledBack)]),
        )
        .await;
        assert_eq!(r.outcomes[0], ("a".into(), NsOutcome::RolledBack));
        assert!(r.outcomes[1..].iter().all(|(_, o)| *o == NsOutcome::NotStarted));
        assert!(r.stopped.unwrap().contains("failure budget"));
    }

    #[tokio::test]
    async fn stop_signal_starts_nothing_new_but_finishes_in_flight() {
        let (tx, rx) = watch::channel(false);
        let tx = Arc::new(tx);
        let t2 = tx.clone();
        let r = run(
            &names(&["a", "b", "c", "d"]),
            &opts(&[], 2, 9),
            rx,
            move |n, _| {
                let t = t2.clone();
                async move {
                    if n == "a" {
                        let _ = t.send(true);
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    NsOutcome::Migrated
                }
            },
        )
        .await;
        let started: Vec<_> = r
            .outcomes
            .iter()
            .filter(|(_, o)| *o == NsOutcome::Migrated)
            .collect();
        assert_eq!(started.len(), 2, "a and b were in flight and finish");
        assert!(
            r.outcomes
                .iter()
                .any(|(n, o)| n == "c" && *o == NsOutcome::NotStarted)
        );
        assert!(r.stopped.unwrap().contains("stop requested"));
    }
}
