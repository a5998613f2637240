//! Sidecar-only settings, end to end against meshsim with the real binary: a namespace whose Sidecar
//! resource locks egress down (REGISTRY_ONLY, egress hosts of its own and the system namespace) is blocked
//! in preflight (exit 4, the finding named, nothing written); with `migration.accept_loss =
//! ["egress-lockdown"]` it migrates and the report lists the change as accepted. meshsim's traffic shows
//! the consequence: the same egress request answers 502 (Envoy's BlackHoleCluster) from the sidecar pod
//! before, and goes through from the ambient pod after (ztunnel does not enforce REGISTRY_ONLY, istio/istio
//! issue 54281), counted as wrongly allowed.

use test_support::e2e as e2e_common;

use e2e_common::*;
use meshsim::traffic::{self, Outcome, Request, Source};
use serde_json::Value;

const NS: &str = "egress";
const EXTERNAL: &str = "http://api.partner.example/v1/orders";

fn sidecar_lockdown(ns: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: {ns}}}\nspec:\n  egress:\n  - hosts: [\"./*\", \"istio-system/*\"]\n  outboundTrafficPolicy: {{mode: REGISTRY_ONLY}}\n"
    )
}

/// One egress request from the `web` workload of [`NS`], as meshsim's data plane answers it.
fn egress_from_web(env: &Env) -> traffic::Response {
    traffic::handle(
        &env.running.sim,
        &Request {
            source: Source::Pod {
                namespace: NS.into(),
                name: "web".into(),
            },
            method: "GET".into(),
            url: EXTERNAL.into(),
            headers: Vec::new(),
        },
    )
}

fn change<'a>(nsr: &'a Value, code: &str) -> &'a Value {
    nsr["behaviour_changes"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["code"] == code))
        .unwrap_or_else(|| panic!("no behaviour change {code} in {nsr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecar_egress_lockdown_blocks_until_accepted_then_egress_opens() {
    let mut settings = sim_settings();
    settings.external_hosts = vec!["api.partner.example".into()];
    let fixture = seed_as(NS, "istio-injection: enabled") + &sidecar_lockdown(NS);
    let env = start_with(&[&fixture], vec![], settings).await;
    env.wait_ready(NS).await;

    // Before: the sidecar enforces the lockdown.
    let r = egress_from_web(&env);
    assert_eq!(
        r.outcome,
        Outcome::Http(502),
        "sidecar under REGISTRY_ONLY: {r:?}"
    );
    assert!(!r.intended_allow);
    assert_eq!(r.enforcement, vec!["sidecar"]);

    // 1. Defaults: blocked in preflight with the finding, nothing written.
    let cfg = Cfg::new(&[NS]).probes(NS, &seed_probes(NS, &env.proxy()));
    let config = env.write_config("blocked", &cfg.toml());
    let writes_before = env.mutating_requests().len();
    let out = env.run(&config, "blocked", &["run"]).await;
    assert_eq!(out.code, 4, "{out}");
    assert!(
        out.stderr.contains("sidecar-egress-registry-only") && out.stderr.contains("Sidecar/egress/default"),
        "the finding and the object are named\n{out}"
    );
    assert_eq!(
        env.mutating_requests().len(),
        writes_before,
        "a blocked preflight writes nothing"
    );
    let nsr = out.ns_report(NS);
    assert_eq!(nsr["outcome"], "blocked");
    assert!(
        nsr["reason"]
            .as_str()
            .unwrap_or("")
            .contains("egress lockdown stops"),
        "{nsr}"
    );
    let c = change(&nsr, "sidecar-egress-registry-only");
    assert_eq!(
        (c["severity"].as_str(), c["accepted"].as_bool()),
        (Some("blocker"), Some(false))
    );
    assert_eq!(c["loss"], "egress-lockdown");
    assert!(c["fix"].as_str().unwrap_or("").contains("egress waypoint"), "{c}");
    assert!(c["source"].as_str().unwrap_or("").contains("54281"), "{c}");
    let md = std::fs::read_to_string(out.report_dir.join("ambient-migrate-report.md")).expect("markdown");
    assert!(
        md.contains("### Behaviour that changes") && md.contains("| blocker (loses egress-lockdown) |"),
        "{md}"
    );
    assert_eq!(
        egress_from_web(&env).outcome,
        Outcome::Http(502),
        "still locked down"
    );

    // `plan` shows the section too (text), with the same exit code.
    let plan = env.run(&config, "plan", &["plan"]).await;
    assert_eq!(plan.code, 4, "{plan}");
    assert!(
        plan.stdout.contains("behaviour that changes in egress:")
            && plan.stdout.contains(
                "[blocker] sidecar-egress-registry-only Sidecar/egress/default (loses egress-lockdown)"
            ),
        "{plan}"
    );

    // 2. The loss accepted: the namespace migrates and the change is reported as accepted.
    let mut cfg = cfg;
    cfg.extra = "[migration]\naccept_loss = [\"egress-lockdown\"]\n".into();
    let config = env.write_config("accepted", &cfg.toml());
    let out = env.run(&config, "accepted", &["run"]).await;
    assert_eq!(out.code, 0, "{out}");
    let nsr = out.ns_report(NS);
    assert_eq!(nsr["outcome"], "migrated", "{nsr}");
    let c = change(&nsr, "sidecar-egress-registry-only");
    assert_eq!(
        (c["severity"].as_str(), c["accepted"].as_bool()),
        (Some("warning"), Some(true))
    );
    assert!(
        out.stdout
            .contains("[accepted] sidecar-egress-registry-only Sidecar/egress/default"),
        "run summary lists it\n{out}"
    );
    env.assert_migrated_pods(NS);

    // After: the ambient pod reaches the unregistered host; meshsim counts the lost lockdown.
    let r = egress_from_web(&env);
    assert_eq!(r.outcome, Outcome::Http(200), "{r:?}");
    assert_eq!(r.enforcement, vec!["ztunnel"]);
    assert!(
        r.wrongly_allowed,
        "the mesh's intent (lockdown) is no longer enforced"
    );
    let counters = env.running.sim.traffic.snapshot();
    let dest = &counters["by_destination"]["external/api.partner.example"];
    assert_eq!(
        (dest["denied"].as_u64(), dest["wrongly_allowed"].as_u64()),
        (Some(2), Some(1)),
        "{dest}"
    );
}
