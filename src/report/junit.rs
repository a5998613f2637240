//! JUnit XML rendering of [`RunReport`], the format CI systems publish as test results (GitHub via
//! `mikepenz/action-junit-report`, GitLab `artifacts:reports:junit`, Jenkins).
//!
//! Mapping: one `<testsuite>` per namespace; one `<testcase>` for preflight, one per step and one per gate
//! (classname `<namespace>.<step>`), one for the rollback. A failed gate is a `<failure>` whose text is the
//! gate's measurements; a gate that could not measure (`error`) is an `<error>`; a namespace not reached is
//! a `<skipped>` test case. `time` is in seconds.

use std::time::Duration;

use quick_junit::{NonSuccessKind, Report, TestCase, TestCaseStatus, TestSuite};

use super::{
    NamespaceOutcome, RollbackOutcome, RunReport, Sections, StepOutcome, outcome_str, seconds_between,
};
use crate::assess::Severity;
use crate::gates::GateOutcome;

enum Verdict {
    Pass,
    Failure {
        message: String,
        kind: String,
        text: String,
    },
    Error {
        message: String,
        kind: String,
        text: String,
    },
    Skipped(String),
}

struct Case {
    name: String,
    classname: String,
    time: f64,
    verdict: Verdict,
}

fn gate_case(ns: &str, scope: &str, g: &crate::gates::GateResult) -> Case {
    let time = g.started.map(|s| seconds_between(s, g.ended)).unwrap_or(0.0);
    let text = format!(
        "{}\nmeasured:\n{}",
        g.message,
        serde_json::to_string_pretty(&g.measured).unwrap_or_default()
    );
    let verdict = match g.outcome {
        GateOutcome::Pass => Verdict::Pass,
        GateOutcome::Fail | GateOutcome::Timeout => Verdict::Failure {
            message: g.message.clone(),
            kind: outcome_str(g.outcome).to_string(),
            text,
        },
        GateOutcome::Error => Verdict::Error {
            message: g.message.clone(),
            kind: "error".into(),
            text,
        },
    };
    Case {
        name: format!("gate {}", g.gate),
        classname: format!("{ns}.{scope}"),
        time,
        verdict,
    }
}

fn cases(n: &super::NamespaceReport) -> Vec<Case> {
    let ns = n.name.as_str();
    let mut v = Vec::new();
    if matches!(
        n.outcome,
        NamespaceOutcome::Skipped | NamespaceOutcome::NotStarted
    ) && n.steps.is_empty()
    {
        v.push(Case {
            name: "migration".into(),
            classname: format!("{ns}.migration"),
            time: 0.0,
            verdict: Verdict::Skipped(n.reason.clone().unwrap_or_else(|| n.outcome.as_str().to_string())),
        });
        return v;
    }
    let blockers: Vec<String> = n
        .findings
        .iter()
        .filter(|f| f.severity == Severity::Blocker)
        .map(|f| format!("{} [{}]: {}\nfix: {}", f.object, f.code, f.message, f.fix))
        .collect();
    v.push(Case {
        name: "preflight".into(),
        classname: format!("{ns}.preflight"),
        time: 0.0,
        verdict: if blockers.is_empty() {
            Verdict::Pass
        } else {
            Verdict::Failure {
                message: format!("{} blocker(s); nothing was touched", blockers.len()),
                kind: "blocked".into(),
                text: blockers.join("\n\n"),
            }
        },
    });
    for s in &n.steps {
        let scope = s.step.name();
        let failed: Vec<&str> = s
            .gates
            .iter()
            .filter(|g| g.outcome != GateOutcome::Pass)
            .map(|g| g.gate.as_str())
            .collect();
        let msg = if failed.is_empty() {
            format!("step {} {}", s.step.number(), s.outcome.as_str())
        } else {
            format!(
                "step {} {}: gate(s) {}",
                s.step.number(),
                s.outcome.as_str(),
                failed.join(", ")
            )
        };
        let changes = s
            .changes
            .iter()
            .map(|c| serde_json::to_string(c).unwrap_or_default())
            .collect::<Vec<_>>();
        let text = format!("{msg}\nchanges:\n{}", changes.join("\n"));
        let verdict = match s.outcome {
            StepOutcome::Pass => Verdict::Pass,
            StepOutcome::Fail | StepOutcome::Timeout => Verdict::Failure {
                message: msg,
                kind: s.outcome.as_str().into(),
                text,
            },
            StepOutcome::Error => Verdict::Error {
                message: msg,
                kind: "error".into(),
                text,
            },
            StepOutcome::Skipped => Verdict::Skipped(msg),
        };
        v.push(Case {
            name: format!("step {} {}", s.step.number(), scope),
            classname: format!("{ns}.{scope}"),
            time: seconds_between(s.started, s.ended),
            verdict,
        });
        for g in &s.gates {
            v.push(gate_case(ns, scope, g));
        }
    }
    if let Some(r) = &n.rollback {
        let undone = r.undone.iter().map(|s| s.name()).collect::<Vec<_>>().join(", ");
        let verdict = match r.outcome {
            RollbackOutcome::Verified => Verdict::Pass,
            RollbackOutcome::Failed => Verdict::Failure {
                message: r.message.clone().unwrap_or_else(|| "rollback failed".into()),
                kind: "rollback-failed".into(),
                text: format!("from step {}; undone: {undone}", r.from.number()),
            },
        };
        v.push(Case {
            name: format!("rollback from step {}", r.from.number()),
            classname: format!("{ns}.rollback"),
            time: seconds_between(r.started, r.ended),
            verdict,
        });
        for g in &r.gates {
            v.push(gate_case(ns, "rollback", g));
        }
    }
    v
}

