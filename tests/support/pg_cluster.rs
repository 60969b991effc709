//! A PostgreSQL server of the test's own, which the test may stop, start and restart (the
//! shared server on 5432 must never go down under the other tests).
//!
//! [`PgCluster::start`] runs the machine's `initdb` (the newest `/usr/lib/postgresql/*/bin`, or
//! `VOXLINE_TEST_PG_BIN`) into a fresh data directory under `/var/tmp` with trust
//! authentication, and `pg_ctl start` on a free loopback port (its Unix socket in the data
//! directory). As root, both run as the `postgres` OS user, which PostgreSQL requires. Dropping
//! the cluster stops it (immediate) and deletes the data directory.
//!
//! When no PostgreSQL binaries are found, or the cluster does not start, the test is skipped
//! outside CI and fails in CI ([`super::service_missing`]).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::process::Command;
use voxline_domain::{Db, Settings};

use super::{Backend, TEST_JWT_SECRET, TestDb, free_port, service_missing};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct PgCluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// Run the server's tools as this OS user (`Some("postgres")` when we are root).
    user: Option<&'static str>,
}

impl PgCluster {
    /// A new cluster, initialised and running; `None` (after saying why) when it cannot be had.
    pub async fn start() -> Option<PgCluster> {
        let bin = match find_bin() {
            Ok(bin) => bin,
            Err(e) => {
                service_missing(
                    "a PostgreSQL cluster of the test's own (initdb, pg_ctl)",
                    &e,
                );
                return None;
            }
        };
        let user = is_root().then_some("postgres");
        let data = PathBuf::from(format!(
            "/var/tmp/voxline-pg-{}-{}-{:06x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>() & 0xffffff
        ));
        let mut cluster = PgCluster {
            bin,
            data,
            port: 0,
            user,
        };
        // initdb creates the directory itself (/var/tmp is writable by every user).
        let data = cluster.data.display().to_string();
        let init = cluster
            .run(
                "initdb",
                &[
                    "-D",
                    &data,
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "--no-sync",
                    "--no-instructions",
                    "-E",
                    "UTF8",
                ],
            )
            .await;
        if let Err(e) = init {
            service_missing("a PostgreSQL cluster of the test's own (initdb)", &e);
            return None;
        }
        // A free port can be taken by someone else before the server binds it: try a few.
        let mut last = String::new();
        for _ in 0..3 {
            cluster.port = free_port();
            match cluster.start_again_checked().await {
                Ok(()) => return Some(cluster),
                Err(e) => last = e,
            }
        }
        service_missing(
            "a PostgreSQL cluster of the test's own (pg_ctl start)",
            &last,
        );
        None
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's URL of database `postgres` on this cluster.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Stops the server (fast: open connections are terminated, then it shuts down cleanly).
    pub async fn stop(&self) {
        let data = self.data.display().to_string();
        let stopped = self
            .run("pg_ctl", &["-D", &data, "-m", "fast", "-w", "stop"])
            .await;
        if let Err(e) = stopped {
            panic!("stopping the test's PostgreSQL cluster: {e}");
        }
    }

    /// Starts the stopped server again, on the same port; returns once it accepts connections.
    pub async fn start_again(&self) {
        if let Err(e) = self.start_again_checked().await {
            panic!("starting the test's PostgreSQL cluster: {e}");
        }
    }

    /// Stops and starts the server: every connection to it is broken.
    pub async fn restart(&self) {
        self.stop().await;
        self.start_again().await;
    }

    /// A fresh, migrated voxline database on this cluster (a schema of its own, as the shared
    /// server's [`TestDb::new`] makes), with `layers` over the defaults.
    pub async fn test_db(&self, layers: &[&str]) -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = self.url();
        let schema = format!(
            "c_{}_{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let env = vec![
            (
                "VOXLINE_DATA_DIR".to_string(),
                dir.path().display().to_string(),
            ),
            ("VOXLINE_AUTH_JWT_SECRET".into(), TEST_JWT_SECRET.into()),
            ("VOXLINE_DATABASE_URL".into(), url.clone()),
            ("VOXLINE_DATABASE__SCHEMA".into(), schema.clone()),
        ];
        let own = format!(
            "data_dir = \"{}\"\n[auth]\njwt_secret = \"{TEST_JWT_SECRET}\"\n[database]\n\
             url = \"{url}\"\nschema = \"{schema}\"\nmax_connections = 8\n",
            dir.path().display()
        );
        let mut all: Vec<&str> = layers.to_vec();
        all.push(&own);
        let settings = Settings::from_toml_layers(&all).expect("test settings are valid");
        let db = Db::connect(&settings)
            .await
            .expect("the test's own PostgreSQL cluster accepts connections");
        db.migrate().await.expect("migrations apply");
        let owner = super::owner_pool(&db);
        TestDb {
            backend: Backend::Postgres,
            settings: Arc::new(settings),
            db,
            owner,
            dir,
            env,
        }
    }

