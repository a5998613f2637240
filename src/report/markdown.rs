//! Markdown summary of a [`RunReport`]: verdict, a table of namespaces and outcomes, why each failed one
//! failed (gate, measurements, rollback), post-migration observability notes, and a Mermaid Gantt timeline
//! of namespaces and steps. GitHub renders it in `$GITHUB_STEP_SUMMARY`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use jiff::Timestamp;

use super::{
    NamespaceOutcome, NamespaceReport, ReportError, RollbackOutcome, RunReport, StepOutcome, outcome_str,
    seconds_between,
};
use crate::assess::Severity;
use crate::gates::GateOutcome;

/// What the exit code means: see [`crate::exit::meaning`].
pub fn exit_code_meaning(code: i32) -> &'static str {
    crate::exit::meaning(code)
}

fn icon(o: NamespaceOutcome) -> &'static str {
    match o {
        NamespaceOutcome::Migrated => "✅",
        NamespaceOutcome::RolledBack => "↩️",
        NamespaceOutcome::RollbackFailed => "🚨",
        NamespaceOutcome::Held => "⏸️",
        NamespaceOutcome::Blocked => "⛔",
        NamespaceOutcome::Skipped => "⏭️",
        NamespaceOutcome::NotStarted => "➖",
    }
}

/// Makes text safe inside a Markdown table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Makes text safe as a Mermaid Gantt task or section name (`:` separates the task data, `#` and `;`
/// start comments or end statements).
fn mermaid_name(s: &str) -> String {
    s.chars()
        .map(|c| {
            if matches!(c, ':' | '#' | ';' | '\n' | '\r') {
                ' '
            } else {
                c
            }
        })
        .collect()
}

fn duration(start: Option<Timestamp>, end: Option<Timestamp>) -> String {
    match start {
        Some(s) if end.is_some() => format!("{:.1}s", seconds_between(s, end)),
        _ => "–".into(),
    }
}

/// The Mermaid Gantt chart: one section per namespace, one task per step (and the rollback), times as Unix
/// milliseconds (`dateFormat x`) so sub-second steps keep their order.
pub fn gantt(report: &RunReport) -> String {
    let mut g = String::from("```mermaid\ngantt\n");
    let _ = writeln!(
        g,
        "    title {}",
        mermaid_name(&format!("ambient-migrate {} {}", report.command, report.run_id))
    );
    g.push_str("    dateFormat x\n    axisFormat %H:%M:%S\n");
    let mut id = 0;
    for n in &report.namespaces {
        let mut tasks = Vec::new();
        for s in &n.steps {
            let tag = match s.outcome {
                StepOutcome::Pass => "done",
                StepOutcome::Skipped => "done",
                StepOutcome::Fail | StepOutcome::Error | StepOutcome::Timeout => "crit",
            };
            let end = s.ended.unwrap_or(s.started);
            tasks.push((
                format!("{} {}", s.step.number(), s.step.name()),
                tag,
                s.started,
                end,
            ));
        }
        if let Some(r) = &n.rollback {
            let tag = if r.outcome == RollbackOutcome::Verified {
                "active"
            } else {
                "crit"
            };
            tasks.push((
                "rollback".to_string(),
                tag,
                r.started,
                r.ended.unwrap_or(r.started),
            ));
        }
        if tasks.is_empty() {
            continue;
        }
        let _ = writeln!(
            g,
            "    section {}",
            mermaid_name(&format!("{} ({})", n.name, n.outcome.as_str()))
        );
        for (name, tag, start, end) in tasks {
            id += 1;
            // Mermaid draws nothing for zero-length tasks: give them one millisecond.
            let (s, e) = (
                start.as_millisecond(),
                end.as_millisecond().max(start.as_millisecond() + 1),
            );
            let _ = writeln!(g, "    {} :{tag}, t{id}, {s}, {e}", mermaid_name(&name));
        }
    }
    g.push_str("```\n");
    g
}

