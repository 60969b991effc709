//! Which failures mean "the database cannot be reached right now" (503, try again shortly) or
//! "the request carried text the database cannot store" (422) rather than "the operation
//! failed" (500): the one place that decides it.

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
    sqlx_cause(cause).is_some_and(is_unavailable)
}

/// Whether the cause is Postgres refusing text it cannot store: a NUL character in a text
/// value (SQLSTATE 22021 `character_not_in_repertoire`) or `\u0000` in JSON (22P05
/// `untranslatable_character`). Those come only from what a request carried.
pub(super) fn cause_is_unstorable_text(cause: &dyn Any) -> bool {
    let Some(sqlx::Error::Database(db)) = sqlx_cause(cause) else {
        return false;
    };
    matches!(db.code().as_deref(), Some("22021" | "22P05"))
}

/// The first `sqlx::Error` in the cause's source chain, through the error types handlers pass.
fn sqlx_cause(cause: &dyn Any) -> Option<&sqlx::Error> {
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
        return None;
    };
    chain(error).find_map(|e| e.downcast_ref::<sqlx::Error>())
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

    /// A database error with a given SQLSTATE, as Postgres would report it.
    #[derive(Debug)]
    struct Refused(&'static str);

    impl std::fmt::Display for Refused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl StdError for Refused {}

    impl sqlx::error::DatabaseError for Refused {
        fn message(&self) -> &str {
            "refused"
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn StdError + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn StdError + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn StdError + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    #[test]
    fn text_the_database_cannot_store_is_the_callers() {
        let refused = |code| sqlx::Error::Database(Box::new(Refused(code)));
        assert!(cause_is_unstorable_text(&refused("22021")));
        assert!(cause_is_unstorable_text(&DbError::Sqlx(refused("22P05"))));
        assert!(cause_is_unstorable_text(&JobError::from(refused("22021"))));
        // A unique violation, or any other statement failure, stays ours.
        assert!(!cause_is_unstorable_text(&refused("23505")));
        assert!(!cause_is_unstorable_text(&sqlx::Error::RowNotFound));
        assert!(!cause_is_unstorable_text(&"text"));
        assert!(!cause_is_unavailable(&refused("22021")));
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
