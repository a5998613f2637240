//! Traffic probes: definitions and evaluation (pure), runners (http, job).

pub mod http;
pub mod job;
pub mod runner;

// Definitions and evaluation rules are pure and live in `migrate-core`.
pub use migrate_core::probes::{policy, spec};
