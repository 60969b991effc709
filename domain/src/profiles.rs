//! Profiles as voxline has seen them in valid tokens: the identity provider owns them, voxline
//! keeps the mapping profile → company (which webhooks need) and the latest email and role.

use chrono::Utc;
use sqlx::Row;

use crate::db::Scope;
use crate::{Db, DbError};

#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub id: String,
    pub company_id: String,
    pub email: Option<String>,
    pub role: String,
}

/// Creates the profile on first sight and refreshes its email and role. A token naming a
/// profile that already belongs to another company does not move it: false is returned and
/// the stored company stays (the caller refuses such a token).
pub async fn upsert_seen(db: &Db, p: &Profile) -> Result<bool, DbError> {
    let company: String = match db {
        Db::Postgres(pg) => {
            // Platform: the profile may already belong to another company, which this has to
            // see to refuse the move (a tenant-scoped upsert would fail on the hidden row).
            let mut tx = pg.begin_scoped(Scope::Platform).await?;
            let company = sqlx::query_scalar(
                "INSERT INTO profiles (id, company_id, email, role) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (id) DO UPDATE SET email = EXCLUDED.email, role = EXCLUDED.role,
                     updated_at = now()
                   WHERE profiles.company_id = EXCLUDED.company_id
                 RETURNING company_id",
            )
            .bind(&p.id)
            .bind(&p.company_id)
            .bind(&p.email)
            .bind(&p.role)
            .fetch_optional(&mut *tx)
            .await?;
            tx.commit().await?;
            company
        }
        Db::Sqlite(lite) => {
            let now = Utc::now().timestamp_micros();
            sqlx::query_scalar(
                "INSERT INTO profiles (id, company_id, email, role, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                 ON CONFLICT (id) DO UPDATE SET email = excluded.email, role = excluded.role,
                     updated_at = excluded.updated_at
                   WHERE profiles.company_id = excluded.company_id
                 RETURNING company_id",
            )
            .bind(&p.id)
            .bind(&p.company_id)
            .bind(&p.email)
            .bind(&p.role)
            .bind(now)
            .fetch_optional(&lite.pool)
            .await?
        }
    }
    .unwrap_or_default();
    Ok(company == p.company_id)
}

pub async fn get(db: &Db, id: &str) -> Result<Option<Profile>, DbError> {
    const SQL_PG: &str = "SELECT id, company_id, email, role FROM profiles WHERE id = $1";
    const SQL_LITE: &str = "SELECT id, company_id, email, role FROM profiles WHERE id = ?";
    Ok(match db {
        Db::Postgres(pg) => {
            // Platform: webhooks learn a profile's company from this row.
            let mut tx = pg.begin_scoped(Scope::Platform).await?;
            sqlx::query(SQL_PG)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| profile(&r))
                .transpose()?
        }
        Db::Sqlite(lite) => sqlx::query(SQL_LITE)
            .bind(id)
            .fetch_optional(&lite.pool)
            .await?
            .map(|r| profile(&r))
            .transpose()?,
    })
}

/// The profile when it belongs to `company` (its own tenant's view).
pub async fn get_in(db: &Db, company: &str, id: &str) -> Result<Option<Profile>, DbError> {
    // `$n` parameters: SQLite reads them by position too.
    const SQL: &str =
        "SELECT id, company_id, email, role FROM profiles WHERE company_id = $1 AND id = $2";
    Ok(match db {
        Db::Postgres(pg) => {
            let mut tx = pg.begin_scoped(Scope::Company(company)).await?;
            sqlx::query(SQL)
                .bind(company)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| profile(&r))
                .transpose()?
        }
        Db::Sqlite(lite) => sqlx::query(SQL)
            .bind(company)
            .bind(id)
            .fetch_optional(&lite.pool)
            .await?
            .map(|r| profile(&r))
            .transpose()?,
    })
}

/// One row of `profiles`, from either database.
fn profile<'r, R>(r: &'r R) -> Result<Profile, sqlx::Error>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    &'r str: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Profile {
        id: r.try_get("id")?,
        company_id: r.try_get("company_id")?,
        email: r.try_get("email")?,
        role: r.try_get("role")?,
    })
}