/// A jiff timestamp as the chrono type quick-junit writes (RFC 3339, UTC).
fn chrono_time(t: jiff::Timestamp) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::from_timestamp_millis(t.as_millisecond())
        .unwrap_or_default()
        .fixed_offset()
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or_default()
}

fn non_success(k: NonSuccessKind, message: String, kind: String, text: String) -> TestCaseStatus {
    let mut st = TestCaseStatus::non_success(k);
    st.set_message(message).set_type(kind).set_description(text);
    st
}

fn test_case(c: Case) -> TestCase {
    let status = match c.verdict {
        Verdict::Pass => TestCaseStatus::success(),
        Verdict::Failure { message, kind, text } => non_success(NonSuccessKind::Failure, message, kind, text),
        Verdict::Error { message, kind, text } => non_success(NonSuccessKind::Error, message, kind, text),
        Verdict::Skipped(message) => {
            let mut st = TestCaseStatus::skipped();
            st.set_message(message);
            st
        }
    };
    let mut t = TestCase::new(c.name, status);
    t.set_classname(c.classname).set_time(secs(c.time));
    t
}

/// The JUnit document: one suite per namespace, each built from its section as it is read (a fleet's sections
/// are unpacked one at a time).
fn document<N: Sections>(report: &RunReport<N>) -> Report {
    let mut doc = Report::new(format!("ambient-migrate {}", report.command));
    doc.set_timestamp(chrono_time(report.started))
        .set_time(secs(seconds_between(report.started, report.ended)));
    for n in report.namespaces.each() {
        let mut suite = TestSuite::new(n.name.as_str());
        suite.set_time(secs(
            n.started.map(|s| seconds_between(s, n.ended)).unwrap_or(0.0),
        ));
        if let Some(s) = n.started {
            suite.set_timestamp(chrono_time(s));
        }
        let mut props = vec![
            ("outcome", n.outcome.as_str().to_string()),
            ("canary", n.canary.to_string()),
            ("wave", n.wave.to_string()),
            ("run_id", report.run_id.clone()),
            ("dry_run", report.dry_run.to_string()),
        ];
        if let Some(why) = n.why() {
            props.push(("reason", why));
        }
        suite.add_properties(props.into_iter().map(|(k, v)| (k.to_string(), v)));
        suite.add_test_cases(cases(&n).into_iter().map(test_case));
        doc.add_test_suite(suite);
    }
    doc
}

/// The JUnit XML document, written by `quick-junit` (the serializer cargo-nextest uses): the counts on
/// `<testsuites>` and `<testsuite>` are computed from the cases, and text is made XML-safe there.
pub fn render<N: Sections>(report: &RunReport<N>) -> String {
    // Serialising an in-memory document to a String cannot fail on I/O; an error here would be a bug in
    // the serializer, and a report file must still be written, so fall back to an empty document.
    document(report)
        .to_string()
        .unwrap_or_else(|_| "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites/>\n".into())
}

/// Writes [`render`]'s text to `path`, serialised straight to the file (a fleet's is megabytes of XML).
pub fn write<N: Sections>(report: &RunReport<N>, path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    document(report)
        .serialize(&mut w)
        .map_err(std::io::Error::other)?;
    w.flush()
}
