//! Request accounting: counts of API requests per verb, resource, namespace and user agent, plus a bounded
//! request log, readable over HTTP (benchmarks count API calls per migrated namespace; tests prove that
//! nothing mutating reached the cluster).

/// Request counters and log (filled by the API layer).
#[derive(Debug, Default)]
pub struct Accounting {}
