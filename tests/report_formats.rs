//! Report renderers: JSON (round trip + schema), JUnit XML (structure CI publishers need), Markdown (table,
//! reasons, Mermaid Gantt), and the `$GITHUB_STEP_SUMMARY` append.

use std::path::PathBuf;

use ambient_migrate::assess::enforcement::{DataPlane, Difference, DifferenceKind, EnforcementTable};
use ambient_migrate::assess::{Finding, Severity};
use ambient_migrate::gates::{GateOutcome, GateResult};
use ambient_migrate::report::{
    self, NamespaceOutcome, NamespaceReport, ObservabilityReport, RollbackOutcome, RollbackReport, RunReport,
    Section, StepOutcome, StepReport, WriteOptions,
};
use ambient_migrate::steps::{Change, LabelChange, ObjRef, Phase, Step};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

fn at(t0: Timestamp, ms: i64) -> Timestamp {
    t0.checked_add(SignedDuration::from_millis(ms)).unwrap()
}

fn gate(
    name: &str,
    outcome: GateOutcome,
    measured: Value,
    msg: &str,
    s: Timestamp,
    e: Timestamp,
) -> GateResult {
    let mut g = GateResult::new(name, outcome, measured, msg);
    g.started = Some(s);
    g.ended = Some(e);
    g
}

/// A fleet of four: a migrated canary, a namespace rolled back at step 4, one blocked in preflight, one not
/// started (failure budget).
fn example() -> RunReport {
    let t0: Timestamp = "2025-06-01T10:00:00Z".parse().unwrap();
    let mut r = RunReport::new(
        "run-1234",
        "run",
        "https://10.0.0.1:6443",
        "fnv1a64:0123456789abcdef",
        false,
    );
    r.started = t0;

    let mut shop = NamespaceReport::new("shop", true, 0);
    shop.started = Some(t0);
    let mut t = 0;
    for step in Step::ALL {
        let s = at(t0, t);
        let e = at(t0, t + 1500);
        let changes = if step == Step::EnableAmbient {
            vec![Change::Label {
                step,
                change: LabelChange {
                    target: ObjRef::namespace("shop"),
                    key: "istio.io/dataplane-mode".into(),
                    before: None,
                    after: Some("ambient".into()),
                },
            }]
        } else {
            vec![]
        };
        shop.steps.push(StepReport {
            step,
            started: s,
            ended: Some(e),
            outcome: StepOutcome::Pass,
            gates: vec![gate(
                "probes",
                GateOutcome::Pass,
                json!({"ok": 3}),
                "3/3 green",
                s,
                e,
            )],
            changes,
        });
        t += 2000;
    }
    shop.ended = Some(at(t0, t));
    shop.outcome = NamespaceOutcome::Migrated;
    shop.phase = Some(Phase::Migrated);
    shop.enforcement = Some(EnforcementTable {
        moments: ["0", "1", "2", "3", "4.1", "4", "5"].map(String::from).to_vec(),
        classes: 36,
        equal: 35,
        differences: vec![Difference {
            caller: "no mesh identity".into(),
            caller_dataplanes: vec![DataPlane::None],
            destination: "api:80".into(),
            request: "GET /unnamed".into(),
            intent: false,
            decisions: ["deny", "deny", "deny", "deny", "deny", "deny", "allow"]
                .map(String::from)
                .to_vec(),
            steps: vec!["5".into()],
            kind: DifferenceKind::Gap,
            pre_existing: false,
            cause: "no mesh caller, direct: ztunnel at the destination decides allow".into(),
            fix: "keep_bridges = true".into(),
        }],
    });
    shop.observability = Some(ObservabilityReport::from_findings(
        &[
            Finding::new(
                Severity::Warning,
                "monitor-merged-endpoint",
                ObjRef::new("monitoring.coreos.com/v1", "PodMonitor", "shop", "cart"),
                "PodMonitor cart scrapes the sidecar's merged endpoint",
                "point it at the application's metrics port",
            ),
            Finding::new(
                Severity::Warning,
                "prometheus-merge",
                ObjRef::namespace("shop"),
                "pods [\"cart-7d9f-abcde\", \"web-1\"] expose merged metrics on :15020/stats/prometheus",
                "scrape ztunnel and waypoint pods",
            ),
        ],
        true,
    ));

    let mut pay = NamespaceReport::new("payments", false, 1);
    let p0 = at(t0, 13_000);
    pay.started = Some(p0);
    pay.steps.push(StepReport {
        step: Step::ActivateWaypoint,
        started: p0,
        ended: Some(at(p0, 800)),
        outcome: StepOutcome::Pass,
        gates: vec![gate(
            "waypoint-ready",
            GateOutcome::Pass,
            json!({}),
            "ready",
            p0,
            at(p0, 800),
        )],
        changes: vec![],
    });
    let s4 = at(p0, 1000);
    pay.steps.push(StepReport {
        step: Step::Restart,
        started: s4,
        ended: Some(at(s4, 4000)),
        outcome: StepOutcome::Fail,
        gates: vec![gate(
            "rollout",
            GateOutcome::Fail,
            json!({"deployment": "ledger", "ready": 1, "wanted": 3, "reason": "CrashLoopBackOff <x> & \"y\""}),
            "Deployment payments/ledger: 1/3 ready, pods crash-looping",
            s4,
            at(s4, 4000),
        )],
        changes: vec![],
    });
    pay.rollback = Some(RollbackReport {
        from: Step::Restart,
        undone: vec![
            Step::Restart,
            Step::RemoveInjection,
            Step::EnableAmbient,
            Step::ActivateWaypoint,
        ],
        started: at(s4, 4100),
        ended: Some(at(s4, 9000)),
        outcome: RollbackOutcome::Verified,
        gates: vec![gate(
            "sidecars-back",
            GateOutcome::Pass,
            json!({"pods": 3}),
            "3/3 sidecars",
            s4,
            s4,
        )],
        message: None,
    });
    pay.outcome = NamespaceOutcome::RolledBack;
    pay.phase = Some(Phase::RolledBack);
    pay.ended = Some(at(s4, 9000));
    pay.backup = Some("configmap/ambient-migrate/backup-payments".into());

    let mut legacy = NamespaceReport::new("legacy", false, 1);
    legacy.outcome = NamespaceOutcome::Blocked;
    legacy.findings.push(Finding::new(
        Severity::Blocker,
        "l7-deny-without-waypoint",
        ObjRef::new(
            "security.istio.io/v1",
            "AuthorizationPolicy",
            "legacy",
            "deny-delete",
        ),
        "L7 DENY rule would stop being enforced",
        "add a targetRefs twin bound to a waypoint",
    ));

    let web = NamespaceReport::new("web", false, 2);
    r.namespaces = vec![shop, pay, legacy, web];
    r.ended = Some(at(t0, 30_000));
    let ended = r.ended;
    r.finish();
    r.ended = ended;
    r
}

