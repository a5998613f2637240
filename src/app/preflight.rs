//! The fleet preflight of `run`, streamed (docs/design.md §6): a namespace starts once its own assessment
//! proves it is not blocked whatever the rest of the fleet turns out to be, instead of after every
//! namespace of the fleet has been assessed.
//!
//! What may be decided before the whole fleet is assessed:
//! - a namespace's own blockers (findings, backup size) are its own;
//! - its enforcement check depends on the other namespaces only through their fleet position, and a
//!   namespace blocked later leaves the run (it stays on its current data plane). The check holds for
//!   every caller class and data plane on its own (one caller pod per request), and a fleet namespace
//!   that leaves the run only moves its callers' data planes from "current or ambient" to "current" and
//!   adds its current data plane to the callers from namespaces no rule names. So a plan that passes
//!   with every other fleet namespace running and with none of them running (canaries aside) passes for
//!   any subset of them: the full preflight would never block it, and it may start at once.
//! - A plan that fails either check waits for the whole fleet's fixpoint (`fleet_enforcement`), as
//!   before: blocking another namespace may unblock it.
//!
//! What may not: with `fleet.on_blocked = "stop"` any blocked namespace stops the whole fleet before its
//! first write, and with `fleet.order = "callers-first"` the order itself comes from every namespace's
//! callers, so both keep the full preflight before the first start. Canaries are assessed before anything
//! starts: a blocked canary stops the fleet, so when one does not pass at once the full preflight runs.

use std::collections::{BTreeMap, BTreeSet};

use tokio::sync::watch;

use super::{Settings, blocker_reason, findings_text, fleet_enforcement, fleet_position, namespace_options};
use crate::assess::Snapshot;
use crate::assess::plan::{NamespacePlan, check_enforcement};
use crate::backup::Backup;
use crate::engine::{Engine, EngineError};
use crate::report::{NamespaceOutcome, NamespaceReport};
use crate::settings::{FleetOrder, OnBlocked};

/// What the fleet preflight decided for one namespace.
#[derive(Clone, Debug)]
pub enum Verdict {
    /// It may start.
    Go,
    /// Preflight blocked it: nothing of it is touched. Its report section.
    Blocked(Box<NamespaceReport>),
    /// The preflight could not finish (an assessment failed): it does not start, for this reason.
    NotStarted(String),
}

/// The verdicts so far, shared with the namespaces waiting for theirs.
#[derive(Clone, Debug, Default)]
pub struct Verdicts {
    pub of: BTreeMap<String, Verdict>,
    /// Every namespace has its verdict.
    pub done: bool,
    /// An assessment failed (what failed): the run ends with "a human is needed".
    pub failed: Option<String>,
}

impl Verdicts {
    /// At least one namespace may start, or none ever will.
    pub fn settled_enough(&self) -> bool {
        self.done || self.of.values().any(|v| matches!(v, Verdict::Go))
    }
}

/// Whether the preflight may let namespaces start before the whole fleet is assessed (see the module).
pub fn may_stream(s: &Settings) -> bool {
    s.fleet.on_blocked == OnBlocked::Skip && s.fleet.order == FleetOrder::AsListed
}

/// One namespace as the preflight assessed it.
pub struct Assessed {
    pub ns: String,
    pub snap: Snapshot,
    pub plan: NamespacePlan,
    /// Why its backup would not fit in its ConfigMap (the run would stop after its first writes).
    pub too_large: Option<String>,
}

/// The namespaces' labels as the preflight sees them: read once, before the run's first write.
pub type Labels = crate::cluster::NamespaceLabels;

/// Reads and plans `ns` from the fleet's caches, with the other namespaces' `labels` read before the run's
/// first write (a namespace assessed while others migrate sees them as they were), and checks that its
/// backup fits.
pub async fn assess(
    eng: &Engine,
    s: &Settings,
    run_id: &str,
    labels: Option<&Labels>,
    ns: &str,
) -> Result<Assessed, EngineError> {
    let opts = namespace_options(&s.for_namespace(ns));
    let (snap, plan) = eng.assess_seeing(ns, &opts, labels).await?;
    let too_large = Backup::from_snapshot(&snap, Some(run_id))
        .check_fits()
        .err()
        .map(|e| e.to_string());
    Ok(Assessed {
        ns: ns.to_string(),
        snap,
        plan,
        too_large,
    })
}

