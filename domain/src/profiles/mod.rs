//! Profiles as voxline has seen them in valid tokens: the identity provider owns them, voxline
//! keeps the mapping profile → company (which webhooks need) and the latest email and role.
//!
//! [`ProfileStore`] is the repository, implemented for Postgres (`postgres.rs`) and SQLite
//! (`sqlite.rs`); the free functions here are the stable entry points and delegate to it.

mod postgres;
mod sqlite;

use async_trait::async_trait;

use crate::portable::Param;
use crate::{Db, DbError};

#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub id: String,
    pub company_id: String,
    pub email: Option<String>,
    pub role: String,
}

/// The `profiles` table.
#[async_trait]
pub trait ProfileStore: Send + Sync {
    /// See [`upsert_seen`].
    async fn upsert_seen(&self, p: &Profile) -> Result<bool, DbError>;
    /// The profile, whichever company it belongs to.
    async fn get(&self, id: &str) -> Result<Option<Profile>, DbError>;
    /// The profile when it belongs to `company` (its own tenant's view).
    async fn get_in(&self, company: &str, id: &str) -> Result<Option<Profile>, DbError>;
}

/// Creates the profile on first sight and refreshes its email and role. A token naming a
/// profile that already belongs to another company does not move it: false is returned and
/// the stored company stays (the caller refuses such a token).
pub async fn upsert_seen(db: &Db, p: &Profile) -> Result<bool, DbError> {
    db.profiles().upsert_seen(p).await
}

pub async fn get(db: &Db, id: &str) -> Result<Option<Profile>, DbError> {
    db.profiles().get(id).await
}

/// The profile when it belongs to `company` (its own tenant's view).
pub async fn get_in(db: &Db, company: &str, id: &str) -> Result<Option<Profile>, DbError> {
    db.profiles().get_in(company, id).await
}

// `$n` parameters: SQLite reads them by position too, so these run on both databases.
const SELECT_BY_ID: &str = "SELECT id, company_id, email, role FROM profiles WHERE id = $1";
const SELECT_IN_COMPANY: &str =
    "SELECT id, company_id, email, role FROM profiles WHERE company_id = $1 AND id = $2";

/// The profile as its token names it (`$1`–`$4`: id, company, email, role), seen at `now`
/// (`$5`), unless it belongs to another company; returns the stored company when it kept it.
fn upsert_seen_sql(now: &str) -> String {
    format!(
        "INSERT INTO profiles (id, company_id, email, role, created_at, updated_at)
         VALUES ($1, $2, $3, $4, {now}, {now})
         ON CONFLICT (id) DO UPDATE SET email = excluded.email, role = excluded.role,
             updated_at = excluded.updated_at
           WHERE profiles.company_id = excluded.company_id
         RETURNING company_id"
    )
}

/// The parameters of [`upsert_seen_sql`].
fn upsert_seen_params(p: &Profile) -> [Param<'_>; 5] {
    [
        (&p.id).into(),
        (&p.company_id).into(),
        (&p.email).into(),
        (&p.role).into(),
        Param::Now,
    ]
}

/// Whether the upsert kept `p` in its company: the statement returns the stored company only
/// when it is `p`'s (a profile of another company is left alone and returns nothing).
fn kept_company(stored: Option<String>, p: &Profile) -> bool {
    stored.unwrap_or_default() == p.company_id
}

/// id, company, email and role: a row of [`SELECT_BY_ID`] or [`SELECT_IN_COMPANY`].
type ProfileColumns = (String, String, Option<String>, String);

fn profile((id, company_id, email, role): ProfileColumns) -> Profile {
    Profile {
        id,
        company_id,
        email,
        role,
    }
}
