//! `meshsim serve`: run the simulated cluster until killed.

fn main() {}
