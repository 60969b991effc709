//! Leases (placeholder while the suite is written).
mod support;
