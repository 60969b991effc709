//! voxline's bottom layer: typed configuration and the database handle (Postgres or SQLite)
//! that every other crate builds on. Nothing here knows about jobs, HTTP or workers.

pub mod audit;
pub mod billing;
pub mod blobs;
pub mod call_audio;
pub mod config;
pub mod db;
pub mod events;
pub mod gdpr;
pub mod lexicon;
pub mod notifications;
mod portable;
pub mod profiles;
pub mod redis;
pub mod roleplays;
mod scoped_begin;
pub mod secrets;
pub mod sessions;
pub mod speakers;
pub mod trace_context;
pub mod usage;

pub use config::{ConfigError, QueueSettings, Settings};
pub use db::{Db, DbError, DbKind, Tx};