#[test]
fn summary_and_exit_code_follow_outcomes() {
    let r = example();
    assert_eq!(r.exit_code, 1, "rolled back cleanly => 1");
    assert_eq!(r.summary.total, 4);
    assert_eq!(
        (
            r.summary.migrated,
            r.summary.rolled_back,
            r.summary.blocked,
            r.summary.not_started
        ),
        (1, 1, 1, 1)
    );
    assert!(
        r.summary.message.starts_with("1 of 4 namespaces migrated"),
        "{}",
        r.summary.message
    );
    let mut r2 = r.clone();
    r2.namespaces[1].outcome = NamespaceOutcome::RollbackFailed;
    assert_eq!(report::exit_code_for(&r2.namespaces), 3);
    r2.namespaces.truncate(1);
    assert_eq!(report::exit_code_for(&r2.namespaces), 0);
}

// ---- JSON ----

use schema_check::violations;
use test_support::schema as schema_check;

fn schema() -> Value {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/report.schema.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

#[test]
fn json_round_trips_and_matches_the_schema() {
    let r = example();
    let text = report::json::render(&r);
    let back = report::json::parse(&text).unwrap();
    assert_eq!(back, r);
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["namespaces"][1]["outcome"], "rolled-back");
    assert_eq!(v["namespaces"][1]["steps"][1]["step"], "restart");
    assert_eq!(v["namespaces"][1]["steps"][1]["gates"][0]["measured"]["ready"], 1);
    let s = schema();
    let errs = violations(&s, &v);
    assert!(errs.is_empty(), "schema violations: {errs:#?}");
}

