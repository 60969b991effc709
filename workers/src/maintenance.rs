//! Handlers of the `maintenance` queue: retention, GDPR exports and the deletion of files
//! whose rows were erased.

use std::sync::Arc;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use voxline_domain::Db;
use voxline_domain::blobs::{BlobStore, LocalBlobs};
use voxline_domain::{call_audio, gdpr};
use voxline_jobs::maintenance::pruner;
use voxline_jobs::payloads::{BlobsDelete, DataExportReady, EmailJob, EmailMessage, ExportJob};
use voxline_jobs::{ClaimedJob, HandlerError, Handlers, JobArgs, JobClient};

/// `retention.prune` (daily cron): deletes finished jobs past their configured retention,
/// uploaded audio older than `retention.audio_days`, and expired export bundles. The elected
/// leader also prunes jobs every minute; this job makes the daily pass visible to operators.
pub const RETENTION_PRUNE: &str = "retention.prune";

/// The daily job prunes until it has caught up, however long that takes.
const PRUNE_BUDGET: std::time::Duration = std::time::Duration::from_secs(600);

/// Rows fetched per round of a sweep; a sweep goes on until a round comes back short.
const SWEEP_BATCH: i64 = 500;

pub fn register(handlers: Handlers, jobs: JobClient) -> Handlers {
    let blobs: Arc<dyn BlobStore> = Arc::new(LocalBlobs::new(jobs.settings().blob_dir()));
    let handlers = handlers.register(RETENTION_PRUNE, {
        let (jobs, blobs) = (jobs.clone(), blobs.clone());
        move |_job: ClaimedJob| {
            let (jobs, blobs) = (jobs.clone(), blobs.clone());
            async move { prune(&jobs, blobs.as_ref()).await }
        }
    });
    let handlers = handlers.add_worker({
        let (jobs, blobs) = (jobs.clone(), blobs.clone());
        move |_job: ClaimedJob, task: ExportJob| {
            let (jobs, blobs) = (jobs.clone(), blobs.clone());
            async move { export(&jobs, blobs.as_ref(), &task).await }
        }
    });
    handlers.add_worker(move |_job: ClaimedJob, task: BlobsDelete| {
        let blobs = blobs.clone();
        async move {
            for key in &task.refs {
                // Deleting a file that is already gone succeeds, so a retry repeats nothing.
                blobs
                    .delete(key)
                    .await
                    .map_err(|e| HandlerError::retry(e.to_string()))?;
            }
            tracing::info!(company = %task.company_id, files = task.refs.len(), "erased files deleted");
            Ok(())
        }
    })
}

fn retry(e: impl std::fmt::Display) -> HandlerError {
    HandlerError::retry(e.to_string())
}

async fn prune(jobs: &JobClient, blobs: &dyn BlobStore) -> Result<(), HandlerError> {
    let db = jobs.db();
    let retention = &jobs.settings().retention;
    let deleted_jobs =
        pruner::prune_until_caught_up(jobs.store().as_ref(), retention, PRUNE_BUDGET)
            .await
            .map_err(retry)?
            .deleted;
    let mut audio = 0usize;
    if retention.audio_days > 0 {
        let before = Utc::now() - ChronoDuration::days(retention.audio_days as i64);
        audio = sweep(db, blobs, Expired::Audio { before }).await?;
    }
    let exports = sweep(db, blobs, Expired::Exports).await?;
    let unclaimed = sweep(
        db,
        blobs,
        Expired::UnclaimedCallAudio {
            before: Utc::now() - ChronoDuration::hours(UNCLAIMED_CALL_AUDIO_HOURS),
        },
    )
    .await?;
    tracing::info!(
        deleted_jobs,
        audio_files = audio,
        unclaimed_call_audio = unclaimed,
        export_files = exports,
        "retention.prune finished"
    );
    Ok(())
}

