//! ambient-migrate: moves Istio namespaces from sidecars to ambient mode with health gates, backups and
//! automatic rollback.
pub mod cli;
pub mod backup;
pub mod cluster;
pub mod journal;
pub mod lease;
