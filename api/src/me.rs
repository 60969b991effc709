//! The caller's own data (GDPR): `GET /api/me/export` and `DELETE /api/me`.
//!
//! An export is built by a `gdpr.export` job: the first request starts one (202), later ones
//! answer 202 while it is pending and serve the JSON bundle (200) once it is ready, until it
//! expires (`retention.export_hours`); then the next request starts a fresh one. Erasure runs
//! in one transaction with the cancellation of the profile's waiting jobs, the job that deletes
//! its files and the audit record; see `voxline_domain::gdpr` for what is kept and why.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::json;
use voxline_domain::audit;
use voxline_domain::blobs::BlobError;
use voxline_domain::db::Scope;
use voxline_domain::gdpr;
use voxline_jobs::payloads::ExportJob;
use voxline_jobs::store::ErasedSubject;

use crate::AppState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::sessions::forget_erased;

/// The caller's data as one JSON document (200), or the export being prepared (202
/// `{export_id, status, links}`; ask again later, or wait for the "export ready" email).
#[utoipa::path(get, path = "/api/me/export", tag = "me", operation_id = "export_me",
    responses((status = 200, description = "the export bundle (JSON: profile, sessions with transcripts and feedback, usage, emails, preferences)"),
              (status = 202, description = "{export_id, status: pending, links}")),
    security(("bearer" = [])))]
pub async fn export(State(state): State<AppState>, caller: Caller) -> Result<Response, ApiError> {
    let claims = &caller.0;
    let (company, profile) = (claims.company_id.as_str(), claims.sub.as_str());
    let latest = gdpr::latest_export(&state.db, company, profile).await?;
    if let Some(ready) = latest.as_ref().filter(|e| e.servable(Utc::now()))
        && let Some(blob) = &ready.blob_ref
    {
        match state.blobs.get(blob).await {
            Ok(bytes) => {
                let disposition =
                    format!("attachment; filename=\"voxline-export-{}.json\"", ready.id);
                return Ok((
                    [
                        (header::CONTENT_TYPE, "application/json".to_string()),
                        (header::CONTENT_DISPOSITION, disposition),
                    ],
                    bytes,
                )
                    .into_response());
            }
            // Swept by retention a moment ago: make a new one below.
            Err(BlobError::NotFound(_)) => {}
            Err(e) => return Err(ApiError::internal(e)),
        }
    }
    if let Some(pending) = latest.as_ref().filter(|e| e.status == "pending") {
        return Ok(accepted(&pending.id));
    }
    let export_id = hex::encode(rand::random::<[u8; 16]>());
    let job = ExportJob {
        export_id: export_id.clone(),
        company_id: company.to_string(),
        profile_id: profile.to_string(),
    };
    let mut tx = state.db.begin(Scope::Profile { company, profile }).await?;
    gdpr::create_export(&mut tx, &export_id, company, profile).await?;
    state.jobs.enqueue(&mut tx, &job).await?;
    audit::append_in(
        &mut tx,
        &claims.audit_entry(
            "gdpr.export",
            &format!("profile:{profile}"),
            json!({ "export_id": export_id }),
        ),
    )
    .await?;
    tx.commit().await?;
    Ok(accepted(&export_id))
}

fn accepted(export_id: &str) -> Response {
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "export_id": export_id,
            "status": "pending",
            "links": { "export": "/api/me/export" },
        })),
    )
        .into_response()
}

/// Erases the caller's profile: its sessions, transcripts, feedback, audio, exports, email
/// log and preferences; waiting jobs about them are cancelled. Billing records (usage seconds,
/// the Stripe copy) and the audit log are kept, as the law requires. Answers what was erased.
#[utoipa::path(delete, path = "/api/me", tag = "me", operation_id = "erase_me",
    responses((status = 200, description = "{erased: {sessions, exports, preferences, emails, profile, jobs_cancelled, files}}")),
    security(("bearer" = [])))]
pub async fn erase(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let claims = &caller.0;
    let (company, profile) = (claims.company_id.as_str(), claims.sub.as_str());
    let mut tx = state.db.begin(Scope::Profile { company, profile }).await?;
    let erased = gdpr::erase_profile(&mut tx, company, profile).await?;
    let subject = ErasedSubject {
        company_id: company,
        profile_id: Some(profile),
        session_ids: &erased.session_ids,
    };
    let cancelled = forget_erased(&state, &mut tx, &subject, erased.blobs.clone()).await?;
    let summary = json!({
        "sessions": erased.sessions, "exports": erased.exports,
        "preferences": erased.preferences, "emails": erased.emails, "profile": erased.profile,
        "jobs_cancelled": cancelled, "files": erased.blobs.len(),
    });
    audit::append_in(
        &mut tx,
        &claims.audit_entry("gdpr.erase", &format!("profile:{profile}"), summary.clone()),
    )
    .await?;
    tx.commit().await?;
    // A later request with a valid token records the profile afresh (an empty one).
    state.seen_profiles.forget(profile);
    tracing::info!(company, profile, "profile erased");
    Ok(Json(json!({ "erased": summary })))
}