/// A fleet keeps each finished namespace's report packed until the run ends: unpacked, it must render the
/// same report files, numbers included (gate measurements carry floats such as ratios and latencies).
#[test]
fn a_packed_namespace_report_unpacks_equal_and_renders_the_same() {
    let mut r = example();
    let step = r.namespaces[0].steps.first_mut().expect("a step");
    step.gates[0].measured = json!({"ratio": 0.1 + 0.2, "p99_ms": 12.345_678_901_234_567, "tiny": 1e-7,
                                    "big": 123_456_789.123_456_78, "count": 3, "neg": -0.0});
    let rendered = report::json::render(&r);
    let mut unpacked = r.clone();
    unpacked.namespaces = r
        .namespaces
        .iter()
        .map(|n| report::PackedReport::pack(n).unpack())
        .collect();
    assert_eq!(unpacked, r);
    assert_eq!(report::json::render(&unpacked), rendered);
    assert_eq!(report::markdown::render(&unpacked), report::markdown::render(&r));
}

/// A fleet renders its report from sections kept packed (unpacked one at a time by each renderer): every
/// file must be the one the decoded report gives, byte for byte, and the summary and exit code the same.
#[test]
fn a_report_of_packed_sections_writes_the_same_files() {
    let mut r = example();
    r.namespaces[1].steps[0].gates[0].measured =
        json!({"ratio": 0.1 + 0.2, "p99_ms": 12.345_678_901_234_567});
    r.finish();
    let sections: Vec<Section> = r
        .namespaces
        .iter()
        .enumerate()
        .map(|(i, n)| match i % 2 {
            0 => Section::Packed(report::PackedReport::pack(n)),
            _ => Section::Open(Box::new(n.clone())),
        })
        .collect();
    let mut packed = r.clone().with_namespaces(sections);
    packed.finish();
    packed.ended = r.ended;
    assert_eq!(packed.summary, r.summary);
    assert_eq!(packed.exit_code, r.exit_code);
    assert_eq!(report::json::render(&packed), report::json::render(&r));
    assert_eq!(report::junit::render(&packed), report::junit::render(&r));
    assert_eq!(report::markdown::render(&packed), report::markdown::render(&r));
    assert_eq!(report::markdown::gantt(&packed), report::markdown::gantt(&r));

    let dir = tempfile::tempdir().unwrap();
    let files = |name: &str, write: &dyn Fn(&WriteOptions)| {
        let opts = WriteOptions {
            dir: dir.path().join(name),
            json: true,
            junit: true,
            markdown: true,
            step_summary: Some(dir.path().join(format!("{name}-summary.md"))),
        };
        write(&opts);
        ["json", "xml", "md"]
            .map(|ext| {
                std::fs::read(dir.path().join(format!("{name}/ambient-migrate-report.{ext}"))).unwrap()
            })
            .into_iter()
            .chain([std::fs::read(opts.step_summary.as_ref().unwrap()).unwrap()])
            .collect::<Vec<_>>()
    };
    let from_values = files("values", &|o| {
        report::write_all(&r, o).unwrap();
    });
    let from_sections = files("sections", &|o| {
        report::write_all(&packed, o).unwrap();
    });
    assert!(from_values.iter().all(|f| f.len() > 100));
    assert_eq!(from_sections, from_values);
    // The JUnit file is the rendered document.
    assert_eq!(from_values[1], report::junit::render(&r).into_bytes());
}

#[test]
fn schema_check_catches_violations() {
    let s = schema();
    let mut v: Value = serde_json::from_str(&report::json::render(&example())).unwrap();
    v["namespaces"][0]["outcome"] = json!("exploded");
    v["namespaces"][1]["extra"] = json!(1);
    v.as_object_mut().unwrap().remove("run_id");
    v["started"] = json!("yesterday");
    let all = violations(&s, &v).join("\n");
    assert!(all.contains("/namespaces/0/outcome: "), "{all}");
    assert!(
        all.contains("/namespaces/1: ") && all.contains("'extra' was unexpected"),
        "{all}"
    );
    assert!(all.contains("\"run_id\" is a required property"), "{all}");
    assert!(all.contains("/started: "), "{all}");
}

