//! A test's own statement inside a transaction of either database, written once: the SQL text
//! runs on both (`$N` placeholders), but each driver's connection is a type of its own, so
//! the statement is expanded once for each. Include it with
//! `#[path = "support/either_tx.rs"] #[macro_use] mod either_tx;`.

/// Evaluates `$body` with `$conn` bound to the connection of `$tx` (a `&mut
/// voxline_domain::Tx`), whichever database the transaction is on.
macro_rules! on_tx_connection {
    ($tx:expr, |$conn:ident| $body:expr) => {
        match $tx {
            voxline_domain::Tx::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
            voxline_domain::Tx::Sqlite { tx, .. } => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}
