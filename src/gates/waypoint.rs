//! Waypoint readiness evaluation (filled next).
