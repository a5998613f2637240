//! The decisions of ambient-migrate, kept apart from every side effect.
//!
//! Everything here is a pure function of its inputs: a snapshot of cluster objects (read by the main
//! crate's `cluster` module), the user's options, and measurements handed in by the executor. The crate
//! has no Kubernetes client, no async runtime and no I/O, so the compiler keeps it pure (`cargo tree -p
//! migrate-core` shows no kube, tokio, reqwest or hyper) and every rule can be unit-tested without a
//! cluster. See `docs/design.md` §2 for the split between this crate and the executor.

#[macro_use]
pub mod names;

pub mod assess;
pub mod gates;
pub mod probes;
pub mod rehearse;
pub mod steps;

/// Namespace in which Events about cluster-scoped objects are recorded. Here because the permission model
/// (`assess::permissions`) must ask for `create events` where the event writer (main crate,
/// `cluster::events`) sends them.
pub const EVENTS_NAMESPACE: &str = "default";