// ---- JUnit ----

fn attr<'a>(n: &roxmltree::Node<'a, 'a>, name: &str) -> &'a str {
    n.attribute(name)
        .unwrap_or_else(|| panic!("<{}> lacks {name}", n.tag_name().name()))
}

#[test]
fn junit_has_the_structure_ci_publishers_need() {
    let r = example();
    let xml = report::junit::render(&r);
    let doc = roxmltree::Document::parse(&xml).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suites: Vec<_> = root.children().filter(|n| n.has_tag_name("testsuite")).collect();
    assert_eq!(suites.len(), 4, "one testsuite per namespace");
    let mut total_tests = 0;
    let mut total_failures = 0;
    for s in &suites {
        for a in ["name", "tests", "failures", "errors", "skipped", "time"] {
            attr(s, a);
        }
        let cases: Vec<_> = s.children().filter(|n| n.has_tag_name("testcase")).collect();
        assert_eq!(attr(s, "tests").parse::<usize>().unwrap(), cases.len());
        let failures = cases
            .iter()
            .filter(|c| c.children().any(|x| x.has_tag_name("failure")))
            .count();
        let skipped = cases
            .iter()
            .filter(|c| c.children().any(|x| x.has_tag_name("skipped")))
            .count();
        assert_eq!(attr(s, "failures").parse::<usize>().unwrap(), failures);
        assert_eq!(attr(s, "skipped").parse::<usize>().unwrap(), skipped);
        attr(s, "time").parse::<f64>().unwrap();
        for c in &cases {
            attr(c, "name");
            let class = attr(c, "classname");
            assert!(
                class.starts_with(&format!("{}.", attr(s, "name"))),
                "classname {class}"
            );
            attr(c, "time").parse::<f64>().unwrap();
            for f in c
                .children()
                .filter(|x| x.has_tag_name("failure") || x.has_tag_name("error"))
            {
                attr(&f, "message");
                attr(&f, "type");
            }
        }
        total_tests += cases.len();
        total_failures += failures;
    }
    assert_eq!(attr(&root, "tests").parse::<usize>().unwrap(), total_tests);
    assert_eq!(attr(&root, "failures").parse::<usize>().unwrap(), total_failures);

    // the failed gate carries its measurements, escaped and restored intact
    let pay = suites.iter().find(|s| attr(s, "name") == "payments").unwrap();
    let gate = pay
        .children()
        .find(|c| c.attribute("name") == Some("gate rollout"))
        .expect("one testcase per gate");
    assert_eq!(attr(&gate, "classname"), "payments.restart");
    assert_eq!(attr(&gate, "time"), "4.000");
    let failure = gate.children().find(|x| x.has_tag_name("failure")).unwrap();
    assert_eq!(attr(&failure, "type"), "fail");
    assert!(attr(&failure, "message").contains("1/3 ready"));
    let text = failure.text().unwrap();
    assert!(text.contains("CrashLoopBackOff <x> & \\\"y\\\""), "{text}");
    assert!(text.contains("\"wanted\": 3"), "{text}");
    // step testcases exist alongside gate testcases
    assert!(
        pay.children()
            .any(|c| c.attribute("name") == Some("step 4 restart"))
    );
    assert!(
        pay.children()
            .any(|c| c.attribute("classname") == Some("payments.rollback"))
    );
    // blocked: preflight failure; not started: skipped
    let legacy = suites.iter().find(|s| attr(s, "name") == "legacy").unwrap();
    assert_eq!(attr(legacy, "failures"), "1");
    let web = suites.iter().find(|s| attr(s, "name") == "web").unwrap();
    assert_eq!(attr(web, "skipped"), "1");
    let shop = suites.iter().find(|s| attr(s, "name") == "shop").unwrap();
    assert_eq!(attr(shop, "failures"), "0");
    assert_eq!(attr(shop, "tests"), "13", "preflight + 6 steps + 6 gates");
}

// ---- Markdown ----

