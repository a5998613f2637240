//! Probe definitions and their evaluation rules (pure); the runners that send probes live in the main
//! crate (`probes::{http, job, runner}`).

pub mod policy;
pub mod spec;
