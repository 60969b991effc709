//! The `analysis` worker's building blocks. So far: the deterministic coaching metrics; the
//! handler that stores feedback comes with the session pipeline (issue 3).

pub mod metrics;
