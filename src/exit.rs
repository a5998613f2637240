//! The process exit codes (docs/design.md §7), their meanings and the code a run's namespace outcomes
//! imply: the one place they are decided.

use crate::report::{NamespaceOutcome, NamespaceReport};

pub const OK: i32 = 0;
pub const GATE_FAILED: i32 = 1;
pub const USAGE: i32 = 2;
pub const HUMAN_NEEDED: i32 = 3;
pub const BLOCKED: i32 = 4;
pub const LOCKED: i32 = 5;

/// What the exit code means, for reports.
pub fn meaning(code: i32) -> &'static str {
    match code {
        OK => "all requested namespaces migrated and validated",
        GATE_FAILED => "a namespace failed a gate and was rolled back (or held) cleanly",
        USAGE => "usage or configuration error, nothing touched",
        HUMAN_NEEDED => "a rollback failed or the state is inconsistent: a human is needed",
        BLOCKED => "preflight blocked a namespace: nothing of it touched",
        LOCKED => "another run holds the lock",
        _ => "unexpected",
    }
}

/// Exit code implied by the namespace outcomes: 3 if any rollback failed, else 1 if any rolled back or
/// held, else 4 if any was blocked, else 1 if any was not started (a cancelled run), else 0. Lock (5) and
/// usage (2) errors are decided before a report exists.
pub fn for_outcomes(namespaces: &[NamespaceReport]) -> i32 {
    let any = |o| namespaces.iter().any(|n| n.outcome == o);
    if any(NamespaceOutcome::RollbackFailed) {
        HUMAN_NEEDED
    } else if any(NamespaceOutcome::RolledBack) || any(NamespaceOutcome::Held) {
        GATE_FAILED
    } else if any(NamespaceOutcome::Blocked) {
        BLOCKED
    } else if any(NamespaceOutcome::NotStarted) {
        // The fleet stopped early (cancelled): not "all requested namespaces migrated".
        GATE_FAILED
    } else {
        OK
    }
}