#[test]
fn markdown_has_table_reasons_and_a_gantt_per_namespace() {
    let r = example();
    let md = report::markdown::render(&r);
    assert!(md.contains("| Namespace | Canary | Wave | Outcome |"), "{md}");
    for ns in ["shop", "payments", "legacy", "web"] {
        assert!(md.contains(&format!("| `{ns}` |")), "row for {ns}");
    }
    assert!(md.contains("exit code 1"), "{md}");
    // why payments failed: the gate, its measurement, the rollback
    assert!(md.contains("#### `payments`"), "{md}");
    assert!(
        md.contains("gate `rollout` **fail**: Deployment payments/ledger: 1/3 ready"),
        "{md}"
    );
    assert!(md.contains("\"wanted\": 3"), "{md}");
    assert!(md.contains("rollback from step 4: **verified**"), "{md}");
    assert!(md.contains("blocker `l7-deny-without-waypoint`"), "{md}");
    // observability
    assert!(
        md.contains("reporter=\\\"waypoint\\\"") || md.contains("reporter=\"waypoint\""),
        "{md}"
    );
    assert!(
        md.contains("`cart-7d9f-abcde`, `web-1`"),
        "pods parsed from the prometheus-merge finding: {md}"
    );
    assert!(md.contains("PodMonitor/shop/cart"), "{md}");
    // enforcement equivalence: the differing class, its decision per moment, the count of equal ones
    assert!(md.contains("### Enforcement equivalence"), "{md}");
    assert!(md.contains("35 equal to the intent throughout"), "{md}");
    assert!(
        md.contains("| `no mesh identity` (no mesh) | `api:80` | `GET /unnamed` | deny | deny | deny | deny | deny | deny | deny | allow | gap |"),
        "{md}"
    );

    // the Mermaid Gantt block
    let start = md.find("```mermaid\ngantt\n").expect("mermaid gantt block");
    let block = &md[start + "```mermaid\n".len()..];
    let block = &block[..block.find("```").expect("closed block")];
    let lines: Vec<&str> = block.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    assert_eq!(lines[0], "gantt");
    assert!(lines.contains(&"dateFormat x"));
    let sections: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("section ")).collect();
    assert_eq!(
        sections,
        ["shop (migrated)", "payments (rolled-back)"],
        "one section per namespace that ran"
    );
    let mut ids = std::collections::HashSet::new();
    let mut tasks = 0;
    for l in lines.iter().filter(|l| {
        !l.starts_with("gantt")
            && !l.starts_with("title")
            && !l.starts_with("dateFormat")
            && !l.starts_with("axisFormat")
            && !l.starts_with("section")
    }) {
        // `<name> :<tag>, <id>, <start ms>, <end ms>`
        let (name, data) = l.split_once(" :").unwrap_or_else(|| panic!("task syntax: {l}"));
        assert!(!name.contains(':') && !name.is_empty(), "{l}");
        let parts: Vec<&str> = data.split(", ").collect();
        assert_eq!(parts.len(), 4, "{l}");
        assert!(["done", "crit", "active"].contains(&parts[0]), "{l}");
        assert!(ids.insert(parts[1].to_string()), "unique task ids: {l}");
        let (s, e): (i64, i64) = (parts[2].parse().unwrap(), parts[3].parse().unwrap());
        assert!(e > s, "{l}");
        tasks += 1;
    }
    assert_eq!(
        tasks,
        6 + 2 + 1,
        "shop's 6 steps, payments' 2 steps and its rollback"
    );
    assert!(block.contains("4 restart :crit,"), "failed step marked crit");
}

#[test]
fn reports_are_written_and_the_step_summary_appended() {
    let r = example();
    let dir = tempfile::tempdir().unwrap();
    let summary = dir.path().join("step_summary.md");
    std::fs::write(&summary, "previous content\n").unwrap();
    let opts = WriteOptions {
        dir: dir.path().join("reports"),
        json: true,
        junit: true,
        markdown: true,
        step_summary: Some(summary.clone()),
    };
    let written = report::write_all(&r, &opts).unwrap();
    assert_eq!(written.len(), 4);
    for ext in ["json", "xml", "md"] {
        let p = dir.path().join(format!("reports/ambient-migrate-report.{ext}"));
        assert!(std::fs::metadata(&p).unwrap().len() > 100, "{}", p.display());
    }
    report::write_all(&r, &opts).unwrap();
    let text = std::fs::read_to_string(&summary).unwrap();
    assert!(
        text.starts_with("previous content\n"),
        "appended, not overwritten"
    );
    assert_eq!(text.matches("```mermaid").count(), 2, "appended once per write");

    let none = WriteOptions {
        dir: dir.path().join("none"),
        json: false,
        junit: false,
        markdown: false,
        step_summary: None,
    };
    assert!(report::write_all(&r, &none).unwrap().is_empty());
    assert!(!dir.path().join("none").exists());
}

