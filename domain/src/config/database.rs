//! Where voxline keeps its rows (SQLite by default, or Postgres) and its shared Redis.

use serde::{Deserialize, Serialize};

use super::Settings;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DatabaseSettings {
    pub url: String,
    pub max_connections: u32,
    pub schema: String,
    /// Postgres: the password of the service's role `voxline_app` (empty = none, as with
    /// trust or peer authentication). The URL's own role runs the migrations.
    #[serde(default)]
    pub app_password: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct UrlSetting {
    pub url: String,
}

impl Settings {
    /// The database URL in force: the configured one, or the embedded SQLite file.
    pub fn database_url(&self) -> String {
        if self.database.url.trim().is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("voxline.db").display()
            )
        } else {
            self.database.url.clone()
        }
    }

    pub fn is_postgres(&self) -> bool {
        let url = self.database_url();
        url.starts_with("postgres://") || url.starts_with("postgresql://")
    }
}
