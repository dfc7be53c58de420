//! Policies in the catalog: add, replace, remove, list, and "run now". The
//! CLI and the HTTP handlers both call these; nothing here knows HTTP.

use super::policy::{Policy, PolicyError, PolicySpec};
use crate::catalog::{Catalog, CatalogError, JobKind, JobReason, JobRow, NewJob, PolicyRow};
use crate::util::time::UtcTime;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    Catalog(#[from] CatalogError),
}

/// A stored policy as shown: its document plus what the scheduler knows.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyView {
    #[serde(flatten)]
    pub spec: PolicySpec,
    /// The schedule's normalized form.
    pub schedule_normalized: String,
    pub created_at: UtcTime,
    pub updated_at: UtcTime,
    /// The next run, UTC (none when disabled or the schedule never elapses).
    pub next_run: Option<String>,
}

/// Reads a stored row back into a checked policy. The row was checked
/// when stored; a failure here is a damaged or foreign catalog.
pub fn parse_row(row: &PolicyRow) -> Result<Policy, StoreError> {
    let spec = PolicySpec::from_json(row.spec.as_bytes())
        .map_err(|e| CatalogError::Invalid(format!("policy {}: {e}", row.name)))?;
    spec.check_stored().map_err(|e| CatalogError::Invalid(format!("policy {}: {e}", row.name)).into())
}

fn view(row: &PolicyRow) -> Result<PolicyView, StoreError> {
    let p = parse_row(row)?;
    let local = jiff::tz::TimeZone::system();
    let next_run = row
        .enabled
        .then(|| p.schedule.next_after(super::anchor_ts(row.anchor), &local))
        .flatten()
        .map(|t| t.to_string());
    Ok(PolicyView {
        schedule_normalized: p.schedule.to_string(),
        spec: p.spec,
        created_at: row.created_at,
        updated_at: row.updated_at,
        next_run,
    })
}

fn to_row(p: &Policy, now: UtcTime) -> PolicyRow {
    PolicyRow {
        name: p.spec.name.clone(),
        // Serializing a plain struct of strings and numbers cannot fail.
        spec: serde_json::to_string(&p.spec).unwrap_or_default(),
        enabled: p.spec.enabled,
        created_at: now,
        updated_at: now,
        anchor: now,
        verify_anchor: now,
    }
}

/// Stores a new policy. Its first run is its schedule's first elapse after
/// `now`.
pub async fn add(cat: &Catalog, p: &Policy, now: UtcTime) -> Result<PolicyView, StoreError> {
    let row = to_row(p, now);
    cat.insert_policy(&row, &p.spec.vm_names()).await?;
    view(&row)
}

/// Replaces policy `name` (the document's name must be the same). A changed
/// schedule or a policy enabled again starts counting from `now`, so edits
/// never trigger a burst of runs.
pub async fn replace(cat: &Catalog, name: &str, p: &Policy, now: UtcTime) -> Result<PolicyView, StoreError> {
    if p.spec.name != name {
        return Err(PolicyError::Invalid(format!(
            "the document names policy {}, the request {name}: renaming is not supported (add a new one)",
            p.spec.name
        ))
        .into());
    }
    let old = cat.policy(name).await?;
    let before = parse_row(&old)?;
    let mut row = to_row(p, now);
    row.created_at = old.created_at;
    if before.spec.schedule == p.spec.schedule && (old.enabled || !p.spec.enabled) {
        row.anchor = old.anchor;
    }
    if before.spec.verify_schedule == p.spec.verify_schedule && (old.enabled || !p.spec.enabled) {
        row.verify_anchor = old.verify_anchor;
    }
    cat.update_policy(&row, &p.spec.vm_names()).await?;
    view(&row)
}

pub async fn remove(cat: &Catalog, name: &str) -> Result<(), StoreError> {
    Ok(cat.delete_policy(name).await?)
}

pub async fn list(cat: &Catalog) -> Result<Vec<PolicyView>, StoreError> {
    cat.policies().await?.iter().map(view).collect()
}

pub async fn show(cat: &Catalog, name: &str) -> Result<PolicyView, StoreError> {
    view(&cat.policy(name).await?)
}

/// Queues a backup of every VM of policy `name` now (disabled policies
/// too: an admin asked). A VM whose run is still queued or running gets a
/// `skipped` job instead. Returns the jobs.
pub async fn run_now(cat: &Catalog, name: &str, now: UtcTime) -> Result<Vec<JobRow>, StoreError> {
    let p = parse_row(&cat.policy(name).await?)?;
    enqueue_all(cat, &p, JobKind::Backup, JobReason::Manual, now).await
}

/// One job per VM of `p`.
pub async fn enqueue_all(
    cat: &Catalog,
    p: &Policy,
    kind: JobKind,
    reason: JobReason,
    now: UtcTime,
) -> Result<Vec<JobRow>, StoreError> {
    let mut jobs = Vec::new();
    for vm in &p.spec.vms {
        let j = NewJob {
            policy: Some(p.spec.name.clone()),
            vm_name: vm.vm_name.clone(),
            kind,
            reason,
            attempt: 1,
            not_before: now,
        };
        jobs.push(cat.enqueue(&j).await?);
    }
    Ok(jobs)
}