#[test]
fn observability_lists_merged_pods() {
    let pods = vec![
        json!({"metadata": {"name": "b", "annotations": {"prometheus.io/port": "15020", "prometheus.io/path": "/stats/prometheus"}}}),
        json!({"metadata": {"name": "a", "annotations": {"prometheus.io/port": "8080"}}}),
        json!({"metadata": {"name": "c"}}),
    ];
    assert_eq!(ObservabilityReport::merged_metrics_pods(&pods), ["b"]);
    let changes = ObservabilityReport::standard_reporter_changes(false);
    assert!(
        changes.iter().any(|c| c.after == "none"),
        "no L7 metrics without a waypoint"
    );
}

// ---- Behaviour that changes ----

#[test]
fn behaviour_changes_are_in_json_with_schema_and_in_markdown() {
    use ambient_migrate::assess::plan::{PlanOptions, plan_namespace};
    use ambient_migrate::assess::sidecar_only::{Loss, codes};
    let snapshot: ambient_migrate::assess::Snapshot = serde_json::from_value(json!({
        "namespace": {"metadata": {"name": "shop", "labels": {"istio-injection": "enabled"}}},
        "sidecars": [{"apiVersion": "networking.istio.io/v1", "kind": "Sidecar",
                      "metadata": {"name": "default", "namespace": "shop"},
                      "spec": {"egress": [{"hosts": ["./*"]}], "outboundTrafficPolicy": {"mode": "REGISTRY_ONLY"}}}],
        "envoyFilters": [{"apiVersion": "networking.istio.io/v1alpha3", "kind": "EnvoyFilter",
                          "metadata": {"name": "lua", "namespace": "shop"}, "spec": {}}]
    }))
    .unwrap();
    let opts = PlanOptions {
        accept_loss: vec![Loss::EgressLockdown],
        ..Default::default()
    };
    let mut r = example();
    r.namespaces[0].behaviour_changes = plan_namespace(&snapshot, &opts).behaviour_changes;
    r.namespaces[2].behaviour_changes = plan_namespace(&snapshot, &PlanOptions::default()).behaviour_changes;
    let text = report::json::render(&r);
    assert_eq!(report::json::parse(&text).unwrap(), r);
    let v: Value = serde_json::from_str(&text).unwrap();
    let shop = &v["namespaces"][0]["behaviour_changes"];
    assert_eq!(shop[0]["code"], codes::SIDECAR_EGRESS_REGISTRY_ONLY);
    assert_eq!(shop[0]["loss"], "egress-lockdown");
    assert_eq!(shop[0]["accepted"], true);
    assert_eq!(shop[0]["severity"], "warning");
    assert_eq!(v["namespaces"][2]["behaviour_changes"][0]["severity"], "blocker");
    assert_eq!(shop[1]["code"], codes::ENVOYFILTER);
    let s = schema();
    let errs = violations(&s, &v);
    assert!(errs.is_empty(), "schema violations: {errs:#?}");
    // Reports written before the section existed still parse.
    let mut old = v.clone();
    old["namespaces"][0]
        .as_object_mut()
        .unwrap()
        .remove("behaviour_changes");
    assert!(
        report::json::parse(&old.to_string()).unwrap().namespaces[0]
            .behaviour_changes
            .is_empty()
    );
    let md = report::markdown::render(&r);
    let sec = &md[md.find("### Behaviour that changes").expect("section")..];
    assert!(
        sec.contains("#### `shop`") && sec.contains("#### `legacy`"),
        "{sec}"
    );
    assert!(
        sec.contains(
            "| accepted (loses egress-lockdown) | `sidecar-egress-registry-only` | `Sidecar/shop/default` |"
        ),
        "{sec}"
    );
    assert!(sec.contains("| blocker (loses egress-lockdown) |"), "{sec}");
    assert!(sec.contains("istio/istio issue 54281"), "{sec}");
}
