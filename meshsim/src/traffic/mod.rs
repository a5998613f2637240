//! The data-plane traffic model.

pub mod proxy;

/// Counters per enforcement path.
#[derive(Debug, Default)]
pub struct Counters {}
