//! The operator CLI against a real database: configuration errors, `voxline queues`, and
//! `voxline jobs list|show|retry|discard`, in tables and in `--json`.

mod support;

use serde_json::{Value, json};
use support::{Backend, TestDb};
use voxline_jobs::{Completion, JobId, JobState, NewJob, Outcome};
use voxline_jobs::{DbJobs, DeadHooks};

async fn voxline_with_env(env: &[(&str, &str)], args: &[&str]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_voxline"));
    cmd.args(args)
        .env_remove("VOXLINE_CONFIG")
        .env_remove("VOXLINE_DATABASE_URL");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.expect("run voxline");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

#[tokio::test]
async fn an_unsupported_database_scheme_stops_the_process_with_the_key_named() {
    let (code, _, stderr) = voxline_with_env(
        &[("VOXLINE_DATABASE_URL", "mysql://db/voxline")],
        &["migrate"],
    )
    .await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains("configuration error: database.url: unsupported scheme \"mysql\""),
        "stderr: {stderr}"
    );
}

#[tokio::test]
async fn a_badly_typed_environment_value_names_its_key() {
    let (code, _, stderr) =
        voxline_with_env(&[("VOXLINE_ENGINE__RESCUE_AFTER_MS", "soon")], &["migrate"]).await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains("engine.rescue_after_ms"),
        "stderr: {stderr}"
    );
}

#[tokio::test]
async fn a_missing_config_file_is_an_error() {
    let (code, _, stderr) = voxline_with_env(
        &[("VOXLINE_CONFIG", "/nonexistent/voxline.toml")],
        &["migrate"],
    )
    .await;
    assert_eq!(code, 2);
    assert!(
        stderr.contains("VOXLINE_CONFIG: file /nonexistent/voxline.toml does not exist"),
        "stderr: {stderr}"
    );
}

/// Two dead jobs and one available, made without workers.
async fn seed(t: &TestDb) -> (JobId, JobId, JobId) {
    let client = t.client();
    let a = client
        .enqueue_now(&NewJob::new("email", "mail.send", json!({ "to": "a" })))
        .await
        .unwrap()
        .id;
    let b = client
        .enqueue_now(&NewJob::new("email", "mail.send", json!({ "to": "b" })))
        .await
        .unwrap()
        .id;
    let claimed = t.db.jobs().claim("email", "cli-test", 2).await.unwrap();
    assert_eq!(claimed.len(), 2);
    let lease_of = |id| {
        claimed
            .iter()
            .find(|j| j.id == id)
            .map(|j| j.lease())
            .unwrap()
    };
    let dead = |id| Completion {
        lease: lease_of(id),
        outcome: Outcome::Dead {
            error: "550 mailbox unavailable".into(),
        },
    };
    t.db.jobs()
        .complete(&[dead(a), dead(b)], &DeadHooks::new())
        .await
        .unwrap();
    let c = client
        .enqueue_now(&NewJob::new("email", "mail.send", json!({ "to": "c" })))
        .await
        .unwrap()
        .id;
    (a, b, c)
}

on_both_databases!(queues_lists_every_state_by_its_name);
async fn queues_lists_every_state_by_its_name(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    seed(&t).await;
    let (code, stdout, stderr) = t.run_voxline(&["queues", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let v: Value = serde_json::from_str(&stdout).expect("json");
    let queues = v["queues"].as_array().unwrap();
    let names: Vec<&str> = queues
        .iter()
        .map(|q| q["queue"].as_str().unwrap())
        .collect();
    for configured in [
        "analysis",
        "billing",
        "email",
        "maintenance",
        "transcription",
    ] {
        assert!(
            names.contains(&configured),
            "{configured} missing from {names:?}"
        );
    }
    let email = queues.iter().find(|q| q["queue"] == "email").unwrap();
    let mut states: Vec<String> = email["counts"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let mut expected: Vec<String> = JobState::ALL.iter().map(|s| s.to_string()).collect();
    states.sort();
    expected.sort();
    assert_eq!(states, expected, "exactly the closed set of states");
    assert_eq!(email["counts"]["dead"], 2);
    assert_eq!(email["counts"]["available"], 1);

    let (code, table, _) = t.run_voxline(&["queues"]).await;
    assert_eq!(code, 0);
    let header = table.lines().next().unwrap();
    assert!(
        header.starts_with("QUEUE") && header.contains("retrying") && header.contains("dead"),
        "{header}"
    );
    let email_row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("email"))
        .unwrap()
        .split_whitespace()
        .collect();
    // QUEUE scheduled available running retrying done dead cancelled OLDEST
    assert_eq!(&email_row[1..8], ["0", "1", "0", "0", "0", "2", "0"]);
}

on_both_databases!(jobs_are_listed_shown_retried_and_discarded);
async fn jobs_are_listed_shown_retried_and_discarded(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let (a, b, c) = seed(&t).await;

    let (code, stdout, _) = t
        .run_voxline(&[
            "jobs", "list", "--queue", "email", "--state", "dead", "--json",
        ])
        .await;
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&stdout).unwrap();
    let ids: Vec<i64> = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![b.0, a.0], "newest first, dead only");
    assert_eq!(v["jobs"][0]["last_error"], "550 mailbox unavailable");

    let (code, stdout, _) = t.run_voxline(&["jobs", "show", &a.to_string()]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("state:        dead"), "{stdout}");
    assert!(
        stdout.contains("attempt 1 at ") && stdout.contains("550 mailbox unavailable"),
        "{stdout}"
    );

    let (code, stdout, stderr) = t.run_voxline(&["jobs", "retry", &a.to_string()]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains(&format!("job {a} retried")));
    assert_eq!(t.job(a).await.state, JobState::Available);

    let (code, _, stderr) = t.run_voxline(&["jobs", "retry", &c.to_string()]).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!(
            "job {c} is available; only dead or retrying jobs can be retried"
        )),
        "{stderr}"
    );

    let (code, _, _) = t.run_voxline(&["jobs", "discard", &c.to_string()]).await;
    assert_eq!(code, 0);
    assert_eq!(t.job(c).await.state, JobState::Cancelled);

    let (code, stdout, _) = t
        .run_voxline(&[
            "jobs", "retry", "--queue", "email", "--state", "dead", "--json",
        ])
        .await;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&stdout).unwrap()["retried"],
        json!([b.0])
    );

    let (code, _, stderr) = t.run_voxline(&["jobs", "show", "987654"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("job 987654 does not exist"), "{stderr}");

    let (code, _, stderr) = t.run_voxline(&["jobs", "list", "--state", "failed"]).await;
    assert_eq!(code, 2, "clap rejects an unknown state");
    assert!(stderr.contains("unknown job state \"failed\""), "{stderr}");
}