    async fn start_again_checked(&self) -> Result<(), String> {
        let data = self.data.display().to_string();
        let log = self.data.join("server.log").display().to_string();
        let options = format!(
            "-p {} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off \
             -c max_connections=200",
            self.port
        );
        self.run(
            "pg_ctl",
            &[
                "-D", &data, "-l", &log, "-o", &options, "-w", "-t", "60", "start",
            ],
        )
        .await
        .map_err(|e| format!("{e}\nserver log:\n{}", self.log_tail()))
    }

    /// The end of the server's log, for failure messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.data.join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Runs one of the server's tools (as `postgres` when we are root) to completion.
    async fn run(&self, tool: &str, args: &[&str]) -> Result<(), String> {
        let mut cmd = self.command(tool, args);
        // pg_ctl's server writes to its log file; nothing may keep these pipes open.
        cmd.stdin(Stdio::null());
        let out = cmd
            .output()
            .await
            .map_err(|e| format!("running {tool}: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{tool} {args:?} exited with {}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    fn command(&self, tool: &str, args: &[&str]) -> Command {
        let program = self.bin.join(tool);
        let mut cmd = match self.user {
            Some(user) => {
                let mut cmd = Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(&program);
                cmd
            }
            None => Command::new(&program),
        };
        cmd.args(args);
        cmd
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Synchronous: Drop cannot await, and this must finish before the directory goes.
        let data = self.data.display().to_string();
        let program = self.bin.join("pg_ctl");
        let mut cmd = match self.user {
            Some(user) => {
                let mut cmd = std::process::Command::new("runuser");
                cmd.args(["-u", user, "--"]).arg(&program);
                cmd
            }
            None => std::process::Command::new(&program),
        };
        let stopped = cmd
            .args(["-D", &data, "-m", "immediate", "-w", "stop"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Err(e) = stopped {
            eprintln!("could not stop the test's PostgreSQL cluster at {data}: {e}");
        }
        if let Err(e) = std::fs::remove_dir_all(&self.data) {
            eprintln!("could not remove the test's PostgreSQL data directory {data}: {e}");
        }
    }
}

/// The directory holding `initdb` and `pg_ctl`: `VOXLINE_TEST_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin`.
fn find_bin() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("VOXLINE_TEST_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if has_tools(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "VOXLINE_TEST_PG_BIN={} has no initdb and pg_ctl",
                dir.display()
            ))
        };
    }
    let root = Path::new("/usr/lib/postgresql");
    let entries =
        std::fs::read_dir(root).map_err(|e| format!("reading {}: {e}", root.display()))?;
    let mut found: Vec<(u32, PathBuf)> = entries
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    found.sort();
    found
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| format!("no {}/*/bin with initdb and pg_ctl", root.display()))
}

fn has_tools(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

fn is_root() -> bool {
    // The effective uid, without a libc binding: /proc/self/status has "Uid: real effective …".
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}
