//! Traffic-probe gates: runs probes against the cluster and turns their measurements into a gate result
//! with the Argo-style policy of each probe (`probes::policy`). Two modes: a gate after a step (each probe
//! measures until its policy decides) and continuous probing during the restart, where only the limits
//! (the error budget) can fail the gate.

use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::gates::{GateOutcome, GateResult};
use crate::probes::policy::{Measurement, ProbeState, Verdict};
use crate::probes::runner;
use crate::probes::spec::ProbeSpec;

/// One probe's end state.
#[derive(Debug, Clone)]
struct ProbeRun {
    name: String,
    verdict: Verdict,
    state: ProbeState,
    timed_out: bool,
}

fn summarize(gate: &str, runs: Vec<ProbeRun>, started: jiff::Timestamp) -> GateResult {
    let measured = json!(
        runs.iter()
            .map(|r| json!({
                "probe": r.name,
                "verdict": r.verdict,
                "timedOut": r.timed_out,
                "state": r.state,
            }))
            .collect::<Vec<_>>()
    );
    let bad: Vec<String> = runs
        .iter()
        .filter(|r| r.verdict != Verdict::Pass)
        .map(|r| format!("probe {} {:?}: {}", r.name, r.verdict, r.state.summary()))
        .collect();
    let outcome = if runs.iter().any(|r| r.verdict == Verdict::Fail) {
        GateOutcome::Fail
    } else if runs.iter().any(|r| r.verdict == Verdict::Error) {
        GateOutcome::Error
    } else if runs.iter().any(|r| r.timed_out) {
        GateOutcome::Timeout
    } else {
        GateOutcome::Pass
    };
    let message = if bad.is_empty() {
        format!("{} probe(s) green", runs.len())
    } else {
        bad.join("; ")
    };
    let mut g = GateResult::new(gate, outcome, measured, message);
    g.started = Some(started);
    g.ended = Some(jiff::Timestamp::now());
    g
}

/// Runs each probe until its policy gives a verdict (or `deadline` passes: Timeout), all probes in
/// parallel. No probes: a passing gate that says so.
pub async fn run_gate(cluster: &Cluster, probes: &[ProbeSpec], gate: &str, deadline: Instant) -> GateResult {
    let started = jiff::Timestamp::now();
    let futs = probes.iter().map(|p| run_one(cluster, p, deadline));
    let runs = futures::future::join_all(futs).await;
    summarize(gate, runs, started)
}

async fn run_one(cluster: &Cluster, probe: &ProbeSpec, deadline: Instant) -> ProbeRun {
    let policy = &probe.policy;
    let mut state = ProbeState::default();
    let initial = policy.initial_delay.0;
    if !initial.is_zero() {
        tokio::time::sleep_until((Instant::now() + initial).min(deadline)).await;
    }
    loop {
        if Instant::now() >= deadline {
            return ProbeRun {
                name: probe.name.clone(),
                verdict: state.verdict(policy),
                state,
                timed_out: true,
            };
        }
        let m = measure(cluster, probe, deadline).await;
        let v = state.record(&m, policy);
        if v != Verdict::Running {
            return ProbeRun {
                name: probe.name.clone(),
                verdict: v,
                state,
                timed_out: false,
            };
        }
        let next = Instant::now() + interval(probe);
        if next >= deadline {
            return ProbeRun {
                name: probe.name.clone(),
                verdict: state.verdict(policy),
                state,
                timed_out: true,
            };
        }
        tokio::time::sleep_until(next).await;
    }
}

fn interval(probe: &ProbeSpec) -> Duration {
    probe.policy.interval.0.max(Duration::from_millis(10))
}

async fn measure(cluster: &Cluster, probe: &ProbeSpec, deadline: Instant) -> Measurement {
    let left = deadline.saturating_duration_since(Instant::now());
    match tokio::time::timeout(left + Duration::from_millis(50), runner::run_once(cluster, probe)).await {
        Ok(m) => m,
        Err(_) => Measurement::Error("probe did not finish before the gate deadline".into()),
    }
}

/// True once the owner asked the probes to stop, or dropped its sender (it returned early on an error).
fn stop_requested(stop: &watch::Receiver<bool>) -> bool {
    *stop.borrow() || stop.has_changed().is_err()
}

/// Continuous probing (step 4): measures every probe at its interval until `stop` turns true, then ends
/// each probe with [`ProbeState::terminate`]: only a violated limit (the error budget) fails the gate.
/// A probe that exceeds its budget stops early and fails the gate when it ends.
pub fn spawn_continuous(
    cluster: Cluster,
    probes: Vec<ProbeSpec>,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<GateResult> {
    tokio::spawn(async move {
        let started = jiff::Timestamp::now();
        let futs = probes.iter().map(|probe| {
            let cluster = cluster.clone();
            let mut stop = stop.clone();
            async move {
                let policy = &probe.policy;
                let mut state = ProbeState::default();
                loop {
                    if stop_requested(&stop) {
                        break;
                    }
                    let m = measure(&cluster, probe, Instant::now() + policy.timeout.0).await;
                    let v = state.record(&m, policy);
                    if matches!(v, Verdict::Fail | Verdict::Error) {
                        return ProbeRun {
                            name: probe.name.clone(),
                            verdict: v,
                            state,
                            timed_out: false,
                        };
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(interval(probe)) => {}
                        // An error means the sender is gone (the step ended early): that is a stop too,
                        // and the loop head sees it; without that check `changed()` would return at once
                        // forever and the loop would fire probes back to back.
                        _ = stop.changed() => {}
                    }
                }
                ProbeRun {
                    name: probe.name.clone(),
                    verdict: state.terminate(policy),
                    state,
                    timed_out: false,
                }
            }
        });
        let runs = futures::future::join_all(futs).await;
        summarize(crate::steps::gate_names::PROBES_CONTINUOUS, runs, started)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_is_requested_by_a_true_value_or_a_dropped_sender() {
        let (tx, rx) = watch::channel(false);
        assert!(!stop_requested(&rx));
        tx.send(true).unwrap();
        assert!(stop_requested(&rx));

        let (tx, rx) = watch::channel(false);
        drop(tx);
        assert!(
            stop_requested(&rx),
            "a step that returned early drops the sender: the probes must end"
        );
    }
}
