//! ambient-migrate: moves Istio namespaces from sidecars to ambient mode with health gates, backups and
//! automatic rollback.
pub mod app;
pub mod assess;
pub mod backup;
pub mod cli;
pub mod cluster;
#[cfg(feature = "demo")]
pub mod demo;
pub mod engine;
pub mod fleet;
pub mod gates;
pub mod journal;
pub mod lease;
pub mod probes;
pub mod report;
pub mod settings;
pub mod steps;