/// True when `a` is not blocked whatever the other fleet namespaces of `order` do: its own findings and
/// backup pass, and its enforcement check passes with all of them running and with none but the canaries
/// (see the module for why those two cover every other case).
pub fn passes_whatever_others_do(s: &Settings, order: &[String], a: &Assessed) -> bool {
    if a.too_large.is_some() || a.plan.blocked() {
        return false;
    }
    let no_callers = BTreeMap::new();
    let alone: Vec<String> = order
        .iter()
        .filter(|n| **n == a.ns || s.fleet.canary.contains(n))
        .cloned()
        .collect();
    [order, alone.as_slice()].into_iter().all(|running| {
        let mut plan = a.plan.clone();
        check_enforcement(
            &a.snap,
            &mut plan,
            &fleet_position(s, running, &no_callers, &a.ns),
        );
        !plan.blocked()
    })
}

/// The report section of a namespace the preflight blocked (and its findings on stderr).
pub fn blocked_report(
    s: &Settings,
    ns: &str,
    plan: &NamespacePlan,
    too_large: Option<&String>,
) -> NamespaceReport {
    eprint!("{}", findings_text(ns, plan));
    let mut r = NamespaceReport::new(ns, s.fleet.canary.iter().any(|c| c == ns), 0);
    r.outcome = NamespaceOutcome::Blocked;
    r.reason = match too_large {
        Some(e) if !plan.blocked() => {
            eprintln!("error: {e}");
            Some(e.clone())
        }
        _ => Some(blocker_reason(plan)),
    };
    r.findings = plan.findings.clone();
    r.behaviour_changes = plan.behaviour_changes.clone();
    r.enforcement = Some(plan.enforcement.clone());
    r
}

/// The namespaces whose quick check failed, decided with the whole fleet known: the fixpoint of
/// `fleet_enforcement` over the fleet order (a namespace that started early is never blocked by it, see
/// the module), plus those whose backup does not fit. Returns the blocked ones' report sections.
pub fn decide_deferred(
    s: &Settings,
    order: &[String],
    deferred: Vec<Assessed>,
) -> BTreeMap<String, NamespaceReport> {
    let too_large: BTreeMap<String, String> = deferred
        .iter()
        .filter_map(|a| Some((a.ns.clone(), a.too_large.clone()?)))
        .collect();
    // The deferred namespaces' snapshots are kept (they were read with the labels from before the run,
    // which the caches no longer show once others migrate); they are few: the ones a quick check failed.
    let mut snapshots: BTreeMap<String, Snapshot> = BTreeMap::new();
    let mut assessed: Vec<(String, NamespacePlan)> = Vec::new();
    for a in deferred {
        snapshots.insert(a.ns.clone(), a.snap);
        assessed.push((a.ns, a.plan));
    }
    let mut blocked = fleet_enforcement(s, order, &BTreeMap::new(), &mut assessed, |ns| {
        snapshots.get(ns).map(std::borrow::Cow::Borrowed)
    });
    blocked.extend(too_large.keys().cloned());
    assessed
        .iter()
        .filter(|(ns, _)| blocked.contains(ns))
        .map(|(ns, plan)| (ns.clone(), blocked_report(s, ns, plan, too_large.get(ns))))
        .collect()
}

