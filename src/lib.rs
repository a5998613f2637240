//! ambient-migrate: moves Istio namespaces from sidecars to ambient mode with health gates, backups and
//! automatic rollback.
pub mod app;
pub mod backup;
pub mod cli;
pub mod cluster;
#[cfg(feature = "demo")]
pub mod demo;
pub mod engine;
pub mod exit;
pub mod fleet;
pub mod journal;
pub mod lease;
pub mod memory;
pub mod probes;
#[cfg(feature = "demo")]
pub mod rehearse;
pub mod report;
pub mod settings;

// The decisions live in the `migrate-core` crate (no client, no runtime, no I/O); re-exported under their
// historical paths so `crate::assess::...` reads the same in the executor and the tests.
pub use migrate_core::{assess, gates, steps};
