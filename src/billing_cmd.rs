//! `voxline billing reconcile [--dry-run] [--json]`: the hourly reconciliation on demand —
//! Stripe's subscriptions compared with the local copy, drift repaired (or, with `--dry-run`,
//! only reported), and what changed printed by id.

use anyhow::{Context, bail};
use clap::Subcommand;
use voxline_domain::Settings;
use voxline_workers::billing::reconcile::{self, ReconcileReport};
use voxline_workers::billing::stripe::StripeApi;

use crate::services::connect;

#[derive(Subcommand)]
pub enum BillingCommand {
    /// Compare Stripe's subscriptions with the local copy and repair any drift.
    Reconcile {
        /// Report what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(settings: Settings, command: BillingCommand) -> anyhow::Result<()> {
    match command {
        BillingCommand::Reconcile { dry_run, json } => reconcile_now(settings, dry_run, json).await,
    }
}

async fn reconcile_now(settings: Settings, dry_run: bool, json: bool) -> anyhow::Result<()> {
    let Some(api) = StripeApi::from_settings(&settings.stripe)? else {
        bail!(
            "stripe.secret_key is not configured (VOXLINE_STRIPE_SECRET_KEY): there is no Stripe to reconcile with"
        );
    };
    let db = connect(&settings).await?;
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    let result = reconcile::run(&db, &settings, &api, dry_run, &format!("cli:{user}")).await;
    db.close().await;
    let report = result.context("reconciling subscriptions")?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", summary(&report));
    }
    Ok(())
}

fn ids(ids: &[String]) -> String {
    if ids.is_empty() {
        "-".into()
    } else {
        ids.join(", ")
    }
}

/// The report for people: one line of counts, then the ids of each kind of change.
fn summary(r: &ReconcileReport) -> String {
    let verb = if r.dry_run { "would be " } else { "" };
    let mut out = format!(
        "{}listed={} pages={} created={} updated={} unchanged={} newer_locally={} unlinked={} missing_in_stripe={}\n",
        if r.dry_run { "dry run: " } else { "" },
        r.listed,
        r.pages,
        r.created.len(),
        r.updated.len(),
        r.unchanged,
        r.newer_locally.len(),
        r.unlinked.len(),
        r.missing_in_stripe.len(),
    );
    out.push_str(&format!("{verb}created: {}\n", ids(&r.created)));
    out.push_str(&format!("{verb}updated: {}\n", ids(&r.updated)));
    if !r.newer_locally.is_empty() {
        out.push_str(&format!(
            "left (newer locally): {}\n",
            ids(&r.newer_locally)
        ));
    }
    if !r.unlinked.is_empty() {
        out.push_str(&format!("not linked to a company: {}\n", ids(&r.unlinked)));
    }
    if !r.missing_in_stripe.is_empty() {
        out.push_str(&format!(
            "stored but not in Stripe: {}\n",
            ids(&r.missing_in_stripe)
        ));
    }
    out
}
