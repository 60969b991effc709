//! Queue names used across voxline. Each has its own `[queues.NAME]` settings.

pub const TRANSCRIPTION: &str = "transcription";
pub const ANALYSIS: &str = "analysis";
pub const BILLING: &str = "billing";
pub const EMAIL: &str = "email";
pub const MAINTENANCE: &str = "maintenance";
/// Used only by `voxline bench queue`.
pub const BENCH: &str = "bench";

pub const ALL: [&str; 5] = [TRANSCRIPTION, ANALYSIS, BILLING, EMAIL, MAINTENANCE];
