//! Per-pod data-plane checks (filled next).
