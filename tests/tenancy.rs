//! Tenancy: another company's data is invisible on every path — the HTTP routes (read, list, update,
//! delete, SSE, feedback, export, erase), the workers, and on Postgres the database itself,
//! which hides other tenants' rows from the service's role even when a query forgets its
//! filter.

mod support;

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sqlx::Row;
use support::api::{submit_session, wait_until_ready};
use support::{Backend, TestDb, start_api, start_workers, transcript_session};
use voxline_api::auth::Role;
use voxline_domain::db::{APP_ROLE, Scope};
use voxline_domain::sessions;
use voxline_jobs::DbJobs;
use voxline_jobs::JobArgs;
use voxline_jobs::payloads::{Analysis, SessionJob};
use voxline_jobs::{JobState, store};

const TITLE_B: &str = "Globex secret negotiation";
const WORDS_B: &str = "our walk-away price is forty two thousand";

fn token(company: &str, profile: &str, role: Role, email: Option<&str>) -> String {
    support::token_with_email(company, profile, role, email)
}

fn call(title: &str, words: &str) -> Value {
    support::two_turn_call(title, "Where do you stand?", words, 9.0)
}

async fn send(
    method: Method,
    url: &str,
    token: &str,
    body: Option<&Value>,
) -> (StatusCode, String) {
    let mut request = reqwest::Client::new()
        .request(method, url)
        .bearer_auth(token);
    if let Some(body) = body {
        request = request.json(body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    (status, response.text().await.unwrap_or_default())
}

async fn submit(base: &str, token: &str, body: &Value, key: Option<&str>) -> String {
    submit_session(base, token, body, key).await
}

async fn wait_ready(base: &str, token: &str, id: &str) {
    wait_until_ready(base, token, id).await
}

/// Asks for the export until the bundle is served (the export job runs in between).
async fn export(base: &str, token: &str) -> Value {
    let url = format!("{base}/api/me/export");
    let (status, _) = send(Method::GET, &url, token, None).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "the first request starts an export"
    );
    let mut bundle = Value::Null;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while bundle.is_null() {
        let (status, body) = send(Method::GET, &url, token, None).await;
        match status {
            StatusCode::OK => bundle = serde_json::from_str(&body).expect("the bundle is JSON"),
            StatusCode::ACCEPTED => {}
            other => panic!("export answered {other}: {body}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the export never became ready"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bundle
}

on_both_databases!(another_company_gets_404_on_every_route_and_never_the_data);
async fn another_company_gets_404_on_every_route_and_never_the_data(backend: Backend) {
    let Some(t) = TestDb::new(backend, &["[engine]\npoll_interval_ms = 50\n"]).await else {
        return;
    };
    let base = start_api(&t).await;
    let workers = start_workers(&t, &["analysis", "maintenance", "email"]);
    let bob = token("globex", "bob", Role::Member, Some("bob@globex.example"));
    let ann = token("acme", "ann", Role::Admin, Some("ann@acme.example"));

    let theirs = submit(&base, &bob, &call(TITLE_B, WORDS_B), Some("key-1")).await;
    wait_ready(&base, &bob, &theirs).await;
    let ours = submit(
        &base,
        &ann,
        &call("Acme weekly", "let us plan the week"),
        None,
    )
    .await;
    wait_ready(&base, &ann, &ours).await;

    // Read, feedback, live events and delete of the other company's session: 404, no data.
    for (method, path) in [
        (Method::GET, format!("/api/sessions/{theirs}")),
        (Method::GET, format!("/api/sessions/{theirs}/feedback")),
        (Method::GET, format!("/api/sessions/{theirs}/events")),
        (Method::DELETE, format!("/api/sessions/{theirs}")),
    ] {
        let (status, body) = send(method.clone(), &format!("{base}{path}"), &ann, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
        assert!(
            !body.contains("Globex") && !body.contains("walk-away"),
            "{path}: {body}"
        );
    }
    // List: only the caller's company.
    let (status, list) = send(Method::GET, &format!("{base}/api/sessions"), &ann, None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(list.contains(&ours) && !list.contains(&theirs), "{list}");
    // The same Idempotency-Key in another company is a new request, not the other's answer.
    let again = submit(
        &base,
        &ann,
        &call("Acme retro", "what went well"),
        Some("key-1"),
    )
    .await;
    assert_ne!(again, theirs);
    // Usage counts the caller's company only (Ann's two sessions, once ready).
    wait_ready(&base, &ann, &again).await;
    let (_, usage) = send(
        Method::GET,
        &format!("{base}/api/billing/usage"),
        &ann,
        None,
    )
    .await;
    let usage: Value = serde_json::from_str(&usage).expect("usage json");
    assert_eq!(usage["company_id"], "acme");
    assert_eq!(usage["month"]["sessions"], 2, "{usage:#}");
    assert_eq!(usage["today"]["sessions"], 2, "{usage:#}");
    // Operator routes are not a company admin's.
    let (status, _) = send(Method::GET, &format!("{base}/api/admin/audit"), &ann, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Update: a token of another company that claims Ann's profile id is refused, and her
    // preferences stay as they were; Bob's own change stays his.
    let prefs = format!("{base}/api/notifications/preferences");
    let namesake = token("globex", "ann", Role::Member, Some("ann@globex.example"));
    let off = json!({"feedback_ready": false});
    let (status, body) = send(Method::PUT, &prefs, &namesake, Some(&off)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(body.contains("profile_company_mismatch"), "{body}");
    let (status, body) = send(Method::PUT, &prefs, &bob, Some(&off)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, mine) = send(Method::GET, &prefs, &ann, None).await;
    let mine: Value = serde_json::from_str(&mine).expect("preferences json");
    let feedback_ready = mine["preferences"]
        .as_array()
        .and_then(|all| all.iter().find(|p| p["kind"] == "feedback_ready"))
        .map(|p| p["enabled"].clone());
    assert_eq!(feedback_ready, Some(json!(true)), "{mine:#}");

    // Export: the caller's data, none of the other company's.
    let bundle = export(&base, &ann).await;
    let text = bundle.to_string();
    assert!(
        text.contains(&ours) && text.contains("let us plan the week"),
        "{bundle:#}"
    );
    assert!(
        !text.contains(&theirs) && !text.contains("walk-away"),
        "{bundle:#}"
    );

    // Erasure of the caller leaves the other company whole.
    let (status, _) = send(Method::DELETE, &format!("{base}/api/me"), &ann, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send(
        Method::GET,
        &format!("{base}/api/sessions/{theirs}/feedback"),
        &bob,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let theirs_bundle = export(&base, &bob).await;
    assert!(theirs_bundle.to_string().contains(WORDS_B));
    workers.shutdown().await;
}

on_both_databases!(a_session_is_deleted_by_its_profile_or_an_admin_only);
async fn a_session_is_deleted_by_its_profile_or_an_admin_only(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let ann = token("acme", "ann", Role::Member, None);
    let carl = token("acme", "carl", Role::Member, None);
    let boss = token("acme", "boss", Role::Admin, None);
    let first = submit(&base, &ann, &call("First", "one"), None).await;
    let second = submit(&base, &ann, &call("Second", "two"), None).await;

    let url = |id: &str| format!("{base}/api/sessions/{id}");
    let (status, body) = send(Method::DELETE, &url(&first), &carl, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another member: {body}");
    let (status, _) = send(Method::GET, &url(&first), &ann, None).await;
    assert_eq!(status, StatusCode::OK, "a refused delete deletes nothing");

    let (status, _) = send(Method::DELETE, &url(&first), &ann, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "its own profile");
    let (status, _) = send(Method::DELETE, &url(&second), &boss, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "the company's admin");
    for id in [&first, &second] {
        let (status, _) = send(Method::GET, &url(id), &ann, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    // Their analysis jobs (no worker ran) were cancelled with them.
    let jobs = t.any_jobs(10).await;
    assert_eq!(jobs.len(), 2);
    assert!(
        jobs.iter().all(|j| j.state == JobState::Cancelled),
        "{jobs:#?}"
    );
    // Both deletions are in the audit log, with who did them and no transcript text.
    let audit = t.audit_entries("session.delete").await;
    let actors: Vec<&str> = audit.iter().map(|a| a.actor.as_str()).collect();
    assert_eq!(actors, ["boss", "ann"]);
    assert!(
        audit
            .iter()
            .all(|a| a.company_id.as_deref() == Some("acme"))
    );
}

on_both_databases!(a_worker_given_another_companys_session_reads_nothing_of_it);
async fn a_worker_given_another_companys_session_reads_nothing_of_it(backend: Backend) {
    let Some(t) = TestDb::new(backend, &["[engine]\npoll_interval_ms = 50\n"]).await else {
        return;
    };
    let segments = json!([{ "speaker": "user", "start": 0.0, "end": 2.0, "text": WORDS_B }]);
    let mut tx = t.db.begin(Scope::Company("globex")).await.expect("begin");
    sessions::insert(
        &mut tx,
        &transcript_session("s-globex", "globex", "bob", TITLE_B),
        Some(&segments),
    )
    .await
    .expect("insert");
    tx.commit().await.expect("commit");
    // A job that claims to be Acme's but names Globex's session (a forged or buggy producer).
    let job = SessionJob {
        session_id: "s-globex".into(),
        company_id: "acme".into(),
        profile_id: Some("ann".into()),
        notify_email: Some("ann@acme.example".into()),
    };
    let id = t.enqueue(Analysis(job).to_job().expect("job")).await;
    let workers = start_workers(&t, &["analysis", "email"]);
    t.wait_state(id, JobState::Done, Duration::from_secs(20))
        .await;
    workers.shutdown().await;

    let session = sessions::get(&t.db, "globex", "s-globex")
        .await
        .expect("get")
        .expect("still there");
    assert_eq!(session.status, "queued", "the worker did not touch it");
    assert!(
        sessions::feedback(&t.db, "globex", "s-globex")
            .await
            .expect("feedback")
            .is_none()
    );
    let mails =
        t.db.jobs()
            .list(&store::JobFilter {
                queue: Some("email".into()),
                limit: 10,
                ..Default::default()
            })
            .await
            .expect("jobs");
    assert!(mails.is_empty(), "nothing about it was mailed: {mails:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_hides_other_tenants_rows_from_an_unfiltered_query() {
    let Some(t) = TestDb::new(Backend::Postgres, &[]).await else {
        return;
    };
    let pg = t.postgres();
    for (company, n) in [("acme", 2), ("globex", 3)] {
        let mut tx = t.db.begin(Scope::Company(company)).await.expect("begin");
        for i in 0..n {
            let id = format!("{company}-{i}");
            sessions::insert(
                &mut tx,
                &transcript_session(&id, company, "p", "t"),
                Some(&json!([])),
            )
            .await
            .expect("insert");
        }
        tx.commit().await.expect("commit");
    }

    // The service's connection is the unprivileged role.
    let me = sqlx::query(
        "SELECT current_user::text AS name, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(&pg.pool)
    .await
    .expect("role");
    assert_eq!(me.get::<String, _>("name"), APP_ROLE);
    assert!(!me.get::<bool, _>("rolsuper") && !me.get::<bool, _>("rolbypassrls"));

    // No WHERE clause: the tenant's rows only, in sessions and the tables that hang off them.
    let mut tx = pg
        .begin_scoped(Scope::Company("acme"))
        .await
        .expect("begin");
    let companies: Vec<String> = sqlx::query_scalar(
        "SELECT company_id FROM sessions UNION ALL SELECT company_id FROM transcripts",
    )
    .fetch_all(&mut *tx)
    .await
    .expect("unfiltered");
    assert_eq!(companies.len(), 4, "{companies:?}");
    assert!(companies.iter().all(|c| c == "acme"), "{companies:?}");
    // Nor can it write a row for another company.
    let forged = sqlx::query(
        "INSERT INTO sessions (id, company_id, profile_id, title, kind, status, source)
         VALUES ('x', 'globex', 'p', 't', 'sales', 'queued', 'transcript')",
    )
    .execute(&mut *tx)
    .await;
    assert!(forged.is_err(), "a row for another company was written");
    drop(tx);

    // Fail closed: no scope set, no rows — and a pooled connection keeps no earlier scope.
    for _ in 0..3 {
        let mut tx = pg
            .begin_scoped(Scope::Company("globex"))
            .await
            .expect("begin");
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
            .fetch_one(&mut *tx)
            .await
            .expect("count");
        assert_eq!(n, 3);
        tx.commit().await.expect("commit");
    }
    let unscoped: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(&pg.pool)
        .await
        .expect("count");
    assert_eq!(unscoped, 0, "a connection without a tenant sees nothing");

    // Every table with a company_id column has row-level security enabled and forced.
    let unprotected: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'company_id'
         WHERE n.nspname = $1 AND c.relkind = 'r'
           AND NOT (c.relrowsecurity AND c.relforcerowsecurity)",
    )
    .bind(&pg.schema)
    .fetch_all(t.owner())
    .await
    .expect("catalog");
    assert!(
        unprotected.is_empty(),
        "tenant tables without forced RLS: {unprotected:?}"
    );

    // The owner (who runs migrations) still sees everything: the rows are really there.
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions")
        .fetch_one(t.owner())
        .await
        .expect("count");
    assert_eq!(all, 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_a_profiles_export_from_other_members_of_its_company() {
    let Some(t) = TestDb::new(Backend::Postgres, &[]).await else {
        return;
    };
    let pg = t.postgres();
    for (id, profile) in [("e-alice", "alice"), ("e-bob", "bob")] {
        let mut tx = t.db.begin(Scope::Company("acme")).await.expect("begin");
        voxline_domain::gdpr::create_export(&mut tx, id, "acme", profile)
            .await
            .expect("export");
        tx.commit().await.expect("commit");
    }
    let visible = |scope: Scope<'static>| async move {
        let mut tx = pg.begin_scoped(scope).await.expect("begin");
        let ids: Vec<String> = sqlx::query_scalar("SELECT id FROM data_exports ORDER BY id")
            .fetch_all(&mut *tx)
            .await
            .expect("unfiltered");
        tx.commit().await.expect("commit");
        ids
    };

    // Acting for alice, a query without any filter finds alice's export and not bob's.
    let alice = Scope::Profile {
        company: "acme",
        profile: "alice",
    };
    assert_eq!(visible(alice).await, ["e-alice"]);
    // The company-wide view (the export worker, retention) still has both, and a pooled
    // connection that served alice a moment ago carries nothing of her into it.
    for _ in 0..3 {
        assert_eq!(visible(Scope::Company("acme")).await, ["e-alice", "e-bob"]);
    }
    // Nor can alice's transaction write an export in bob's name.
    let mut tx = pg.begin_scoped(alice).await.expect("begin");
    let forged = sqlx::query(
        "INSERT INTO data_exports (id, company_id, profile_id, status)
         VALUES ('forged', 'acme', 'bob', 'pending')",
    )
    .execute(&mut *tx)
    .await;
    assert!(forged.is_err(), "an export was written for another profile");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_scopes_carry_any_id_exactly_as_given() {
    let Some(t) = TestDb::new(Backend::Postgres, &[]).await else {
        return;
    };
    let pg = t.postgres();
    // The scope opens with BEGIN in the same simple query, so the ids travel as quoted
    // literals: quotes, backslashes, dollar tags and statement-looking text must arrive as
    // they are and change nothing else.
    let hostile = [
        "o'brien",
        r"back\slash\'",
        "$s$",
        "$s$ , true); SELECT pg_sleep(5); --",
        "$s1$$s$",
        "ünïcødé",
    ];
    for company in hostile {
        for profile in hostile {
            let mut tx = pg
                .begin_scoped(Scope::Profile { company, profile })
                .await
                .expect("begin");
            let (got_company, got_profile): (String, String) = sqlx::query_as(
                "SELECT current_setting('app.company_id'), current_setting('app.profile_id')",
            )
            .fetch_one(&mut *tx)
            .await
            .expect("settings");
            assert_eq!(
                (got_company.as_str(), got_profile.as_str()),
                (company, profile)
            );
            tx.rollback().await.expect("rollback");
        }
    }
    // A NUL cannot be a Postgres text at all: refused before anything is sent.
    assert!(pg.begin_scoped(Scope::Company("a\0b")).await.is_err());
}
