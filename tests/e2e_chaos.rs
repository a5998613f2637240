//! A sample of the acceptance programs of `examples/bench_faults.rs`, small enough for CI: a few cells of
//! the fault matrix and a few seeded SIGKILLs of the crash soak, with the release programs' checks (the
//! binary out of process against meshsim). A regression that leaves a namespace anywhere but Migrated,
//! RolledBack-equal-to-backup or RollbackFailed-with-a-message fails here.

use test_support::chaos as chaos_common;

use chaos_common::*;

/// Cells whose end does not depend on timing: the fault fails the step's gate, the rollback restores the
/// backup; a stolen Lease ends anywhere accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_sample_ends_migrated_or_rolled_back_to_the_backup() {
    let (a, b, c) = tokio::join!(
        run_cell("enable-ambient", "service-errors"),
        run_cell("activate-waypoint", "waypoint-never-ready"),
        run_cell("remove-injection", "lost-lease"),
    );
    for (cell, want) in [
        (&a, Some(End::RolledBack)),
        (&b, Some(End::RolledBack)),
        (&c, None),
    ] {
        assert!(cell.injected, "the run never entered {}: {cell:?}", cell.step);
        assert!(cell.end.accepted(), "{cell:?}");
        if let Some(want) = want {
            assert_eq!(cell.end, want, "{cell:?}");
            assert_eq!(
                cell.first_exit, 1,
                "a failed gate with a verified rollback: {cell:?}"
            );
        }
    }
}

/// Two SIGKILLs at seeded instants (a fleet run and operator rollbacks): each rerun converges.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_kills_then_reruns_converge() {
    let s = soak(11, 2, false).await;
    assert!(s.failures.is_empty(), "{:#?}", s.failures);
    assert!(s.kills >= 2, "{s:?}");
    assert_eq!(s.converged, s.kills, "{s:?}");
}
