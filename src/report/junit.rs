//! JUnit XML rendering of [`RunReport`], the format CI systems publish as test results (GitHub via
//! `mikepenz/action-junit-report`, GitLab `artifacts:reports:junit`, Jenkins).
//!
//! Mapping: one `<testsuite>` per namespace; one `<testcase>` for preflight, one per step and one per gate
//! (classname `<namespace>.<step>`), one for the rollback. A failed gate is a `<failure>` whose text is the
//! gate's measurements; a gate that could not measure (`error`) is an `<error>`; a namespace not reached is
//! a `<skipped>` test case. `time` is in seconds.

use std::fmt::Write as _;

use super::{NamespaceOutcome, RollbackOutcome, RunReport, StepOutcome, outcome_str, seconds_between};
use crate::assess::Severity;
use crate::gates::GateOutcome;

/// Escapes text for XML attributes and content (also drops characters XML 1.0 forbids).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' => out.push_str("&#9;"),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

/// Escapes element text (newlines kept as is so the measurements stay readable).
fn escape_text(s: &str) -> String {
    escape(s).replace("&#10;", "\n")
}

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

#[derive(Default)]
struct Counts {
    tests: usize,
    failures: usize,
    errors: usize,
    skipped: usize,
}

impl Counts {
    fn of(cases: &[Case]) -> Counts {
        let mut c = Counts {
            tests: cases.len(),
            ..Default::default()
        };
        for case in cases {
            match case.verdict {
                Verdict::Pass => {}
                Verdict::Failure { .. } => c.failures += 1,
                Verdict::Error { .. } => c.errors += 1,
                Verdict::Skipped(_) => c.skipped += 1,
            }
        }
        c
    }
}

/// The JUnit XML document.
pub fn render(report: &RunReport) -> String {
    let suites: Vec<(&super::NamespaceReport, Vec<Case>)> =
        report.namespaces.iter().map(|n| (n, cases(n))).collect();
    let mut total = Counts::default();
    for (_, c) in &suites {
        let k = Counts::of(c);
        total.tests += k.tests;
        total.failures += k.failures;
        total.errors += k.errors;
        total.skipped += k.skipped;
    }
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"ambient-migrate {}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\" timestamp=\"{}\">",
        escape(&report.command),
        total.tests,
        total.failures,
        total.errors,
        total.skipped,
        seconds_between(report.started, report.ended),
        report.started
    );
    for (n, cs) in &suites {
        let k = Counts::of(cs);
        let time = n.started.map(|s| seconds_between(s, n.ended)).unwrap_or(0.0);
        let _ = write!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\"",
            escape(&n.name),
            k.tests,
            k.failures,
            k.errors,
            k.skipped,
            time
        );
        if let Some(s) = n.started {
            let _ = write!(x, " timestamp=\"{s}\"");
        }
        x.push_str(">\n    <properties>\n");
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
        for (k, v) in props {
            let _ = writeln!(x, "      <property name=\"{}\" value=\"{}\"/>", k, escape(&v));
        }
        x.push_str("    </properties>\n");
        for c in cs {
            let _ = write!(
                x,
                "    <testcase name=\"{}\" classname=\"{}\" time=\"{:.3}\"",
                escape(&c.name),
                escape(&c.classname),
                c.time
            );
            match &c.verdict {
                Verdict::Pass => x.push_str("/>\n"),
                Verdict::Failure { message, kind, text } => {
                    let _ = write!(
                        x,
                        ">\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    </testcase>\n",
                        escape(message),
                        escape(kind),
                        escape_text(text)
                    );
                }
                Verdict::Error { message, kind, text } => {
                    let _ = write!(
                        x,
                        ">\n      <error message=\"{}\" type=\"{}\">{}</error>\n    </testcase>\n",
                        escape(message),
                        escape(kind),
                        escape_text(text)
                    );
                }
                Verdict::Skipped(message) => {
                    let _ = write!(
                        x,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>\n",
                        escape(message)
                    );
                }
            }
        }
        x.push_str("  </testsuite>\n");
    }
    x.push_str("</testsuites>\n");
    x
}
