//! Metered usage (`usage.report`, hourly): each company's analysed seconds
//! (`usage_records`) summed per closed window of `billing.usage_window_secs`, and each window
//! sent to Stripe's billing meter (`POST /v1/billing/meter_events`, event
//! `billing.meter_event_name`, payload `stripe_customer_id` and `value`) once.
//!
//! Once means: the window's row in `usage_reports` is made before the first attempt, with the
//! value and an `identifier` fixed for good; every attempt sends exactly that, with the
//! identifier also as the Idempotency-Key, so a retry after a lost answer is the same request
//! (Stripe counts an identifier once) and a window marked `reported` is never sent again.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use voxline_domain::billing::{self, USAGE_PENDING, USAGE_REPORTED, UsageReport};
use voxline_domain::{Db, Settings};
use voxline_jobs::HandlerError;

use super::stripe::{CallError, StripeApi};

/// A window is reported this long after it closed: an analysis that started inside it commits
/// its usage row (stamped with its start) within this time.
pub const SETTLE: Duration = Duration::from_secs(300);
/// Stripe takes meter events up to 35 days old; older windows are left.
pub const LOOKBACK_DAYS: i64 = 34;

/// What one run reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct UsageRun {
    /// Windows with usage in the lookback.
    pub windows: usize,
    /// Identifiers of the windows sent in this run.
    pub reported: Vec<String>,
    pub already_reported: usize,
    /// Windows whose whole seconds round to 0 (nothing to bill).
    pub empty: usize,
    /// Companies with usage but no Stripe customer (not billed through Stripe).
    pub unlinked: Vec<String>,
    /// Identifiers Stripe refused; kept for the next run.
    pub refused: Vec<String>,
}

/// The meter event's identifier of a company's window: stable, at most 100 characters, and no
/// company id leaked into Stripe.
pub fn identifier(company: &str, window_start: DateTime<Utc>) -> String {
    let digest = hex::encode(Sha256::digest(company.as_bytes()));
    format!(
        "voxline-usage-{}-{}",
        &digest[..24],
        window_start.timestamp()
    )
}

fn db_error(e: voxline_domain::DbError) -> HandlerError {
    HandlerError::retry(e.to_string())
}

/// Reports every closed, unreported window of the lookback as of `now`.
pub async fn report(
    db: &Db,
    settings: &Settings,
    api: &StripeApi,
    now: DateTime<Utc>,
) -> Result<UsageRun, HandlerError> {
    let mut run = UsageRun::default();
    let event_name = settings.billing.meter_event_name.trim();
    if event_name.is_empty() {
        tracing::info!("billing.meter_event_name is empty; usage is not reported");
        return Ok(run);
    }
    let width = i64::try_from(settings.billing.usage_window_secs).unwrap_or(3600);
    let settled = now.timestamp() - i64::try_from(SETTLE.as_secs()).unwrap_or(300);
    let to = settled.div_euclid(width) * width;
    let from = (to - LOOKBACK_DAYS * 86_400).div_euclid(width) * width;
    let (Some(to), Some(from)) = (
        DateTime::from_timestamp(to, 0),
        DateTime::from_timestamp(from, 0),
    ) else {
        return Ok(run);
    };
    let windows = billing::usage_windows(db, settings.billing.usage_window_secs, from, to)
        .await
        .map_err(db_error)?;
    let known: HashMap<(String, DateTime<Utc>), UsageReport> = billing::usage_reports(db, from)
        .await
        .map_err(db_error)?
        .into_iter()
        .map(|r| ((r.company_id.clone(), r.window_start), r))
        .collect();
    let mut customers = HashMap::new();
    run.windows = windows.len();
    for window in windows {
        let key = (window.company_id.clone(), window.window_start);
        let report = match known.get(&key) {
            Some(r) if r.status == USAGE_REPORTED => {
                run.already_reported += 1;
                continue;
            }
            // Claimed before: send exactly what the first attempt sent.
            Some(r) => r.clone(),
            None => {
                let value = window.seconds.round() as i64;
                if value <= 0 {
                    run.empty += 1;
                    continue;
                }
                let customer = match customers.get(&window.company_id) {
                    Some(c) => c,
                    None => {
                        let found = billing::customer_for_company(db, &window.company_id)
                            .await
                            .map_err(db_error)?
                            .map(|c| c.customer_id);
                        customers.entry(window.company_id.clone()).or_insert(found)
                    }
                };
                let Some(customer) = customer.clone() else {
                    if !run.unlinked.contains(&window.company_id) {
                        run.unlinked.push(window.company_id.clone());
                    }
                    continue;
                };
                billing::claim_usage_report(
                    db,
                    &UsageReport {
                        company_id: window.company_id.clone(),
                        window_start: window.window_start,
                        window_end: window.window_end,
                        customer_id: customer,
                        value,
                        identifier: identifier(&window.company_id, window.window_start),
                        status: USAGE_PENDING.into(),
                        attempts: 0,
                        last_error: None,
                    },
                )
                .await
                .map_err(db_error)?
            }
        };
        // The event belongs to the window: stamped one second before its end.
        let timestamp = report.window_end.timestamp() - 1;
        let sent = api
            .meter_event(
                event_name,
                &report.customer_id,
                report.value,
                timestamp,
                &report.identifier,
            )
            .await;
        match sent {
            Ok(()) => {
                billing::finish_usage_report(db, &report.company_id, report.window_start, Ok(()))
                    .await
                    .map_err(db_error)?;
                run.reported.push(report.identifier);
            }
            Err(error) => {
                let message = error.to_string();
                let outage = matches!(error, CallError::CircuitOpen(_) | CallError::Unavailable(_));
                if !outage {
                    tracing::error!(identifier = %report.identifier, company = %report.company_id, error = %message, "Stripe refused a usage report; it is tried again next run");
                }
                billing::finish_usage_report(
                    db,
                    &report.company_id,
                    report.window_start,
                    Err(&message),
                )
                .await
                .map_err(db_error)?;
                if outage {
                    // The rest waits for the job's retry: Stripe is not answering now.
                    log(&run);
                    return Err(error.into_handler_error("reporting usage"));
                }
                run.refused.push(report.identifier);
            }
        }
    }
    log(&run);
    Ok(run)
}

fn log(run: &UsageRun) {
    tracing::info!(
        windows = run.windows,
        reported = ?run.reported,
        already_reported = run.already_reported,
        empty = run.empty,
        unlinked = ?run.unlinked,
        refused = ?run.refused,
        "usage report finished"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identifier_is_stable_short_and_per_company_and_window() {
        let at = DateTime::from_timestamp(1_800_000_000, 0).unwrap();
        let a = identifier("acme", at);
        assert_eq!(a, identifier("acme", at));
        assert_ne!(a, identifier("globex", at));
        assert_ne!(a, identifier("acme", at + chrono::Duration::hours(1)));
        assert!(a.len() <= 100 && !a.contains("acme"), "{a}");
        assert!(identifier(&"x".repeat(500), at).len() <= 100);
    }
}