/// What a retention sweep deletes.
#[derive(Debug, Clone, Copy)]
enum Expired {
    /// Uploaded audio of sessions created before `before` (the sessions stay).
    Audio { before: DateTime<Utc> },
    /// Export bundles past their expiry (their rows go too).
    Exports,
    /// Role-play audio held for a transcript that never came, received before `before`.
    UnclaimedCallAudio { before: DateTime<Utc> },
}

/// A role-play's transcript follows its audio within minutes; audio held longer is an orphan.
const UNCLAIMED_CALL_AUDIO_HOURS: i64 = 24;

/// Deletes each expired file, then forgets it in its row, until a round finds fewer than a
/// batch. The file goes first: a crash in between leaves a row naming a missing file, which
/// the next sweep deletes again (a no-op) and forgets.
async fn sweep(db: &Db, blobs: &dyn BlobStore, what: Expired) -> Result<usize, HandlerError> {
    let mut total = 0;
    loop {
        let batch = match what {
            Expired::Audio { before } => gdpr::expired_audio(db, before, SWEEP_BATCH).await,
            Expired::Exports => gdpr::expired_exports(db, Utc::now(), SWEEP_BATCH).await,
            Expired::UnclaimedCallAudio { before } => {
                call_audio::unclaimed(db, before, SWEEP_BATCH).await
            }
        }
        .map_err(retry)?;
        for expired in &batch {
            blobs.delete(&expired.blob_ref).await.map_err(retry)?;
            match what {
                Expired::Audio { .. } => gdpr::clear_audio(db, expired).await,
                Expired::Exports => gdpr::forget_export(db, expired).await,
                Expired::UnclaimedCallAudio { .. } => {
                    call_audio::forget_unclaimed(db, expired).await
                }
            }
            .map_err(retry)?;
        }
        total += batch.len();
        if (batch.len() as i64) < SWEEP_BATCH {
            return Ok(total);
        }
    }
}

/// Builds the bundle, stores it, marks the export ready and mails the profile a link.
async fn export(
    jobs: &JobClient,
    blobs: &dyn BlobStore,
    task: &ExportJob,
) -> Result<(), HandlerError> {
    let db = jobs.db();
    let (company, profile) = (task.company_id.as_str(), task.profile_id.as_str());
    let bundle = gdpr::bundle(db, company, profile).await.map_err(retry)?;
    let bytes = serde_json::to_vec_pretty(&bundle)
        .map_err(|e| HandlerError::permanent(format!("export bundle: {e}")))?;
    let key = format!("exports/{}.json", task.export_id);
    blobs.put(&key, &bytes).await.map_err(retry)?;
    let expires_at =
        Utc::now() + ChronoDuration::hours(jobs.settings().retention.export_hours as i64);
    let recorded = gdpr::finish_export(db, company, &task.export_id, Ok((&key, expires_at)))
        .await
        .map_err(retry)?;
    if !recorded {
        // The profile was erased while the bundle was built: it must not outlive the erasure.
        blobs.delete(&key).await.map_err(retry)?;
        tracing::info!(export = %task.export_id, "export dropped: its profile was erased");
        return Ok(());
    }
    tracing::info!(export = %task.export_id, bytes = bytes.len(), "export ready");
    let email = voxline_domain::profiles::get_in(db, company, profile)
        .await
        .map_err(retry)?
        .and_then(|p| p.email);
    let Some(to) = email else {
        return Ok(());
    };
    let job = EmailJob {
        company_id: Some(company.to_string()),
        profile_id: Some(profile.to_string()),
        to,
        subject_id: format!("export:{}", task.export_id),
        message: EmailMessage::DataExportReady(DataExportReady {
            export_id: task.export_id.clone(),
            expires_at: expires_at.to_rfc3339(),
        }),
    }
    .to_job()
    .map_err(|e| HandlerError::permanent(e.to_string()))?;
    jobs.enqueue_now(&job).await.map(drop).map_err(retry)
}
