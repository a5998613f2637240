//! Markdown summary of a [`RunReport`]: verdict, a table of namespaces and outcomes, why each failed one
//! failed (gate, measurements, rollback), post-migration observability notes, and a Mermaid Gantt timeline
//! of namespaces and steps. GitHub renders it in `$GITHUB_STEP_SUMMARY`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use jiff::Timestamp;

use super::{
    NamespaceOutcome, NamespaceReport, ObservabilityReport, ReportError, RollbackOutcome, RunReport,
    Sections, StepOutcome, outcome_str, seconds_between,
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
pub fn gantt<N: Sections>(report: &RunReport<N>) -> String {
    let mut g = gantt_head(report);
    let mut id = 0;
    for n in report.namespaces.each() {
        gantt_section(&mut g, &n, &mut id);
    }
    g.push_str("```\n");
    g
}

fn gantt_head<N>(report: &RunReport<N>) -> String {
    let mut g = String::from("```mermaid\ngantt\n");
    let _ = writeln!(
        g,
        "    title {}",
        mermaid_name(&format!("ambient-migrate {} {}", report.command, report.run_id))
    );
    g.push_str("    dateFormat x\n    axisFormat %H:%M:%S\n");
    g
}

/// One namespace's Gantt section (nothing when it ran no step); `id` numbers the tasks across the chart.
fn gantt_section(g: &mut String, n: &NamespaceReport, id: &mut usize) {
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
        return;
    }
    let _ = writeln!(
        g,
        "    section {}",
        mermaid_name(&format!("{} ({})", n.name, n.outcome.as_str()))
    );
    for (name, tag, start, end) in tasks {
        *id += 1;
        // Mermaid draws nothing for zero-length tasks: give them one millisecond.
        let (s, e) = (
            start.as_millisecond(),
            end.as_millisecond().max(start.as_millisecond() + 1),
        );
        let _ = writeln!(g, "    {} :{tag}, t{id}, {s}, {e}", mermaid_name(&name));
    }
}

/// The whole Markdown summary. Its parts each list the namespaces, so they are built side by side in one
/// pass over the sections (a fleet's are unpacked one at a time, once each) and joined at the end.
pub fn render<N: Sections>(report: &RunReport<N>) -> String {
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
    let (mut failed, mut obs, mut changes, mut enf) =
        (String::new(), String::new(), String::new(), String::new());
    let mut timeline = gantt_head(report);
    let mut task_id = 0;
    for n in report.namespaces.each() {
        table_row(&mut m, &n);
        if n.outcome.is_failure() {
            failure_section(&mut failed, &n);
        }
        if let Some(o) = &n.observability {
            observability_section(&mut obs, &n.name, o);
        }
        changes.push_str(&super::behaviour::markdown(&n.name, &n.behaviour_changes));
        if let Some(t) = &n.enforcement {
            let _ = writeln!(enf, "#### `{}`\n\n{}", n.name, t.markdown());
        }
        gantt_section(&mut timeline, &n, &mut task_id);
    }
    timeline.push_str("```\n");
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

    if !failed.is_empty() {
        m.push_str("### Why namespaces did not migrate\n\n");
        m.push_str(&failed);
    }
    if !obs.is_empty() {
        m.push_str("### Monitoring to update\n\n");
        m.push_str(&obs);
    }
    if !changes.is_empty() {
        m.push_str("### Behaviour that changes\n\nSidecar-only settings ambient ignores (codes and sources: `docs/findings.md`).\n\n");
        m.push_str(&changes);
    }
    if !enf.is_empty() {
        m.push_str("### Enforcement equivalence\n\n");
        m.push_str("Every request class at every moment of the plan against what the policies ask for (0 = before the migration, 4.k(workload) = during restart batch k with only that workload's pods new, 4.k = after restart batch k); only the classes that differ are listed.\n\n");
        m.push_str(&enf);
    }

    m.push_str("### Timeline\n\n");
    m.push_str(&timeline);
    m
}

fn table_row(m: &mut String, n: &NamespaceReport) {
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

fn observability_section(m: &mut String, name: &str, o: &ObservabilityReport) {
    let _ = writeln!(m, "#### `{name}`\n");
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
