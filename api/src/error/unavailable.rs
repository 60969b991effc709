//! Which failures mean "the database cannot be reached right now" (503, try again shortly)
//! rather than "the operation failed" (500): the one place that decides it.

use std::any::Any;
use std::error::Error as StdError;

use voxline_domain::DbError;
use voxline_domain::billing::QuotaError;
use voxline_domain::db::error_chain as chain;
pub use voxline_domain::db::is_unavailable;
use voxline_jobs::JobError;

/// Whether a cause handed to [`super::ApiError::internal`] is the database being unreachable.
/// The error types handlers pass (`sqlx::Error`, [`DbError`], [`JobError`], [`QuotaError`])
/// are looked through to the first `sqlx::Error` in their source chain, so a new wrapping
/// variant needs no change here; any other cause (a message, a blob store error) is not.
pub(super) fn cause_is_unavailable(cause: &dyn Any) -> bool {
    let error: &(dyn StdError + 'static) = if let Some(e) = cause.downcast_ref::<sqlx::Error>() {
        e
    } else if let Some(e) = cause.downcast_ref::<DbError>() {
        e
    } else if let Some(e) = cause.downcast_ref::<JobError>() {
        e
    } else if let Some(e) = cause.downcast_ref::<QuotaError>() {
        e
    } else if let Some(e) = cause.downcast_ref::<Box<dyn StdError + Send + Sync>>() {
        e.as_ref()
    } else {
        return false;
    };
    chain(error)
        .find_map(|e| e.downcast_ref::<sqlx::Error>())
        .is_some_and(is_unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::from(kind))
    }

    #[test]
    fn connection_failures_are_unavailable() {
        for e in [
            io(std::io::ErrorKind::ConnectionRefused),
            io(std::io::ErrorKind::UnexpectedEof),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
            sqlx::Error::Protocol("unexpected message".into()),
            sqlx::Error::Tls("handshake".into()),
            sqlx::Error::Configuration(Box::new(std::io::Error::other("socket"))),
        ] {
            assert!(is_unavailable(&e), "{e}");
        }
    }

    #[test]
    fn statement_failures_are_not() {
        for e in [
            sqlx::Error::RowNotFound,
            sqlx::Error::ColumnNotFound("x".into()),
            sqlx::Error::Decode("bad".into()),
            sqlx::Error::Configuration("bad url".into()),
        ] {
            assert!(!is_unavailable(&e), "{e}");
        }
    }

    #[test]
    fn wrapped_errors_are_looked_through() {
        let refused = || io(std::io::ErrorKind::ConnectionRefused);
        assert!(cause_is_unavailable(&refused()));
        assert!(cause_is_unavailable(&DbError::Sqlx(refused())));
        assert!(cause_is_unavailable(&JobError::from(refused())));
        assert!(cause_is_unavailable(&QuotaError::Db(DbError::Sqlx(
            sqlx::Error::PoolTimedOut
        ))));
        assert!(!cause_is_unavailable(&JobError::from(
            sqlx::Error::RowNotFound
        )));
        assert!(!cause_is_unavailable(&DbError::Url("x".into())));
        // An I/O error that is not the database's (the blob store, say) is ours: a 500.
        assert!(!cause_is_unavailable(&std::io::Error::other("disk")));
        assert!(!cause_is_unavailable(&"idempotency key vanished"));
    }
}
