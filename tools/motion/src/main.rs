//! The motion command line

fn main() {}
