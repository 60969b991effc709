//! What a worker runs: a [`Handler`] per job kind, and the error that tells the engine whether
//! to retry.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use voxline_domain::Tx;

use crate::args::JobArgs;
use crate::model::{ClaimedJob, DeadJob};

/// Why an attempt failed, which decides what happens next.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HandlerError {
    /// Worth trying again (time-out, 429, 5xx, connection refused). `after` is a delay the
    /// failure asked for (e.g. `Retry-After`); without it the queue's backoff applies.
    #[error("{message}")]
    Retryable {
        message: String,
        after: Option<Duration>,
    },
    /// Will never succeed (bad payload, a provider 4xx that will not change): dead at once.
    #[error("{0}")]
    Permanent(String),
    /// Not tried at all, e.g. because the provider's circuit breaker is open: run again after
    /// `after` without spending an attempt, so an outage does not exhaust every job.
    #[error("snoozed for {after:?}: {reason}")]
    Snooze { reason: String, after: Duration },
}

impl HandlerError {
    pub fn retry(message: impl Into<String>) -> Self {
        HandlerError::Retryable {
            message: message.into(),
            after: None,
        }
    }

    pub fn retry_after(message: impl Into<String>, after: Duration) -> Self {
        HandlerError::Retryable {
            message: message.into(),
            after: Some(after),
        }
    }

    pub fn snooze(reason: impl Into<String>, after: Duration) -> Self {
        HandlerError::Snooze {
            reason: reason.into(),
            after,
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        HandlerError::Permanent(message.into())
    }
}

pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

/// Runs one kind of job. Implemented for any `Fn(ClaimedJob) -> Future` closure.
pub trait Handler: Send + Sync + 'static {
    fn run(&self, job: ClaimedJob) -> HandlerFuture;
}

impl<F, Fut> Handler for F
where
    F: Fn(ClaimedJob) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    fn run(&self, job: ClaimedJob) -> HandlerFuture {
        Box::pin(self(job))
    }
}

/// What a job kind does when one of its jobs ends `dead` (attempts exhausted, a permanent
/// error, a time-out on the last attempt, a rescue after the last attempt): it runs inside
/// the transaction that moves the job to `dead`, so the owner's state (a session `failed` with
/// the reason) changes exactly when the job dies, never before and never not at all.
///
/// Implement it with [`crate::async_trait`] (re-exported so an implementing crate needs no
/// dependency of its own): a boxed method keeps the hooks storable as `Arc<dyn OnDead>`.
#[async_trait::async_trait]
pub trait OnDead: Send + Sync + 'static {
    async fn on_dead(&self, tx: &mut Tx<'_>, job: &DeadJob) -> Result<(), String>;
}

/// On-dead hooks by job kind. Every process that can move a job to `dead` holds them: the
/// worker pools (their attempts' outcomes) and the maintenance leader (rescue).
#[derive(Clone, Default)]
pub struct DeadHooks {
    by_kind: HashMap<String, Arc<dyn OnDead>>,
}

impl DeadHooks {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(mut self, kind: impl Into<String>, hook: impl OnDead) -> Self {
        self.by_kind.insert(kind.into(), Arc::new(hook));
        self
    }

    pub fn get(&self, kind: &str) -> Option<&Arc<dyn OnDead>> {
        self.by_kind.get(kind)
    }

    pub fn is_empty(&self) -> bool {
        self.by_kind.is_empty()
    }
}

impl std::fmt::Debug for DeadHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.by_kind.keys()).finish()
    }
}

/// Handlers by job kind. A claimed job whose kind has no handler goes to `dead`: no later
/// attempt would find one either (until a deploy adds it, and then an operator retries it).
#[derive(Clone, Default)]
pub struct Handlers {
    by_kind: HashMap<String, Arc<dyn Handler>>,
    dead_hooks: DeadHooks,
}

impl Handlers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn register(mut self, kind: impl Into<String>, handler: impl Handler) -> Self {
        self.by_kind.insert(kind.into(), Arc::new(handler));
        self
    }

    /// Registers `handler` for `A`'s kind; it receives the payload decoded as `A` (one that
    /// does not decode fails permanently, see [`JobArgs::decode`]).
    pub fn add_worker<A, F, Fut>(self, handler: F) -> Self
    where
        A: JobArgs,
        F: Fn(ClaimedJob, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.register(A::KIND, move |job: ClaimedJob| {
            let handler = handler.clone();
            async move {
                let args = A::decode(&job)?;
                handler(job, args).await
            }
        })
    }

    pub fn get(&self, kind: &str) -> Option<Arc<dyn Handler>> {
        self.by_kind.get(kind).cloned()
    }

    /// Adds on-dead hooks (see [`OnDead`]); a kind registered twice keeps the later hook.
    pub fn with_dead_hooks(mut self, hooks: DeadHooks) -> Self {
        for (kind, hook) in hooks.by_kind {
            self.dead_hooks.by_kind.insert(kind, hook);
        }
        self
    }

    pub fn dead_hooks(&self) -> &DeadHooks {
        &self.dead_hooks
    }

    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.by_kind.keys().map(String::as_str)
    }
}
