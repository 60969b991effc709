//! The API while PostgreSQL is down or has just restarted: requests that need the database
//! answer 503 `database_unavailable` with a `Retry-After` (never 500), and once the server is
//! back the same requests succeed again without restarting voxline. Each test runs a
//! PostgreSQL cluster of its own (`support::pg_cluster`), since stopping the shared one would
//! break every other test.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use support::pg_cluster::PgCluster;
use support::{start_api, token};
use voxline_api::auth::Role;

/// Longer than the pool's wait for a connection (10 s in `domain/src/db.rs`), after which a
/// request answers 503 while the server refuses connections.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const RECOVERY: Duration = Duration::from_secs(30);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("an HTTP client")
}

fn transcript(title: &str) -> Value {
    let answer = "Of course. What would you like to achieve this quarter?";
    support::two_turn_call(title, "Thanks for making time.", answer, 8.0)
}

/// One answer: status, `Retry-After` and the JSON body.
struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
}

impl Answer {
    async fn from(response: reqwest::Response) -> Answer {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = response.json().await.unwrap_or(Value::Null);
        Answer {
            status,
            retry_after,
            body,
        }
    }

    /// The answer of a database that cannot be reached, exactly.
    fn assert_unavailable(&self, what: &str) {
        assert_eq!(
            self.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{what}: {}",
            self.body
        );
        assert_eq!(
            self.body["error"]["code"], "database_unavailable",
            "{what}: {}",
            self.body
        );
        assert!(
            self.body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {}",
            self.body
        );
        let secs: u64 = self
            .retry_after
            .as_deref()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                panic!("{what}: Retry-After in seconds, got {:?}", self.retry_after)
            });
        assert!((1..=30).contains(&secs), "{what}: Retry-After {secs}");
    }
}

async fn list(base: &str, token: &str) -> Answer {
    let response = client()
        .get(format!("{base}/api/sessions"))
        .bearer_auth(token)
        .send()
        .await
        .expect("GET /api/sessions answers");
    Answer::from(response).await
}

async fn submit(base: &str, token: &str, key: &str) -> Answer {
    let response = client()
        .post(format!("{base}/api/sessions"))
        .bearer_auth(token)
        .header("Idempotency-Key", key)
        .json(&transcript(key))
        .send()
        .await
        .expect("POST /api/sessions answers");
    Answer::from(response).await
}

/// Repeats `request` until it answers `ok`; every other answer on the way must be the 503 of
/// an unreachable database. Returns how many 503s came first.
async fn until_ok<F, Fut>(what: &str, ok: StatusCode, mut request: F) -> usize
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Answer>,
{
    let deadline = tokio::time::Instant::now() + RECOVERY;
    let mut refused = 0;
    loop {
        let answer = request().await;
        if answer.status == ok {
            return refused;
        }
        answer.assert_unavailable(what);
        refused += 1;
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: still {} after {RECOVERY:?} ({refused} refusals): {}",
            answer.status,
            answer.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_database_answers_503_and_service_resumes_when_it_is_back() {
    let Some(cluster) = PgCluster::start().await else {
        return;
    };
    let t = cluster.test_db(&[]).await;
    let base = start_api(&t).await;
    let ann = token("acme", "ann", Role::Member, 600);
    let first = submit(&base, &ann, "before-outage").await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    assert_eq!(list(&base, &ann).await.status, StatusCode::OK);

    cluster.stop().await;
    // Concurrently, since each may wait out the pool's connection time-out: a read, a write,
    // a caller seen for the first time (its profile is recorded before anything else), and a
    // retry of the first submission.
    let bob = token("acme", "bob", Role::Member, 600);
    let (read, write, newcomer, retried) = tokio::join!(
        list(&base, &ann),
        submit(&base, &ann, "during-outage"),
        list(&base, &bob),
        submit(&base, &ann, "before-outage"),
    );
    read.assert_unavailable("GET /api/sessions while the database is down");
    write.assert_unavailable("POST /api/sessions while the database is down");
    newcomer.assert_unavailable("a new caller while the database is down");
    retried.assert_unavailable("a retried submission while the database is down");
    // Once more, now that no pooled connection is left from before the stop.
    list(&base, &ann)
        .await
        .assert_unavailable("GET /api/sessions with the pool emptied");
    let ready = client()
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("/readyz answers");
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);

    cluster.start_again().await;
    until_ok(
        "GET /api/sessions after the restart",
        StatusCode::OK,
        || list(&base, &ann),
    )
    .await;
    until_ok("a new caller after the restart", StatusCode::OK, || {
        list(&base, &bob)
    })
    .await;
    until_ok(
        "POST /api/sessions after the restart",
        StatusCode::ACCEPTED,
        || submit(&base, &ann, "after-outage"),
    )
    .await;
    // The submission refused during the outage created nothing; its retry now does, and the
    // retry of the first one gets the first answer (202, the same id).
    let retried = submit(&base, &ann, "during-outage").await;
    assert_eq!(retried.status, StatusCode::ACCEPTED, "{}", retried.body);
    let replay = submit(&base, &ann, "before-outage").await;
    assert_eq!(replay.status, StatusCode::ACCEPTED, "{}", replay.body);
    assert_eq!(replay.body["id"], first.body["id"]);
    let sessions = list(&base, &ann).await;
    assert_eq!(sessions.status, StatusCode::OK);
    let mut titles: Vec<&str> = sessions.body["sessions"]
        .as_array()
        .unwrap_or_else(|| panic!("a page of sessions: {}", sessions.body))
        .iter()
        .filter_map(|s| s["title"].as_str())
        .collect();
    titles.sort();
    assert_eq!(titles, ["after-outage", "before-outage", "during-outage"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_broken_pooled_connections_answer_503_and_are_replaced() {
    let Some(cluster) = PgCluster::start().await else {
        return;
    };
    let t = cluster.test_db(&[]).await;
    let base = start_api(&t).await;
    let ann = token("acme", "ann", Role::Member, 600);
    // Fill the pool with idle connections: several requests at once.
    let warm = futures::future::join_all((0..6).map(|_| list(&base, &ann))).await;
    for answer in &warm {
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }

    // Every pooled connection is now to a server that has gone away.
    cluster.restart().await;
    let refused = until_ok("GET /api/sessions after a restart", StatusCode::OK, || {
        list(&base, &ann)
    })
    .await;
    // At most one refusal per broken connection: each is dropped once it has failed.
    let pool_size = t.settings.database.max_connections as usize;
    assert!(
        refused <= pool_size,
        "{refused} refusals after the restart, more than the pool's {pool_size} connections"
    );
    eprintln!("503s after the restart before the first 200: {refused}");
    // And then it stays good.
    for _ in 0..20 {
        let answer = list(&base, &ann).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
}
