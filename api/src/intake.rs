//! Intake's group commit: the submissions that arrive while a transaction is committing are
//! written together in the next one, and each gets its answer after that commit. A submission
//! writes four tables (its session, transcript, job and audit entry); alone, its transaction's
//! fixed costs (the round trips, the commit, the job's NOTIFY) outweigh the rows themselves, so
//! under load the throughput is set by how many submissions share one (see README,
//! "Performance and fairness").
//!
//! [`WRITERS`] tasks take turns at the queue: one collects what is waiting (up to
//! [`MAX_BATCH`]) while the others write, so an idle server writes a lone submission at once and
//! a busy one batches everything its clients send: a writer that finds another one writing
//! keeps gathering until that one has answered, then waits (at most [`LINGER`]) until it has
//! as many as the last batch had, since those clients send their next submission as soon as
//! they are answered. (Taking only what had already arrived gave batches of 4 at concurrency
//! 16 and 25 % more CPU per submission; gathering this way gives about 1.25 times the rate:
//! README, "Performance and fairness".) Submissions are grouped by
//! tenant: each group is written under its own scope (row-level security checks every row
//! against it), with one quota check and one multi-row statement per table. Groups go in
//! company order, so two writers that both take companies' daily-limit locks take them in the
//! same order and never deadlock.
//!
//! A batch whose transaction fails is written again one submission per transaction, so one
//! bad submission costs the others nothing but the retry; nothing of a failed transaction was
//! written, so none is written twice. When the database is unreachable (503) every submission
//! of the batch gets that answer at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use chrono::Utc;
use serde_json::{Value, json};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use voxline_domain::audit::{self, AuditEntry};
use voxline_domain::billing;
use voxline_domain::db::Scope;
use voxline_domain::sessions::{self, NewSession, StoredResponse};
use voxline_domain::{Db, Settings, Tx};
use voxline_jobs::{JobClient, NewJob};

use crate::error::ApiError;

/// Transactions writing submissions at once. Two keep one batch collecting while the other
/// commits; more would split the waiting submissions into smaller batches.
pub const WRITERS: usize = 2;
/// The most submissions one transaction writes (bounds a transaction's statement sizes).
pub const MAX_BATCH: usize = 64;
/// The longest a writer waits for the submissions its last batch's clients send next (a
/// client's turnaround is well under it; tokio's timers tick in milliseconds). Waited only
/// when that batch had more than one: when load drops, one batch is this much late.
const LINGER: Duration = Duration::from_millis(2);
/// Submissions waiting for a writer before a new one waits for room (backpressure).
const QUEUE: usize = 1024;

/// A submission checked and ready to write: the session (with its transcript when it came
/// with one), its first job and, with an Idempotency-Key, the answer to keep for retries.
pub struct Pending {
    pub id: String,
    pub company_id: String,
    pub profile_id: String,
    pub title: String,
    pub kind: String,
    pub source: &'static str,
    pub audio_ref: Option<String>,
    pub audio_type: Option<&'static str>,
    pub channels: Option<String>,
    pub user_speaker: Option<&'static str>,
    pub segments: Option<Value>,
    pub job: NewJob,
    pub actor_role: &'static str,
    pub stored: Option<(String, StoredResponse)>,
}

impl Pending {
    fn session(&self) -> NewSession<'_> {
        NewSession {
            id: &self.id,
            company_id: &self.company_id,
            profile_id: &self.profile_id,
            title: &self.title,
            kind: &self.kind,
            source: self.source,
            audio_ref: self.audio_ref.as_deref(),
            audio_type: self.audio_type,
            external_id: None,
            channels: self.channels.as_deref(),
            user_speaker: self.user_speaker,
        }
    }

    fn audit<'a>(&'a self, target: &'a str) -> AuditEntry<'a> {
        AuditEntry {
            actor: &self.profile_id,
            actor_role: self.actor_role,
            company_id: Some(&self.company_id),
            action: "session.create",
            target,
            details: json!({ "source": self.source, "kind": self.kind }),
        }
    }
}

/// What became of a submission once its transaction committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// The session, its job and its audit entry are durable.
    Created,
    /// Its Idempotency-Key was taken meanwhile by a concurrent retry: nothing was written.
    KeyTaken,
}

type Answer = Result<Written, ApiError>;
type Item = (Pending, oneshot::Sender<Answer>);

/// The queue in front of the writers.
pub struct IntakeWriter {
    queue: mpsc::Sender<Item>,
}

/// What a writer needs to write a batch.
struct Deps {
    db: Db,
    jobs: JobClient,
    settings: Arc<Settings>,
    turns: Turns,
}

/// How the writers take turns: what a gathering writer knows of the others.
#[derive(Default)]
struct Turns {
    /// Writers writing a batch right now.
    writing: AtomicUsize,
    /// Told each time a writer has answered its batch.
    answered: Notify,
    /// The size of the batch written last: how many submissions the next one can expect.
    last_batch: AtomicUsize,
}

