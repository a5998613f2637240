//! The process exit codes (docs/design.md §7), their meanings and the code a run's namespace outcomes
//! imply: the one place they are decided.

use crate::report::NamespaceOutcome;

pub const OK: i32 = 0;
pub const GATE_FAILED: i32 = 1;
pub const USAGE: i32 = 2;
pub const HUMAN_NEEDED: i32 = 3;
pub const BLOCKED: i32 = 4;
pub const LOCKED: i32 = 5;

/// Why a command stopped before it could finish, which decides its exit code. Commands return it instead
/// of printing, so each failure is printed exactly once, as `error: <message>`, by whoever ends the
/// process ([`Failure::report`]); the message names the object and the fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Usage or configuration error (exit 2): nothing was touched.
    #[error("{0}")]
    Usage(String),
    /// The cluster could not be read or written as the command needs, or the state is inconsistent
    /// (exit 3): a human is needed.
    #[error("{0}")]
    HumanNeeded(String),
    /// Refused before the first write (exit 4): missing permissions, a blocked preflight.
    #[error("{0}")]
    Blocked(String),
    /// Another run holds the fleet lease (exit 5): nothing was changed.
    #[error("{0}")]
    Locked(String),
}

impl Failure {
    /// The process exit code (docs/design.md §7).
    pub fn code(&self) -> i32 {
        match self {
            Failure::Usage(_) => USAGE,
            Failure::HumanNeeded(_) => HUMAN_NEEDED,
            Failure::Blocked(_) => BLOCKED,
            Failure::Locked(_) => LOCKED,
        }
    }

    /// Prints the failure on stderr (the one place a command's failure is printed) and returns its code.
    pub fn report(&self) -> i32 {
        eprintln!("error: {self}");
        self.code()
    }
}

/// What a command returns: the exit code its outcome implies, or why it stopped early.
pub type CmdResult = Result<i32, Failure>;

/// The exit code of a command's result, printing its failure if it has one.
pub fn finish(r: CmdResult) -> i32 {
    r.unwrap_or_else(|f| f.report())
}

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
pub fn for_outcomes(outcomes: impl Iterator<Item = NamespaceOutcome>) -> i32 {
    let seen: std::collections::HashSet<NamespaceOutcome> = outcomes.collect();
    let any = |o| seen.contains(&o);
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
