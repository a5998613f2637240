//! ambient-migrate: moves Istio namespaces from sidecars to ambient mode with health gates, backups and
//! automatic rollback.
pub mod cli;