impl IntakeWriter {
    /// Starts the writers on the current runtime; they stop once this is dropped and the
    /// queue is empty.
    pub fn start(db: Db, jobs: JobClient, settings: Arc<Settings>) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let receiver = Arc::new(Mutex::new(receiver));
        let deps = Arc::new(Deps {
            db,
            jobs,
            settings,
            turns: Turns::default(),
        });
        for _ in 0..WRITERS {
            tokio::spawn(run(receiver.clone(), deps.clone()));
        }
        IntakeWriter { queue }
    }

    /// Writes `pending` (with whatever else is waiting) and answers once it is durable, or
    /// with why it was not written.
    pub async fn write(&self, pending: Pending) -> Answer {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send((pending, reply))
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn stopped() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "shutting_down",
        "the server is shutting down; retry shortly",
    )
    .retry_after(1)
}

async fn run(receiver: Arc<Mutex<mpsc::Receiver<Item>>>, deps: Arc<Deps>) {
    loop {
        let batch = {
            let mut receiver = receiver.lock().await;
            let Some(batch) = gather(&mut receiver, &deps.turns).await else {
                return;
            };
            deps.turns.writing.fetch_add(1, Ordering::AcqRel);
            batch
        };
        deps.turns.last_batch.store(batch.len(), Ordering::Relaxed);
        write_batch(&deps, batch).await;
        deps.turns.writing.fetch_sub(1, Ordering::AcqRel);
        deps.turns.answered.notify_waiters();
    }
}

/// The next batch: what is waiting, then, while another writer is writing, what arrives
/// until it has answered (those submissions would wait for it anyway); then, for at most
/// [`LINGER`], what the last batch's clients send next, until there are as many as it had.
/// An idle server (a last batch of one) writes a lone submission at once. `None` once the
/// queue is closed and empty.
async fn gather<T>(receiver: &mut mpsc::Receiver<T>, turns: &Turns) -> Option<Vec<T>> {
    let first = receiver.recv().await?;
    let mut batch = vec![first];
    let expected = turns.last_batch.load(Ordering::Relaxed);
    let mut deadline = None;
    while batch.len() < MAX_BATCH {
        if let Ok(item) = receiver.try_recv() {
            batch.push(item);
            continue;
        }
        let answered = turns.answered.notified();
        tokio::pin!(answered);
        answered.as_mut().enable();
        let others_writing = turns.writing.load(Ordering::Acquire) > 0;
        if !others_writing && batch.len() >= expected {
            break;
        }
        let until = *deadline.get_or_insert_with(|| tokio::time::Instant::now() + LINGER);
        tokio::select! {
            item = receiver.recv() => match item {
                Some(item) => batch.push(item),
                None => break,
            },
            () = &mut answered, if others_writing => deadline = None,
            () = tokio::time::sleep_until(until), if !others_writing => break,
        }
    }
    Some(batch)
}

async fn write_batch(deps: &Deps, batch: Vec<Item>) {
    let (pending, replies): (Vec<Pending>, Vec<_>) = batch.into_iter().unzip();
    metrics::histogram!("voxline_intake_batch_size").record(pending.len() as f64);
    let answers = if pending.len() == 1 {
        vec![write_together(deps, &pending).await.and_then(only)]
    } else {
        match write_together(deps, &pending).await {
            Ok(answers) => answers,
            // An unreachable database refuses each one alike: trying them one by one would
            // only knock on it again.
            Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => {
                pending.iter().map(|_| Err(e.clone())).collect()
            }
            Err(e) => {
                tracing::warn!(status = %e.status, code = e.body.code, submissions = pending.len(),
                    "a group commit failed; writing its submissions one per transaction");
                let mut answers = Vec::with_capacity(pending.len());
                for one in pending.chunks(1) {
                    answers.push(write_together(deps, one).await.and_then(only));
                }
                answers
            }
        }
    };
    for (reply, answer) in replies.into_iter().zip(answers) {
        // A client that went away still had its submission written (or not) as answered.
        let _ = reply.send(answer);
    }
}

fn only(mut answers: Vec<Answer>) -> Answer {
    answers
        .pop()
        .unwrap_or_else(|| Err(ApiError::internal("a write returned no answer")))
}

