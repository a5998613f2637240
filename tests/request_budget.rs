//! The runner's API request budget, from meshsim's request log (docs/design.md §6): a fleet run sends, per
//! migrated namespace, its writes, one journal write per phase change, a few aggregated Events and the
//! watches its gates wait on; everything it reads is read once for the whole fleet. A change that makes
//! the runner read per namespace again (or poll) fails here, named by verb and resource.
//!
//! Not timed: the budget counts requests, which do not depend on the machine's speed.

mod fleet_common;

use std::collections::BTreeMap;
use std::time::Duration;

use fleet_common::*;
use meshsim::accounting::RequestRecord;

const LIMIT: Duration = Duration::from_secs(120);

/// `verb resource` -> count.
fn by_verb_resource(log: &[RequestRecord]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in log {
        *m.entry(format!("{} {}", r.verb, r.resource)).or_default() += 1;
    }
    m
}

/// `verb` -> count.
fn by_verb(log: &[RequestRecord]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in log {
        *m.entry(r.verb.clone()).or_default() += 1;
    }
    m
}

fn table(m: &BTreeMap<String, usize>, n: usize) -> String {
    m.iter()
        .map(|(k, v)| format!("  {k}: {v} ({:.1} per namespace)", *v as f64 / n as f64))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_run_stays_within_its_request_budget_per_namespace() {
    let names: Vec<String> = (0..8).map(|i| format!("budget-{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let fx: Vec<(&str, bool)> = refs.iter().map(|n| (*n, false)).collect();
    let fleet = Fleet::start(&fixture(&fx), Vec::new()).await;
    let cfg = fleet.write_config("fleet.toml", &fleet_config(&refs, &[], 4, 0, ""));
    fleet.sim().accounting.reset();
    let out = fleet
        .run(&["run", "--config", cfg.to_str().expect("utf-8")], LIMIT)
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let outcomes = fleet.outcomes();
    for ns in &refs {
        assert_eq!(outcomes[*ns], "migrated", "{ns}: {outcomes:?}");
    }
    let log = fleet.product_log();
    let n = names.len();
    let split = by_verb_resource(&log);
    let verbs = by_verb(&log);
    let total = log.len();
    let shown = format!(
        "{total} requests for {n} namespaces ({:.1} per namespace)\nby verb:\n{}\nby verb and resource:\n{}",
        total as f64 / n as f64,
        table(&verbs, n),
        table(&split, n)
    );
    println!("{shown}");

    // What one namespace costs, whatever the fleet size.
    for ns in &refs {
        let own: Vec<RequestRecord> = log.iter().filter(|r| concerns(r, ns)).cloned().collect();
        let own_split = by_verb(&own);
        let own_total = own.len();
        assert!(
            own_total <= 60,
            "{ns}: {own_total} requests concern it, budget 60:\n{}\n\n{shown}",
            table(&own_split, 1)
        );
    }
    // The whole run, reads amortised: at most 60 per namespace at this small size, where the fleet-wide
    // reads weigh the most.
    assert!(total <= 60 * n, "{shown}");
}
