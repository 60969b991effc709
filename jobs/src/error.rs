use crate::model::JobId;
use crate::state::JobState;

/// Errors from the job engine's storage and operator actions.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Db(#[from] voxline_domain::DbError),
    #[error("job {0} does not exist")]
    NotFound(JobId),
    #[error("job {id} is {state}; only {allowed} jobs can be {action}")]
    WrongState {
        id: JobId,
        state: JobState,
        allowed: &'static str,
        action: &'static str,
    },
    #[error("job payload: {0}")]
    Payload(#[from] serde_json::Error),
    #[error("stored job is corrupt: {0}")]
    Corrupt(String),
    /// A transaction of the other database was handed to this store (a wiring bug).
    #[error("a {given} transaction was passed to the {store} job store")]
    WrongDatabase {
        given: &'static str,
        store: &'static str,
    },
}

impl From<sqlx::Error> for JobError {
    fn from(e: sqlx::Error) -> Self {
        JobError::Db(voxline_domain::DbError::Sqlx(e))
    }
}
