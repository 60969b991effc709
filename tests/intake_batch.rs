//! Intake's group commit, on both databases: submissions that arrive together are written in
//! one transaction, yet each is written under its own tenant, counted against its own quota
//! and answered on its own — one that cannot be stored fails alone.

mod support;

use std::collections::HashMap;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::api::{answer, id_of};
use support::{Backend, TestDb, start_api, token};
use voxline_api::auth::Role;
use voxline_domain::audit::{self, AuditFilter};
use voxline_jobs::JobState;

fn call(title: &str, text: &str) -> Value {
    json!({
        "title": title,
        "kind": "sales",
        "transcript": [
            { "speaker": "partner", "start": 0.0, "end": 4.0, "text": "What would it take to switch?" },
            { "speaker": "user", "start": 4.5, "end": 9.0, "text": text }
        ]
    })
}

async fn submit(base: &str, token: &str, body: &Value) -> (StatusCode, Value) {
    let request = reqwest::Client::new()
        .post(format!("{base}/api/sessions"))
        .bearer_auth(token)
        .json(body);
    answer(request).await
}

async fn status_of(base: &str, token: &str, id: &str) -> StatusCode {
    let request = reqwest::Client::new()
        .get(format!("{base}/api/sessions/{id}"))
        .bearer_auth(token);
    answer(request).await.0
}

on_both_databases!(submissions_arriving_together_are_each_written_for_their_own_tenant);
/// 3 companies × 2 profiles, 8 submissions each, all at once.
async fn submissions_arriving_together_are_each_written_for_their_own_tenant(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    let base = start_api(&t).await;
    let tenants: Vec<(String, String)> = (0..3)
        .flat_map(|c| (0..2).map(move |p| (format!("co-{c}"), format!("co-{c}-p{p}"))))
        .collect();
    let tokens: HashMap<&(String, String), String> = tenants
        .iter()
        .map(|tenant| (tenant, token(&tenant.0, &tenant.1, Role::Member, 600)))
        .collect();
    let submissions = tenants.iter().flat_map(|tenant| {
        let (base, tokens) = (&base, &tokens);
        (0..8).map(move |n| async move {
            let body = call(&format!("{} call {n}", tenant.1), "Mostly cost, honestly.");
            let (status, answer) = submit(base, &tokens[tenant], &body).await;
            (tenant, status, answer)
        })
    });
    let answers = join_all(submissions).await;

    let mut created: HashMap<&(String, String), Vec<String>> = HashMap::new();
    for (tenant, status, answer) in &answers {
        assert_eq!(*status, StatusCode::ACCEPTED, "{tenant:?}: {answer}");
        created.entry(tenant).or_default().push(id_of(answer));
    }
    assert_eq!(
        t.count(JobState::Available).await,
        48,
        "one analysis job each"
    );
    for (tenant, ids) in &created {
        assert_eq!(ids.len(), 8);
        for id in ids {
            assert_eq!(
                status_of(&base, &tokens[tenant], id).await,
                StatusCode::OK,
                "{tenant:?} reads its own session"
            );
            for (other, other_token) in &tokens {
                if other.0 != tenant.0 {
                    assert_eq!(
                        status_of(&base, other_token, id).await,
                        StatusCode::NOT_FOUND,
                        "{other:?} cannot see {tenant:?}'s session"
                    );
                }
            }
        }
    }
    for c in 0..3 {
        let company = format!("co-{c}");
        let entries = audit::list(
            &t.db,
            &AuditFilter {
                action: Some("session.create".into()),
                company_id: Some(company.clone()),
                limit: 100,
                ..AuditFilter::default()
            },
        )
        .await
        .expect("audit");
        assert_eq!(entries.len(), 16, "{company}: one entry per session");
        for entry in &entries {
            let creator = created
                .iter()
                .find(|(_, ids)| ids.iter().any(|id| entry.target == format!("session:{id}")))
                .map(|(tenant, _)| tenant)
                .expect("the entry names a session that was created");
            assert_eq!(creator.0, company);
            assert_eq!(entry.actor, creator.1, "the entry names who submitted it");
        }
    }
}

on_both_databases!(a_submission_the_database_refuses_fails_alone);
/// A database that refuses one session (here a trigger refuses the title `poison`): that
/// submission fails, and the ones that arrived with it, written in the same transaction at
/// first, are written again without it and accepted.
async fn a_submission_the_database_refuses_fails_alone(backend: Backend) {
    let Some(t) = TestDb::new(backend, &[]).await else {
        return;
    };
    t.execute(
        "CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN IF NEW.title = 'poison' THEN RAISE EXCEPTION 'poisoned'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON sessions WHEN NEW.title = 'poison'
         BEGIN SELECT RAISE(ABORT, 'poisoned'); END",
    )
    .await;
    t.execute(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON sessions
         FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
        "SELECT 1",
    )
    .await;
    let base = start_api(&t).await;
    let token = token("acme", "acme-p", Role::Member, 600);
    let submissions = (0..16).map(|n| {
        let (base, token) = (&base, &token);
        async move {
            let title = if n == 7 {
                "poison".to_string()
            } else {
                format!("call {n}")
            };
            (n, submit(base, token, &call(&title, "Mostly cost.")).await)
        }
    });
    for (n, (status, answer)) in join_all(submissions).await {
        if n == 7 {
            assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{answer}");
        } else {
            assert_eq!(status, StatusCode::ACCEPTED, "call {n}: {answer}");
        }
    }
    assert_eq!(
        t.count(JobState::Available).await,
        15,
        "a job for each accepted one"
    );
}
