//! Traffic probes: definitions and evaluation (pure), runners (http, job).

pub mod http;
pub mod job;
pub mod policy;
pub mod runner;
pub mod spec;