/// The whole Markdown summary.
pub fn render(report: &RunReport) -> String {
    let mut m = String::new();
    let _ = writeln!(
        m,
        "## ambient-migrate {}{}\n",
        report.command,
        if report.dry_run { " (dry run)" } else { "" }
    );
    let _ = writeln!(
        m,
        "**{}** — exit code {} ({})\n",
        report.summary.message,
        report.exit_code,
        exit_code_meaning(report.exit_code)
    );
    let _ = writeln!(
        m,
        "Run `{}` on `{}`, started {}, {}; settings `{}`.\n",
        report.run_id,
        report.cluster,
        report.started,
        match report.ended {
            Some(e) => format!("ended {e} ({:.1}s)", seconds_between(report.started, Some(e))),
            None => "still running".into(),
        },
        report.settings_digest
    );

    m.push_str("| Namespace | Canary | Wave | Outcome | Last step | Duration | Why |\n");
    m.push_str("|---|---|---|---|---|---|---|\n");
    for n in &report.namespaces {
        let last = n
            .steps
            .last()
            .map(|s| format!("{} {}", s.step.number(), s.step.name()))
            .unwrap_or("–".into());
        let _ = writeln!(
            m,
            "| `{}` | {} | {} | {} {} | {} | {} | {} |",
            n.name,
            if n.canary { "yes" } else { "" },
            n.wave,
            icon(n.outcome),
            n.outcome.as_str(),
            last,
            duration(n.started, n.ended),
            cell(&n.why().unwrap_or_default())
        );
    }
    m.push('\n');

    if let Some(t) = &report.traffic {
        let _ = writeln!(
            m,
            "### Traffic per destination and path\n\n{} requests; {} legitimate ones failed, {} illegitimate ones leaked. The window is the first to the last wrong request, from the start of the traffic.\n",
            t.sent(),
            t.wrongly_denied(),
            t.wrongly_allowed()
        );
        m.push_str(&t.markdown());
        m.push('\n');
    }

    let failed: Vec<&NamespaceReport> = report
        .namespaces
        .iter()
        .filter(|n| n.outcome.is_failure())
        .collect();
    if !failed.is_empty() {
        m.push_str("### Why namespaces did not migrate\n\n");
        for n in failed {
            failure_section(&mut m, n);
        }
    }

    let obs: Vec<&NamespaceReport> = report
        .namespaces
        .iter()
        .filter(|n| n.observability.is_some())
        .collect();
    if !obs.is_empty() {
        m.push_str("### Monitoring to update\n\n");
        for n in obs {
            let o = n.observability.as_ref().expect("filtered");
            let _ = writeln!(m, "#### `{}`\n", n.name);
            if !o.merged_metrics_pods.is_empty() {
                let _ = writeln!(
                    m,
                    "- Prometheus metrics merging: pods {} were scraped through the sidecar (:15020 `/stats/prometheus`); without the sidecar Prometheus scrapes the application's own port and the per-pod `istio_*` series disappear.",
                    n_list(&o.merged_metrics_pods)
                );
            }
            for mon in &o.monitors {
                let _ = writeln!(m, "- `{}`: {} Fix: {}", mon.object, mon.message, mon.fix);
            }
            if !o.reporter_changes.is_empty() {
                m.push_str("\n| Metrics | Before (sidecars) | After (ambient) | Note |\n|---|---|---|---|\n");
                for r in &o.reporter_changes {
                    let _ = writeln!(
                        m,
                        "| {} | `{}` | `{}` | {} |",
                        cell(&r.metrics),
                        cell(&r.before),
                        cell(&r.after),
                        cell(&r.note)
                    );
                }
            }
            m.push('\n');
        }
    }

    let changes: String = report
        .namespaces
        .iter()
        .map(|n| super::behaviour::markdown(&n.name, &n.behaviour_changes))
        .collect();
    if !changes.is_empty() {
        m.push_str("### Behaviour that changes\n\nSidecar-only settings ambient ignores (codes and sources: `docs/findings.md`).\n\n");
        m.push_str(&changes);
    }
    let enf: Vec<&NamespaceReport> = report
        .namespaces
        .iter()
        .filter(|n| n.enforcement.is_some())
        .collect();
    if !enf.is_empty() {
        m.push_str("### Enforcement equivalence\n\n");
        m.push_str("Every request class at every moment of the plan against what the policies ask for (0 = before the migration, 4.k(workload) = during restart batch k with only that workload's pods new, 4.k = after restart batch k); only the classes that differ are listed.\n\n");
        for n in enf {
            let t = n.enforcement.as_ref().expect("filtered");
            let _ = writeln!(m, "#### `{}`\n\n{}", n.name, t.markdown());
        }
    }

    m.push_str("### Timeline\n\n");
    m.push_str(&gantt(report));
    m
}

