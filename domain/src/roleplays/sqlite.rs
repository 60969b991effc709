//! [`RoleplayStore`] and [`RoleplayTxStore`] on SQLite (times as microseconds since the epoch).

use async_trait::async_trait;
use sqlx::{AssertSqlSafe, SqliteConnection};

use super::{NewRoleplay, RoleplayStore, insert_params, insert_sql};
use crate::DbError;
use crate::db::SqliteDb;
use crate::portable;

#[async_trait]
impl RoleplayStore for SqliteDb {
    async fn insert(&self, roleplay: &NewRoleplay<'_>) -> Result<(), DbError> {
        let sql = AssertSqlSafe(insert_sql("$7"));
        portable::execute(&self.pool, sql, &insert_params(roleplay)).await?;
        Ok(())
    }
}

roleplay_tx_store!(SqliteConnection, sqlx::Sqlite);