/// The streamed preflight over `order` (canaries already have their verdict in `tx`): namespaces outside
/// `fresh` (a journal says an earlier run got further) start without one, as in the full preflight; the
/// others get theirs as soon as it is known, assessed with the namespaces' `labels` from before the run.
pub async fn stream(
    eng: Engine,
    s: std::sync::Arc<Settings>,
    run_id: String,
    order: Vec<String>,
    fresh: BTreeSet<String>,
    labels: Option<Labels>,
    tx: watch::Sender<Verdicts>,
) {
    let decided: BTreeSet<String> = tx.borrow().of.keys().cloned().collect();
    let mut deferred: Vec<Assessed> = Vec::new();
    for ns in order.iter().filter(|n| !decided.contains(*n)) {
        if !fresh.contains(ns) {
            tx.send_modify(|v| {
                v.of.insert(ns.clone(), Verdict::Go);
            });
            continue;
        }
        match assess(&eng, &s, &run_id, labels.as_ref(), ns).await {
            Ok(a) if passes_whatever_others_do(&s, &order, &a) => tx.send_modify(|v| {
                v.of.insert(ns.clone(), Verdict::Go);
            }),
            Ok(a) => deferred.push(a),
            Err(e) => {
                let failure = format!("assessing namespace {ns}: {e}");
                let why = format!("not started: the fleet preflight failed {failure}");
                tx.send_modify(|v| {
                    for n in &order {
                        v.of.entry(n.clone())
                            .or_insert_with(|| Verdict::NotStarted(why.clone()));
                    }
                    v.failed = Some(failure);
                    v.done = true;
                });
                return;
            }
        }
    }
    let blocked = decide_deferred(&s, &order, deferred);
    for ns in blocked.keys() {
        (eng.progress)(&format!("{ns}: preflight BLOCKED"));
    }
    if !blocked.is_empty() {
        (eng.progress)(&format!(
            "skipping blocked namespace(s) {} (fleet.on_blocked = \"skip\"); the others migrate",
            blocked.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    tx.send_modify(|v| {
        for n in &order {
            if !v.of.contains_key(n) {
                let verdict = match blocked.get(n) {
                    Some(r) => Verdict::Blocked(Box::new(r.clone())),
                    None => Verdict::Go,
                };
                v.of.insert(n.clone(), verdict);
            }
        }
        v.done = true;
    });
}

/// Waits for the verdict on `ns`; a stop request while waiting means it does not start.
pub async fn verdict_for(
    rx: &mut watch::Receiver<Verdicts>,
    ns: &str,
    stop: &mut watch::Receiver<bool>,
) -> Verdict {
    let stopped = || Verdict::NotStarted("stop requested (SIGTERM/Ctrl-C): no new namespace starts".into());
    let own = |rx: &watch::Receiver<Verdicts>| {
        rx.borrow()
            .of
            .get(ns)
            .cloned()
            .unwrap_or_else(|| Verdict::NotStarted("the fleet preflight gave no verdict".into()))
    };
    loop {
        if *stop.borrow() {
            return stopped();
        }
        {
            let v = rx.borrow_and_update();
            if v.done || v.of.contains_key(ns) {
                drop(v);
                return own(rx);
            }
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() {
                // The preflight is gone: what it decided is all there is.
                return own(rx);
            },
            r = stop.changed() => if r.is_err() {
                // No one can ask for a stop any more: wait for the verdict alone.
                let _ = rx.wait_for(|v| v.done || v.of.contains_key(ns)).await;
                return own(rx);
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(of: &[(&str, Verdict)], done: bool) -> Verdicts {
        Verdicts {
            of: of.iter().map(|(n, v)| (n.to_string(), v.clone())).collect(),
            done,
            failed: None,
        }
    }

    #[test]
    fn the_lease_waits_for_a_namespace_that_may_start_or_the_end() {
        assert!(!verdicts(&[], false).settled_enough());
        let blocked = Verdict::Blocked(Box::new(NamespaceReport::new("a", false, 0)));
        assert!(!verdicts(&[("a", blocked.clone())], false).settled_enough());
        assert!(verdicts(&[("a", blocked)], true).settled_enough());
        assert!(verdicts(&[("b", Verdict::Go)], false).settled_enough());
    }

    #[tokio::test]
    async fn a_namespace_waits_for_its_own_verdict_and_a_stop_ends_the_wait() {
        let (tx, mut rx) = watch::channel(Verdicts::default());
        let (stop_tx, mut stop) = watch::channel(false);
        let waiting = tokio::spawn(async move { verdict_for(&mut rx, "b", &mut stop).await });
        tx.send_modify(|v| {
            v.of.insert("a".into(), Verdict::Go);
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "another namespace's verdict is not b's");
        stop_tx.send(true).unwrap();
        let v = tokio::time::timeout(std::time::Duration::from_secs(2), waiting)
            .await
            .expect("the stop ends the wait")
            .unwrap();
        assert!(matches!(v, Verdict::NotStarted(why) if why.contains("stop requested")));

        let (tx, mut rx) = watch::channel(Verdicts::default());
        let (_stop_tx, mut stop) = watch::channel(false);
        let waiting = tokio::spawn(async move { verdict_for(&mut rx, "b", &mut stop).await });
        tx.send_modify(|v| {
            v.of.insert("b".into(), Verdict::Go);
        });
        let v = tokio::time::timeout(std::time::Duration::from_secs(2), waiting)
            .await
            .expect("the verdict ends the wait")
            .unwrap();
        assert!(matches!(v, Verdict::Go));
    }
}
