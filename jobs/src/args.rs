//! Typed job arguments, like River's `JobArgs`: a payload type names its kind and queue once,
//! [`JobClient`](crate::JobClient) enqueues the typed value, and a handler added with
//! [`Handlers::add_worker`](crate::Handlers::add_worker) receives it decoded. A payload that does not decode
//! (a job written by an older or newer build, or by hand) fails permanently with the reason:
//! no later attempt would read it either.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::handler::HandlerError;
use crate::model::{ClaimedJob, NewJob};

/// A job's payload type, tied to the kind its handler is registered for and the queue its
/// jobs go to. The kind is written here and nowhere else.
pub trait JobArgs: Serialize + DeserializeOwned + Send + 'static {
    const KIND: &'static str;
    const QUEUE: &'static str;

    /// A key that makes a second enqueue of the same work return the first job (none: every
    /// enqueue adds one).
    fn unique_key(&self) -> Option<String> {
        None
    }

    /// The job that runs `self`.
    fn to_job(&self) -> Result<NewJob, serde_json::Error> {
        let job = NewJob::new(Self::QUEUE, Self::KIND, serde_json::to_value(self)?);
        Ok(match self.unique_key() {
            Some(key) => job.unique_key(key),
            None => job,
        })
    }

    /// The claimed job's payload as `Self`; a permanent error naming the kind and the reason
    /// when it does not decode.
    fn decode(job: &ClaimedJob) -> Result<Self, HandlerError> {
        // Read from the borrowed payload: no copy of it per attempt.
        Self::deserialize(&job.payload).map_err(|e| {
            HandlerError::permanent(format!(
                "the payload of this {} job does not decode: {e}",
                Self::KIND
            ))
        })
    }
}

/// What [`JobClient`](crate::JobClient)'s enqueue methods take: a typed [`JobArgs`] value, or
/// a [`NewJob`] assembled at run time (cron entries from configuration, benchmarks).
pub trait ToJob {
    fn to_new_job(&self) -> Result<std::borrow::Cow<'_, NewJob>, serde_json::Error>;
}

impl ToJob for NewJob {
    fn to_new_job(&self) -> Result<std::borrow::Cow<'_, NewJob>, serde_json::Error> {
        Ok(std::borrow::Cow::Borrowed(self))
    }
}

impl<A: JobArgs> ToJob for A {
    fn to_new_job(&self) -> Result<std::borrow::Cow<'_, NewJob>, serde_json::Error> {
        self.to_job().map(std::borrow::Cow::Owned)
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;
    use crate::model::JobId;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Greet {
        name: String,
    }

    impl JobArgs for Greet {
        const KIND: &'static str = "test.greet";
        const QUEUE: &'static str = "default";
        fn unique_key(&self) -> Option<String> {
            Some(format!("greet:{}", self.name))
        }
    }

    fn claimed(payload: serde_json::Value) -> ClaimedJob {
        ClaimedJob {
            id: JobId(1),
            lease: 1,
            queue: "default".into(),
            kind: Greet::KIND.into(),
            payload,
            attempt: 1,
            max_attempts: 3,
            timeout_ms: None,
            progress: Default::default(),
            trace_context: None,
        }
    }

    #[test]
    fn a_typed_value_becomes_a_job_of_its_kind_queue_and_key() {
        let job = Greet { name: "ada".into() }.to_job().unwrap();
        assert_eq!(job.kind, "test.greet");
        assert_eq!(job.queue, "default");
        assert_eq!(job.unique_key.as_deref(), Some("greet:ada"));
        assert_eq!(job.payload, serde_json::json!({"name": "ada"}));
    }

    #[test]
    fn a_payload_decodes_back_into_its_type() {
        let job = claimed(serde_json::json!({"name": "ada"}));
        assert_eq!(Greet::decode(&job).unwrap(), Greet { name: "ada".into() });
    }

    #[test]
    fn a_payload_that_does_not_decode_is_a_permanent_error_with_the_reason() {
        let job = claimed(serde_json::json!({"nom": "ada"}));
        match Greet::decode(&job) {
            Err(HandlerError::Permanent(reason)) => {
                assert!(reason.contains("test.greet"), "{reason}");
                assert!(reason.contains("name"), "{reason}");
            }
            other => panic!("expected a permanent error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_worker_added_for_a_type_runs_on_its_kind_with_the_payload_decoded() {
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let handlers = crate::Handlers::new().add_worker(move |_job: ClaimedJob, g: Greet| {
            let seen_tx = seen_tx.clone();
            async move {
                let _ = seen_tx.send(g.name);
                Ok(())
            }
        });
        let handler = handlers
            .get("test.greet")
            .expect("registered under its kind");
        handler
            .run(claimed(serde_json::json!({"name": "ada"})))
            .await
            .expect("ran");
        assert_eq!(seen.recv().await.as_deref(), Some("ada"));
        // An undecodable payload never reaches the handler: the attempt fails for good.
        let outcome = handler.run(claimed(serde_json::json!([]))).await;
        assert!(
            matches!(outcome, Err(HandlerError::Permanent(_))),
            "{outcome:?}"
        );
        assert!(seen.try_recv().is_err(), "the handler ran on a bad payload");
    }
}