/// Writes `pending` in one transaction; the answer for each, in order. An `Err` means nothing
/// was written.
async fn write_together(deps: &Deps, pending: &[Pending]) -> Result<Vec<Answer>, ApiError> {
    let now = Utc::now();
    // By tenant, each in arrival order (the sort is stable).
    let tenant = |i: usize| (&pending[i].company_id, &pending[i].profile_id);
    let mut order: Vec<usize> = (0..pending.len()).collect();
    order.sort_by_key(|&i| tenant(i));
    let groups = order.chunk_by(|&a, &b| tenant(a) == tenant(b));
    let mut answers: Vec<Option<Answer>> = (0..pending.len()).map(|_| None).collect();
    let mut tx: Option<Tx<'static>> = None;
    for group in groups {
        let first = &pending[group[0]];
        let scope = Scope::Profile {
            company: &first.company_id,
            profile: &first.profile_id,
        };
        let tx = match &mut tx {
            Some(tx) => {
                tx.rescope(scope).await?;
                tx
            }
            None => tx.insert(deps.db.begin(scope).await?),
        };
        let admitted = admit(deps, tx, pending, group, &mut answers, now).await?;
        if admitted.is_empty() {
            continue;
        }
        let rows: Vec<_> = admitted
            .iter()
            .map(|&i| (pending[i].session(), pending[i].segments.as_ref()))
            .collect();
        sessions::insert_many(tx, &rows).await?;
        let jobs = admitted.iter().map(|&i| pending[i].job.clone()).collect();
        deps.jobs.enqueue_many_in(tx, jobs).await?;
        let targets: Vec<String> = admitted
            .iter()
            .map(|&i| format!("session:{}", pending[i].id))
            .collect();
        let entries: Vec<_> = admitted
            .iter()
            .zip(&targets)
            .map(|(&i, target)| pending[i].audit(target))
            .collect();
        audit::append_many_in(tx, &entries).await?;
        for i in admitted {
            answers[i] = Some(Ok(Written::Created));
        }
    }
    if let Some(tx) = tx {
        tx.commit().await?;
    }
    Ok(answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err(ApiError::internal("a submission was left unanswered"))))
        .collect())
}

/// The group's quota answers (refusals go straight into `answers`) and, for those admitted
/// with an Idempotency-Key, the key: the ones whose key a concurrent retry took are answered
/// [`Written::KeyTaken`]. Returns the submissions to write.
async fn admit(
    deps: &Deps,
    tx: &mut Tx<'_>,
    pending: &[Pending],
    group: &[usize],
    answers: &mut [Option<Answer>],
    now: chrono::DateTime<Utc>,
) -> Result<Vec<usize>, ApiError> {
    let first = &pending[group[0]];
    let quota =
        billing::admit_many_in(tx, &deps.settings, &first.company_id, group.len(), now).await?;
    let mut admitted = Vec::with_capacity(group.len());
    for (&i, answer) in group.iter().zip(quota) {
        if let Err(denial) = answer {
            answers[i] = Some(Err(crate::billing::refusal(&denial, now)));
            continue;
        }
        if let Some((key, stored)) = &pending[i].stored
            && !sessions::store_response(tx, &first.company_id, &first.profile_id, key, stored)
                .await?
        {
            answers[i] = Some(Ok(Written::KeyTaken));
            continue;
        }
        admitted.push(i);
    }
    Ok(admitted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(items: &[u32]) -> (mpsc::Sender<u32>, mpsc::Receiver<u32>) {
        let (sender, receiver) = mpsc::channel(16);
        for &item in items {
            sender.try_send(item).expect("room in the queue");
        }
        (sender, receiver)
    }

    #[tokio::test]
    async fn an_idle_writer_takes_what_is_waiting() {
        let turns = Turns::default();
        let (_sender, mut receiver) = queue(&[1, 2, 3]);
        assert_eq!(gather(&mut receiver, &turns).await, Some(vec![1, 2, 3]));
    }

    #[tokio::test]
    async fn while_another_writer_writes_what_arrives_joins_the_batch_until_it_has_answered() {
        let turns = Arc::new(Turns::default());
        turns.writing.store(1, Ordering::Release);
        let (sender, mut receiver) = queue(&[1]);
        let gathering = {
            let turns = turns.clone();
            tokio::spawn(async move { gather(&mut receiver, &turns).await })
        };
        // The test's runtime has one thread: the spawned gather runs until it waits.
        tokio::task::yield_now().await;
        sender.send(2).await.expect("the gather is listening");
        tokio::task::yield_now().await;
        turns.writing.store(0, Ordering::Release);
        turns.answered.notify_waiters();
        let batch = gathering.await.expect("the gather ran to its end");
        assert_eq!(batch, Some(vec![1, 2]));
    }

    #[tokio::test]
    async fn a_writer_expecting_more_than_arrive_writes_what_it_has_once_the_linger_is_over() {
        let turns = Turns {
            last_batch: AtomicUsize::new(8),
            ..Turns::default()
        };
        let (_sender, mut receiver) = queue(&[1]);
        let batch = tokio::time::timeout(Duration::from_secs(10), gather(&mut receiver, &turns))
            .await
            .expect("the linger ends");
        assert_eq!(batch, Some(vec![1]));
    }

    #[tokio::test]
    async fn a_closed_empty_queue_ends_the_writer() {
        let turns = Turns::default();
        let (sender, mut receiver) = queue(&[]);
        drop(sender);
        assert_eq!(gather(&mut receiver, &turns).await, None);
    }
}
