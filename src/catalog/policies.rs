//! Protection policies: their JSON documents, which VM belongs to which
//! policy, and the scheduler's anchors.

use super::queries::time;
use super::*;
use sqlx::sqlite::SqliteRow;

fn policy(r: &SqliteRow) -> Result<PolicyRow> {
    Ok(PolicyRow {
        name: r.try_get("name")?,
        spec: r.try_get("spec")?,
        enabled: r.try_get("enabled")?,
        created_at: time(r, "created_at")?,
        updated_at: time(r, "updated_at")?,
        anchor: time(r, "anchor")?,
        verify_anchor: time(r, "verify_anchor")?,
    })
}

const POLICY_COLUMNS: &str = "name, spec, enabled, created_at, updated_at, anchor, verify_anchor";

impl Catalog {
    /// Every policy, by name.
    pub async fn policies(&self) -> Result<Vec<PolicyRow>> {
        let sql = format!("SELECT {POLICY_COLUMNS} FROM policies ORDER BY name");
        sqlx::query(&sql).fetch_all(&self.pool).await?.iter().map(policy).collect()
    }

    pub async fn policy(&self, name: &str) -> Result<PolicyRow> {
        let sql = format!("SELECT {POLICY_COLUMNS} FROM policies WHERE name = ?");
        let row = sqlx::query(&sql).bind(name).fetch_optional(&self.pool).await?;
        row.as_ref().map(policy).transpose()?.ok_or_else(|| CatalogError::NotFound(format!("no policy named {name}")))
    }

    /// Stores a new policy `row` covering `vms`. A taken name or a VM that
    /// belongs to another policy is a conflict.
    pub async fn insert_policy(&self, row: &PolicyRow, vms: &[String]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let taken =
            sqlx::query("SELECT 1 FROM policies WHERE name = ?").bind(&row.name).fetch_optional(&mut *tx).await?;
        if taken.is_some() {
            return Err(CatalogError::Conflict(format!("a policy named {} exists already", row.name)));
        }
        sqlx::query(&format!("INSERT INTO policies ({POLICY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"))
            .bind(&row.name)
            .bind(&row.spec)
            .bind(row.enabled)
            .bind(row.created_at.to_string())
            .bind(row.updated_at.to_string())
            .bind(row.anchor.to_string())
            .bind(row.verify_anchor.to_string())
            .execute(&mut *tx)
            .await?;
        claim_vms(&mut tx, &row.name, vms).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replaces policy `row.name`'s document, VMs, enabled flag and anchors
    /// (its creation time stays).
    pub async fn update_policy(&self, row: &PolicyRow, vms: &[String]) -> Result<()> {
        let mut tx = self.write_tx().await?;
        let r = sqlx::query(
            "UPDATE policies SET spec = ?, enabled = ?, updated_at = ?, anchor = ?, verify_anchor = ? WHERE name = ?",
        )
        .bind(&row.spec)
        .bind(row.enabled)
        .bind(row.updated_at.to_string())
        .bind(row.anchor.to_string())
        .bind(row.verify_anchor.to_string())
        .bind(&row.name)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(CatalogError::NotFound(format!("no policy named {}", row.name)));
        }
        sqlx::query("DELETE FROM policy_vms WHERE policy = ?").bind(&row.name).execute(&mut *tx).await?;
        claim_vms(&mut tx, &row.name, vms).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Deletes a policy; its job history stays.
    pub async fn delete_policy(&self, name: &str) -> Result<()> {
        let r = sqlx::query("DELETE FROM policies WHERE name = ?").bind(name).execute(&self.pool).await?;
        if r.rows_affected() == 0 {
            return Err(CatalogError::NotFound(format!("no policy named {name}")));
        }
        Ok(())
    }

    /// Moves a policy's backup anchor (`verify` false) or verify anchor.
    pub async fn set_anchor(&self, name: &str, verify: bool, anchor: UtcTime) -> Result<()> {
        let sql = if verify {
            "UPDATE policies SET verify_anchor = ? WHERE name = ?"
        } else {
            "UPDATE policies SET anchor = ? WHERE name = ?"
        };
        sqlx::query(sql).bind(anchor.to_string()).bind(name).execute(&self.pool).await?;
        Ok(())
    }
}

/// Records that `vms` belong to `policy`, refusing a VM another policy has.
async fn claim_vms(tx: &mut sqlx::SqliteConnection, policy: &str, vms: &[String]) -> Result<()> {
    for vm in vms {
        let owner: Option<String> = sqlx::query_scalar("SELECT policy FROM policy_vms WHERE vm_name = ?")
            .bind(vm)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(owner) = owner {
            return Err(CatalogError::Conflict(format!("VM {vm} belongs to policy {owner} already")));
        }
        sqlx::query("INSERT INTO policy_vms (vm_name, policy) VALUES (?, ?)")
            .bind(vm)
            .bind(policy)
            .execute(&mut *tx)
            .await?;
    }
    Ok(())
}
