//! The SMTP circuit breaker: while SMTP is down, emails wait without spending their attempts,
//! and the circuit's state is exported as a metric. (Its own test binary: the metric is
//! process-wide.)

mod support;

use std::time::Duration;

use support::{Backend, TestDb, eventually, free_port, metrics_handle};
use voxline_jobs::payloads::{EmailJob, EmailMessage, TrialEnding};
use voxline_jobs::{DbJobs, JobArgs};
use voxline_jobs::{JobState, Runner};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smtp_outage_opens_the_circuit_and_emails_wait_with_their_attempts() {
    let handle = metrics_handle();
    let closed = free_port();
    let layer = format!(
        "[smtp]\nurl = \"smtp://127.0.0.1:{closed}\"\ntimeout_ms = 2000\ncircuit_threshold = 2\ncircuit_cooldown_ms = 60000\n\
         [engine]\npoll_interval_ms = 100\n[queues.email]\nconcurrency = 1\nbackoff_base_ms = 100\nbackoff_cap_ms = 200\nmax_attempts = 3\n"
    );
    let Some(t) = TestDb::new(Backend::Sqlite, &[&layer]).await else {
        return;
    };
    let mut ids = Vec::new();
    for n in 0..4 {
        let email = EmailJob {
            company_id: None,
            profile_id: None,
            to: format!("user{n}@example.com"),
            subject_id: format!("trial:{n}"),
            message: EmailMessage::TrialEnding(TrialEnding {
                plan: "pro".into(),
                trial_end: "2026-12-01".into(),
            }),
        };
        ids.push(t.enqueue(email.to_job().unwrap()).await);
    }
    let handlers = voxline_workers::handlers(&t.db, &t.settings).unwrap();
    let workers = Runner::new(t.db.clone(), t.settings.clone(), handlers)
        .queues(vec!["email".into()])
        .start();
    eventually(
        "every email waits behind the open circuit",
        Duration::from_secs(20),
        || async {
            let mut all = true;
            for id in &ids {
                let job = t.db.jobs().get(*id).await.unwrap().unwrap();
                all &= job.state == JobState::Scheduled;
            }
            all
        },
    )
    .await;
    workers.shutdown().await;

    let mut attempts_spent = 0;
    for id in &ids {
        let job = t.db.jobs().get(*id).await.unwrap().unwrap();
        assert!(
            job.attempt < job.max_attempts,
            "no email may exhaust its attempts during the outage: {job:?}"
        );
        assert!(
            job.run_at > chrono::Utc::now() + chrono::Duration::seconds(30),
            "it waits out the cooldown"
        );
        attempts_spent += job.attempt;
    }
    assert_eq!(
        attempts_spent, 2,
        "only the two sends that opened the circuit count"
    );
    let text = handle.render();
    assert!(
        text.lines()
            .any(|l| l == "voxline_provider_circuit_state{provider=\"smtp\"} 1"),
        "{text}"
    );
}
