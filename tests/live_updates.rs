//! Live updates through Redis: with `redis.url` set on Postgres, every status change is
//! published on the deployment's Redis channel after its commit, and each API process's
//! status feed listens there (not on a Postgres LISTEN connection), so SSE streams hear
//! workers in other processes.

mod support;

use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::api::{session_events, submit_session};
use support::{
    Backend, TestDb, eventually, redis_url, service_missing, start_api, token, transcript_session,
};
use voxline_api::auth::Role;
use voxline_domain::Db;
use voxline_domain::db::Scope;
use voxline_domain::events::{SessionEvent, StatusFeed};
use voxline_domain::sessions;

/// A Postgres deployment with Redis configured, or None (after saying why) when a service is
/// missing.
async fn with_redis() -> Option<TestDb> {
    if let Err(e) = voxline_domain::redis::ping(&redis_url(), Duration::from_secs(3)).await {
        service_missing("Redis", &e);
        return None;
    }
    let layer = format!("[redis]\nurl = \"{}\"\n", redis_url());
    TestDb::new(Backend::Postgres, &[&layer]).await
}

fn channel(t: &TestDb) -> String {
    let Db::Postgres(pg) = &t.db else {
        unreachable!("Redis fan-out is a Postgres deployment's")
    };
    let fanout = pg
        .fanout
        .as_ref()
        .expect("redis.url set: fan-out configured");
    fanout.channel().to_string()
}

/// Subscribes to `channel` and returns the stream of its payloads as JSON.
async fn listen_on_redis(channel: &str) -> Pin<Box<dyn Stream<Item = Value> + Send>> {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut pubsub = client.get_async_pubsub().await.expect("pubsub");
    pubsub.subscribe(channel).await.expect("subscribe");
    Box::pin(
        pubsub
            .into_on_message()
            .filter_map(|m| async move { serde_json::from_slice(m.get_payload_bytes()).ok() }),
    )
}

async fn subscribers(channel: &str) -> i64 {
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let (_, n): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut conn)
        .await
        .expect("numsub");
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_changes_are_published_to_redis_and_the_feed_hears_redis() {
    let Some(t) = with_redis().await else {
        return;
    };
    let channel = channel(&t);
    let mut heard = listen_on_redis(&channel).await;

    // The feed subscribes to the Redis channel.
    let feed = StatusFeed::start(&t.db);
    let mut updates = feed.subscribe();
    eventually("the feed subscribes", Duration::from_secs(10), || {
        let channel = channel.clone();
        async move { subscribers(&channel).await >= 2 }
    })
    .await;
    // A message that exists only in Redis reaches the feed: it reads Redis, not a LISTEN.
    let only_in_redis = SessionEvent {
        company_id: "acme".into(),
        session_id: "s-from-redis".into(),
        status: "analyzing".into(),
        error: None,
    };
    let client = redis::Client::open(redis_url()).expect("redis url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: i64 = redis::cmd("PUBLISH")
        .arg(&channel)
        .arg(only_in_redis.payload())
        .query_async(&mut conn)
        .await
        .expect("publish");
    let got = tokio::time::timeout(Duration::from_secs(10), updates.recv())
        .await
        .expect("the feed hears redis")
        .expect("event");
    assert_eq!(got, only_in_redis);
    let echoed = heard.next().await.expect("the test's own copy");
    assert_eq!(echoed["session_id"], "s-from-redis");

    // A committed status change is published on the channel.
    let mut tx = t.db.begin(Scope::Company("acme")).await.expect("begin");
    let session = transcript_session("s1", "acme", "ann", "t");
    sessions::insert(&mut tx, &session, Some(&json!([])))
        .await
        .expect("insert");
    tx.commit().await.expect("commit");
    sessions::set_status(&t.db, "acme", "s1", "failed", Some("provider said no"))
        .await
        .expect("status");
    let published = tokio::time::timeout(Duration::from_secs(10), heard.next())
        .await
        .expect("published")
        .expect("message");
    assert_eq!(
        published,
        json!({"company_id": "acme", "session_id": "s1", "status": "failed", "error": "provider said no"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sse_stream_hears_a_worker_process_through_redis() {
    let Some(t) = with_redis().await else {
        return;
    };
    let channel = channel(&t);
    let mut heard = listen_on_redis(&channel).await;
    let base = start_api(&t).await;
    let auth = token("acme", "ann", Role::Member, 600);
    let call = json!({
        "title": "Discovery call", "kind": "sales",
        "transcript": [
            { "speaker": "partner", "start": 0.0, "end": 3.0, "text": "Thanks for calling." },
            { "speaker": "user", "start": 3.5, "end": 8.0, "text": "What matters most to you?" }
        ]
    });
    let id = submit_session(&base, &auth, &call, None).await;
    let mut stream = session_events(&base, &id, Some(&auth)).await;
    assert_eq!(stream.status(), StatusCode::OK);

    // The worker is another process, told only the Redis URL beside the database.
    let redis = redis_url();
    let _worker = t.spawn_voxline(
        &["worker", "--queues", "analysis"],
        &[("VOXLINE_REDIS_URL", redis.as_str())],
    );
    let mut text = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(chunk)) = stream.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
    })
    .await;
    let statuses: Vec<String> = text
        .split("\n\n")
        .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
        .filter_map(|data| serde_json::from_str::<Value>(data).ok())
        .filter_map(|event| event["status"].as_str().map(str::to_string))
        .collect();
    assert_eq!(
        statuses.first().map(String::as_str),
        Some("queued"),
        "{text}"
    );
    assert_eq!(statuses.last().map(String::as_str), Some("ready"), "{text}");

    // The worker process published its changes on the deployment's Redis channel.
    let mut published: Vec<Value> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !published.iter().any(|e| e["status"] == "ready") {
        match tokio::time::timeout_at(deadline, heard.next()).await {
            Ok(Some(event)) => published.push(event),
            _ => panic!("ready was not published on redis: {published:?}"),
        }
    }
    assert!(published.iter().all(|e| e["session_id"] == id.as_str()));
    assert!(
        published.iter().any(|e| e["status"] == "analyzing"),
        "{published:?}"
    );
}
