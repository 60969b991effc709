//! Operators over HTTP: the `/api/admin` routes, their auth, audit records, `/metrics`,
//! the OpenAPI document and the pages, against the real router on both databases.

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use support::api::text_of;
use support::{Backend, TestDb, start_api, token};
use voxline_api::auth::Role;
use voxline_domain::audit;
use voxline_domain::db::Scope;
use voxline_jobs::DbJobs;
use voxline_jobs::{Handlers, JobId, NewJob, Runner};
use voxline_workers::diag;

fn operator() -> String {
    token("platform", "op-ann", Role::Operator, 600)
}

async fn call(method: &str, url: &str, token: Option<&str>) -> (StatusCode, Value) {
    let client = reqwest::Client::new();
    let method = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
    let mut request = client.request(method, url);
    if let Some(t) = token {
        request = request.bearer_auth(t);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// `method path` (under `base`) as the operator.
async fn as_operator(method: &str, base: &str, path: &str) -> (StatusCode, Value) {
    call(method, &format!("{base}{path}"), Some(&operator())).await
}

/// A dead job (permanent failure) on `queue`, made without workers.
async fn dead_job(t: &TestDb, queue: &str, payload: Value) -> JobId {
    let job = NewJob::new(queue, "mail.send", payload);
    t.dead_job(job, "550 <b>mailbox</b> unavailable").await
}

on_both_databases!(admin_routes_need_an_operator_token);
async fn admin_routes_need_an_operator_token(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let url = format!("{base}/api/admin/queues");

    let (status, body) = call("GET", &url, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "unauthorized");
    assert_eq!(body["error"]["field"], "Authorization");

    let forged = voxline_api::auth::Keys::hs256("another-secret-another-secret-another-1")
        .mint(&voxline_api::auth::Claims {
            sub: "x".into(),
            company_id: "c".into(),
            role: Role::Operator,
            email: None,
            iat: 0,
            exp: chrono::Utc::now().timestamp() + 600,
        })
        .unwrap();
    assert_eq!(
        call("GET", &url, Some(&forged)).await.0,
        StatusCode::UNAUTHORIZED
    );

    let (status, body) = call("GET", &url, Some(&token("c", "p", Role::Operator, -3600))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["message"], "token expired");

    let (status, body) = call("GET", &url, Some(&token("c", "p", Role::Admin, 600))).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(body["error"]["code"], "forbidden");

    assert_eq!(call("GET", &url, Some(&operator())).await.0, StatusCode::OK);
}

on_both_databases!(an_operator_inspects_and_acts_on_dead_letters);
async fn an_operator_inspects_and_acts_on_dead_letters(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let first = dead_job(
        &t,
        "email",
        json!({ "company_id": "acme", "to_email": "ann@example.com" }),
    )
    .await;
    let second = dead_job(&t, "email", json!({ "company_id": "acme" })).await;
    let waiting = t
        .enqueue(NewJob::new("email", "mail.send", json!({})))
        .await;

    let (status, q) = as_operator("GET", &base, "/api/admin/queues").await;
    assert_eq!(status, StatusCode::OK);
    let email = q["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == "email")
        .unwrap()
        .clone();
    assert_eq!(email["counts"]["dead"], 2);
    assert_eq!(email["counts"]["available"], 1);
    assert_eq!(email["failed_last_5m"], 2);
    assert_eq!(email["done_last_5m"], 0);
    assert!(email["oldest_available_age_ms"].as_i64().is_some());

    let dead_page = "/api/admin/jobs?queue=email&state=dead&limit=1";
    let (_, list) = as_operator("GET", &base, dead_page).await;
    assert_eq!(list["jobs"].as_array().unwrap().len(), 1);
    assert_eq!(list["jobs"][0]["id"], second.0);
    assert_eq!(list["jobs"][0]["company_id"], "acme");
    assert_eq!(
        list["jobs"][0]["last_error"],
        "550 <b>mailbox</b> unavailable"
    );
    let cursor = list["next_cursor"].as_i64().expect("a next page");
    let (_, page2) = as_operator("GET", &base, &format!("{dead_page}&cursor={cursor}")).await;
    assert_eq!(page2["jobs"][0]["id"], first.0);

    for (method, path, key, expected) in [
        ("GET", "/api/admin/jobs?limit=many", "code", "invalid_query"),
        ("POST", "/api/admin/jobs/abc/retry", "field", "path"),
        ("GET", "/api/admin/jobs?state=failed", "field", "state"),
    ] {
        let (status, body) = as_operator(method, &base, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method} {path}");
        assert_eq!(body["error"][key], expected, "{method} {path}");
    }

    let (_, detail) = as_operator("GET", &base, &format!("/api/admin/jobs/{first}")).await;
    assert_eq!(
        detail["payload"],
        json!({ "company_id": "acme", "to_email": "[redacted]" })
    );
    assert_eq!(detail["errors"][0]["attempt"], 1);
    assert_eq!(
        detail["errors"][0]["error"],
        "550 <b>mailbox</b> unavailable"
    );

    let retry_first = format!("/api/admin/jobs/{first}/retry");
    let (status, retried) = as_operator("POST", &base, &retry_first).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(retried["state"], "available");
    assert_eq!(retried["attempt"], 0);
    let (status, conflict) = as_operator("POST", &base, &retry_first).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(
        conflict["error"]["message"],
        format!("job {first} is available; only dead or retrying jobs can be retried")
    );

    let discard_waiting = format!("/api/admin/jobs/{waiting}/discard");
    let (status, discarded) = as_operator("POST", &base, &discard_waiting).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(discarded["state"], "cancelled");
    let (status, _) = as_operator("POST", &base, &discard_waiting).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = as_operator("POST", &base, "/api/admin/jobs/999999/retry").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, bulk) = as_operator("POST", &base, "/api/admin/queues/email/retry-dead").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bulk["retried"], json!([second.0]));

    let (status, page) = as_operator("GET", &base, "/api/admin/audit?actor=op-ann&limit=2").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    assert_eq!(page["entries"][0]["action"], "queue.retry_dead");
    let cursor = page["next_cursor"].as_i64().expect("a next page");
    let rest_of_audit = format!("/api/admin/audit?actor=op-ann&cursor={cursor}");
    let (_, rest) = as_operator("GET", &base, &rest_of_audit).await;
    assert_eq!(rest["entries"].as_array().unwrap().len(), 1);
    assert_eq!(rest["entries"][0]["action"], "job.retry");
    let (_, only) = as_operator("GET", &base, "/api/admin/audit?action=job.discard").await;
    assert_eq!(only["entries"].as_array().unwrap().len(), 1);
    let member = token("acme", "m", Role::Member, 600);
    assert_eq!(
        call("GET", &format!("{base}/api/admin/audit"), Some(&member))
            .await
            .0,
        StatusCode::FORBIDDEN
    );

    let records = audit::recent(&t.db, None, 10).await.unwrap();
    let actions: Vec<(String, String, String)> = records
        .iter()
        .map(|r| (r.action.clone(), r.target.clone(), r.actor.clone()))
        .collect();
    let expected = |a: &str, t: String| (a.to_string(), t, "op-ann".to_string());
    assert_eq!(
        actions,
        vec![
            expected("queue.retry_dead", "queue:email".into()),
            expected("job.discard", format!("job:{waiting}")),
            expected("job.retry", format!("job:{first}")),
        ]
    );
}

on_both_databases!(the_audit_log_refuses_updates_and_deletes);
async fn the_audit_log_refuses_updates_and_deletes(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let entry = audit::AuditEntry {
        actor: "op",
        actor_role: "operator",
        company_id: None,
        action: "job.retry",
        target: "job:1",
        details: json!({}),
    };
    audit::append(&t.db, &entry).await.unwrap();
    for sql in [
        "UPDATE audit_log SET actor = 'someone else'",
        "DELETE FROM audit_log",
    ] {
        // Through the service's own connection. On Postgres in platform scope, so row-level
        // security hides no row from the statement: it must be refused, not match nothing.
        // The service's role has no UPDATE or DELETE grant on the log (migration 0007), which
        // refuses it before the trigger could; either refusal is the protection required.
        let refused = match &t.db {
            voxline_domain::Db::Postgres(p) => {
                let mut tx = p.begin_scoped(Scope::Platform).await.unwrap();
                sqlx::query(sql).execute(&mut *tx).await.map(drop)
            }
            voxline_domain::Db::Sqlite(l) => sqlx::query(sql).execute(&l.pool).await.map(drop),
        };
        let error = refused
            .expect_err("the audit log must be append-only")
            .to_string();
        assert!(
            error.contains("audit_log is append-only")
                || error.contains("permission denied for table audit_log"),
            "{error}"
        );
        if backend == Backend::Postgres {
            // The owner (a superuser: every grant, no row-level security) is refused by the
            // trigger alone.
            let error = sqlx::query(sql)
                .execute(t.owner())
                .await
                .expect_err("the audit log must be append-only for its owner too")
                .to_string();
            assert!(error.contains("audit_log is append-only"), "{error}");
        }
    }
    assert_eq!(audit::recent(&t.db, None, 10).await.unwrap()[0].actor, "op");
}

on_both_databases!(metrics_report_queues_jobs_and_requests);
async fn metrics_report_queues_jobs_and_requests(backend: Backend) {
    let Some(t) = TestDb::new(backend, &["[engine]\npoll_interval_ms = 100\n"]).await else {
        return;
    };
    let base = start_api(&t).await;
    // A queue name of this test's own: the recorder is shared by every test in this binary.
    let queue = format!("m{}", rand::random::<u32>());
    let client = t.client();
    for _ in 0..3 {
        client
            .enqueue_now(&NewJob::new(&queue, diag::NOOP, json!({})))
            .await
            .unwrap();
    }
    client
        .enqueue_now(&NewJob::new(
            &queue,
            diag::FAIL,
            json!({ "permanent": true }),
        ))
        .await
        .unwrap();
    let workers = Runner::new(
        t.db.clone(),
        t.settings.clone(),
        diag::register(Handlers::new()),
    )
    .queues(vec![queue.clone()])
    .start();
    support::eventually("jobs finished", Duration::from_secs(20), || async {
        !t.db.jobs().has_unfinished(&queue).await.unwrap()
    })
    .await;
    workers.shutdown().await;
    let (status, _) = as_operator("GET", &base, "/api/admin/queues").await;
    assert_eq!(status, StatusCode::OK);

    let text = text_of(&format!("{base}/metrics")).await;
    let has = |line: &str| text.lines().any(|l| l == line);
    assert!(
        has(&format!(
            "voxline_jobs{{queue=\"{queue}\",state=\"done\"}} 3"
        )),
        "{text}"
    );
    assert!(has(&format!(
        "voxline_jobs{{queue=\"{queue}\",state=\"dead\"}} 1"
    )));
    assert!(has(&format!("voxline_dead_letters{{queue=\"{queue}\"}} 1")));
    assert!(has(&format!(
        "voxline_oldest_available_age_seconds{{queue=\"{queue}\"}} 0"
    )));
    assert!(has(&format!(
        "voxline_job_attempts_total{{queue=\"{queue}\",outcome=\"done\"}} 3"
    )));
    assert!(has(&format!(
        "voxline_job_attempts_total{{queue=\"{queue}\",outcome=\"dead\"}} 1"
    )));
    assert!(has(&format!(
        "voxline_job_duration_seconds_count{{queue=\"{queue}\",outcome=\"done\"}} 3"
    )));
    assert!(text.contains(&format!(
        "voxline_job_duration_seconds_bucket{{queue=\"{queue}\",outcome=\"done\",le=\"0.001\"}}"
    )));
    assert!(
        text.lines().any(
            |l| l.starts_with("voxline_http_request_duration_seconds_count{")
                && l.contains("route=\"/api/admin/queues\"")
                && l.contains("status=\"200\"")
        ),
        "{text}"
    );
}

#[tokio::test]
async fn the_openapi_document_covers_every_api_route_and_its_refs_resolve() {
    let Some(t) = TestDb::new(Backend::Sqlite, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let text = text_of(&format!("{base}/api/openapi.json")).await;
    let parsed = oas3::from_json(&text).expect("the document is valid OpenAPI 3.1");
    assert_eq!(parsed.info.title, "voxline");
    let spec: Value = reqwest::get(format!("{base}/api/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());
    let paths = spec["paths"].as_object().unwrap();
    for expected in [
        "/healthz",
        "/readyz",
        "/api/admin/queues",
        "/api/admin/jobs",
        "/api/admin/jobs/{id}",
        "/api/admin/jobs/{id}/retry",
        "/api/admin/jobs/{id}/discard",
        "/api/admin/queues/{queue}/retry-dead",
        "/api/admin/audit",
        "/api/notifications/preferences",
    ] {
        assert!(
            paths.contains_key(expected),
            "{expected} missing from the spec"
        );
    }
    // Every documented operation is served (not 404/405) and declares its responses.
    let op = operator();
    for (path, item) in paths {
        for (method, operation) in item.as_object().unwrap() {
            assert!(
                operation["responses"]
                    .as_object()
                    .is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
            let url = format!(
                "{base}{}",
                path.replace("{id}", "1").replace("{queue}", "email")
            );
            let (status, body) = call(&method.to_uppercase(), &url, Some(&op)).await;
            // The router's fallback says "no_route"; a handler's "no such job" says "not_found".
            let unrouted = status == StatusCode::METHOD_NOT_ALLOWED
                || (status == StatusCode::NOT_FOUND && body["error"]["code"] == "no_route");
            assert!(
                !unrouted,
                "{method} {path} is documented but not served: {status}"
            );
        }
    }
    // Every $ref points at a schema that exists.
    let schemas = spec["components"]["schemas"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut refs = Vec::new();
    collect_refs(&spec, &mut refs);
    assert!(!refs.is_empty());
    for r in refs {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected ref {r}"));
        assert!(schemas.contains_key(name), "dangling $ref {r}");
    }
}

fn collect_refs(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.push(v.as_str().unwrap_or_default().to_string());
                } else {
                    collect_refs(v, out);
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect_refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn the_docs_and_admin_pages_are_served() {
    let Some(t) = TestDb::new(Backend::Sqlite, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let (status, body) = call("GET", &format!("{base}/api/nothing-here"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "no_route");
    let docs = reqwest::get(format!("{base}/docs")).await.unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("/api/openapi.json"));
    let admin = reqwest::get(format!("{base}/admin")).await.unwrap();
    assert_eq!(admin.status(), 200);
    let csp = admin.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "no inline code runs: {csp}");
    let html = admin.text().await.unwrap();
    assert!(html.contains("Operator token"), "{html}");
    assert!(
        !html.contains("<style>") && !html.contains("<script>"),
        "no inline code"
    );
    for (asset, kind) in [("admin.js", "text/javascript"), ("admin.css", "text/css")] {
        let response = reqwest::get(format!("{base}/admin/{asset}")).await.unwrap();
        assert_eq!(response.status(), 200, "{asset}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(content_type.starts_with(kind), "{asset}: {content_type}");
        let text = response.text().await.unwrap();
        assert!(
            !text.contains("innerHTML"),
            "values must be written as text"
        );
    }
}

#[tokio::test]
async fn a_cli_token_is_accepted_by_the_server() {
    let Some(t) = TestDb::new(Backend::Sqlite, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let (code, stdout, stderr) = mint_with_the_cli(&t, "operator").await;
    assert_eq!(code, 0, "{stderr}");
    let (status, _) = call(
        "GET",
        &format!("{base}/api/admin/queues"),
        Some(stdout.trim()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (code, _, stderr) = mint_with_the_cli(&t, "king").await;
    assert_eq!(code, 2);
    assert!(stderr.contains("unknown role \"king\""), "{stderr}");
}

/// `voxline token` for profile p1 of acme with `role`: (exit code, stdout, stderr).
async fn mint_with_the_cli(t: &TestDb, role: &str) -> (i32, String, String) {
    t.run_voxline(&[
        "token",
        "--company",
        "acme",
        "--profile",
        "p1",
        "--role",
        role,
    ])
    .await
}
