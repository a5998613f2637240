//! curl command lines for curl Jobs (placeholder until the parser lands).

use super::Source;
use crate::Sim;

/// What curl printed and its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurlOutput {
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs a curl command line from `source`.
pub fn run(_sim: &Sim, _source: Source, _argv: &[String]) -> CurlOutput {
    CurlOutput {
        exit_code: 2,
        stdout: String::new(),
        stderr: "curl: not implemented\n".into(),
    }
}
