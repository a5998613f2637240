//! The runner's API request budget, from meshsim's request log (docs/design.md §6): a fleet run sends, per
//! migrated namespace, its writes, one journal write per phase change, a few aggregated Events and the
//! watches its gates wait on; everything it reads is read once for the whole fleet. A change that makes
//! the runner read per namespace again (or poll) fails here, named by verb and resource.
//!
//! Not timed: the budget counts requests, which do not depend on the machine's speed.

use test_support::fleet as fleet_common;

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

/// The budget of one more namespace, by verb (what a namespace adds to a run, whatever the fleet size):
/// reads amortised across the fleet leave its writes, its journal, its Events and its rules review.
const PER_NAMESPACE: &[(&str, usize)] = &[
    // Journal and backup ConfigMaps, two Events, one SelfSubjectRulesReview.
    ("create", 5),
    // The journal, the Namespace before each label change (the label gates check the patch responses),
    // the restarted workload.
    ("get", 5),
    // The AuthorizationPolicies left after step 5 (read from the API: the cache may not have seen the
    // deletes yet).
    ("list", 1),
    // Labels, the restart, and the state annotation, which shows each step as it starts (written in the
    // background, off the steps' path).
    ("patch", 12),
    // One journal write per journaled change and per phase that ends or turns the namespace; the progress
    // from step to step rides on those.
    ("update", 6),
];

/// What one namespace may cost in all, and the whole run per namespace at 100 namespaces.
const PER_NAMESPACE_TOTAL: usize = 30;
const AT_100: usize = 35;

/// Runs `run` over `names` and returns the product's requests.
async fn run(fleet: &Fleet, names: &[String], cfg_name: &str) -> Vec<RequestRecord> {
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let cfg = fleet.write_config(cfg_name, &fleet_config(&refs, &[], 4, 0, ""));
    fleet.sim().accounting.reset();
    let out = fleet
        .run(&["run", "--config", cfg.to_str().expect("utf-8")], LIMIT)
        .await;
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let outcomes = fleet.outcomes();
    for ns in &refs {
        assert_eq!(outcomes[*ns], "migrated", "{ns}: {outcomes:?}");
    }
    fleet.product_log()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_run_stays_within_its_request_budget_per_namespace() {
    // Two runs on one cluster, of 2 and of 8 namespaces: the difference is what 6 namespaces cost, the rest
    // is the run's own (permissions, caches, lease), paid once per fleet.
    let names: Vec<String> = (0..10).map(|i| format!("budget-{i}")).collect();
    let fx: Vec<(&str, bool)> = names.iter().map(|n| (n.as_str(), false)).collect();
    let fleet = Fleet::start(&fixture(&fx), Vec::new()).await;
    let small = run(&fleet, &names[..2], "small.toml").await;
    let large = run(&fleet, &names[2..], "large.toml").await;
    let (ns_small, ns_large) = (2usize, 8usize);
    let added = (ns_large - ns_small) as f64;
    // The fleet Lease is renewed on a period for as long as the run lasts, whatever the fleet size: it is
    // the run's cost, not a namespace's, and the longer run would otherwise charge it to its namespaces.
    let per_ns_log = |log: &[RequestRecord]| -> Vec<RequestRecord> {
        log.iter().filter(|r| r.resource != "leases").cloned().collect()
    };
    let (vs, vl) = (by_verb(&per_ns_log(&small)), by_verb(&per_ns_log(&large)));
    let verbs: std::collections::BTreeSet<&String> = vs.keys().chain(vl.keys()).collect();
    let marginal: BTreeMap<String, f64> = verbs
        .into_iter()
        .map(|v| {
            let d = *vl.get(v).unwrap_or(&0) as f64 - *vs.get(v).unwrap_or(&0) as f64;
            (v.clone(), d / added)
        })
        .collect();
    let per_ns: f64 = marginal.values().sum();
    let fixed = small.len() as f64 - per_ns * ns_small as f64;
    let at_100 = (fixed + per_ns * 100.0) / 100.0;
    let shown = format!(
        "run of {ns_small}: {} requests; run of {ns_large}: {} requests
         per added namespace: {per_ns:.1} ({})
once per run: {fixed:.0}
projected at 100 namespaces: {at_100:.1} per namespace
         run of {ns_large} by verb:
{}
by verb and resource:
{}",
        small.len(),
        large.len(),
        marginal
            .iter()
            .map(|(v, n)| format!("{v} {n:.1}"))
            .collect::<Vec<_>>()
            .join(", "),
        table(&vl, ns_large),
        table(&by_verb_resource(&large), ns_large)
    );
    println!("{shown}");
    for (verb, budget) in PER_NAMESPACE {
        let got = marginal.get(*verb).copied().unwrap_or(0.0);
        assert!(
            got <= *budget as f64,
            "{verb}: {got:.1} requests per namespace, budget {budget}\n{shown}"
        );
    }
    let unbudgeted: Vec<&String> = marginal
        .iter()
        .filter(|(v, n)| **n > 0.0 && !PER_NAMESPACE.iter().any(|(b, _)| b == v))
        .map(|(v, _)| v)
        .collect();
    assert!(
        unbudgeted.is_empty(),
        "verbs with no budget: {unbudgeted:?}\n{shown}"
    );
    assert!(per_ns <= PER_NAMESPACE_TOTAL as f64, "{shown}");
    assert!(at_100 <= AT_100 as f64, "{shown}");
    // Every namespace's own requests (those naming it) fit its share, in both runs.
    for (log, ns_list) in [(&small, &names[..2]), (&large, &names[2..])] {
        for ns in ns_list {
            let own = log.iter().filter(|r| concerns(r, ns)).count();
            assert!(
                own <= PER_NAMESPACE_TOTAL,
                "{ns}: {own} requests name it\n{shown}"
            );
        }
    }
}