fn n_list(items: &[String]) -> String {
    items
        .iter()
        .map(|p| format!("`{p}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn failure_section(m: &mut String, n: &NamespaceReport) {
    let _ = writeln!(
        m,
        "#### `{}`: {} {}\n",
        n.name,
        icon(n.outcome),
        n.outcome.as_str()
    );
    if let Some(why) = n.why() {
        let _ = writeln!(m, "{}\n", why);
    }
    for f in n.findings.iter().filter(|f| f.severity == Severity::Blocker) {
        let _ = writeln!(
            m,
            "- blocker `{}` on `{}`: {} Fix: {}",
            f.code, f.object, f.message, f.fix
        );
        if let Some(y) = &f.fix_yaml {
            let _ = writeln!(
                m,
                "\n  ```yaml\n{}\n  ```",
                y.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n")
            );
        }
    }
    for s in &n.steps {
        for g in s.gates.iter().filter(|g| g.outcome != GateOutcome::Pass) {
            let _ = writeln!(
                m,
                "- step {} {}: gate `{}` **{}**: {}",
                s.step.number(),
                s.step.name(),
                g.gate,
                outcome_str(g.outcome),
                g.message
            );
            let measured = serde_json::to_string_pretty(&g.measured).unwrap_or_default();
            let _ = writeln!(
                m,
                "\n  <details><summary>measured</summary>\n\n  ```json\n{}\n  ```\n  </details>\n",
                measured
                    .lines()
                    .map(|l| format!("  {l}"))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
    if let Some(r) = &n.rollback {
        let undone = r
            .undone
            .iter()
            .map(|s| format!("{} {}", s.number(), s.name()))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            m,
            "- rollback from step {}: **{}** (undone: {}){}",
            r.from.number(),
            match r.outcome {
                RollbackOutcome::Verified => "verified",
                RollbackOutcome::Failed => "failed",
            },
            if undone.is_empty() {
                "nothing".into()
            } else {
                undone
            },
            r.message
                .as_ref()
                .map(|msg| format!(": {msg}"))
                .unwrap_or_default()
        );
        for g in r.gates.iter().filter(|g| g.outcome != GateOutcome::Pass) {
            let _ = writeln!(
                m,
                "  - verification gate `{}` **{}**: {}",
                g.gate,
                outcome_str(g.outcome),
                g.message
            );
        }
    }
    if let Some(b) = &n.backup {
        let _ = writeln!(m, "- backup: `{b}`");
    }
    m.push('\n');
}

/// Appends `markdown` to the file named by `$GITHUB_STEP_SUMMARY` (the caller reads the variable and passes
/// the path, so tests need not touch the process environment).
pub fn append_step_summary(path: &Path, markdown: &str) -> Result<(), ReportError> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| ReportError::Write {
            path: path.to_path_buf(),
            source,
        })?;
    f.write_all(markdown.as_bytes())
        .and_then(|_| f.write_all(b"\n"))
        .map_err(|source| ReportError::Write {
            path: path.to_path_buf(),
            source,
        })
}
