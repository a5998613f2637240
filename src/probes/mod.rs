//! Traffic probes: definitions and evaluation (pure), runners (http, job).

pub mod policy;
pub mod spec;
pub mod http;
pub mod job;
pub mod runner;
