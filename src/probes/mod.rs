//! Traffic probes: definitions and evaluation (pure), runners (http, job).

pub mod policy;
pub mod spec;
