//! Renewals of a locked card's credential (specs/issuer-personalization.md §6): each state
//! change a compare-and-set, the new credential and its audit entry recorded with the state
//! that names it, and the replaced credential revoked in the same transaction that records the
//! new one as issued.

use super::{Audit, PERSO_COLS, PersoRow, Store, audit_in};
use crate::error::Result;

/// A renewal as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RenewalRow {
    /// Id.
    pub id: String,
    /// Agency.
    pub agency: String,
    /// Request key.
    pub request_key: String,
    /// The credential it replaces.
    pub replaces: String,
    /// Card serial.
    pub serial: Vec<u8>,
    /// `started`, `index_allocated`, `minted` or `issued`.
    pub state: String,
    /// Status list, once an index is allocated.
    pub list: Option<String>,
    /// Status index, once allocated.
    pub idx: Option<i64>,
    /// The new credential's id, once minted.
    pub credential: Option<String>,
}

const RENEWAL_COLS: &str =
    "id, agency, request_key, replaces, serial, state, list, idx, credential";

/// Token Status List values.
const REVOKED: i64 = 1;
const SUSPENDED: i64 = 2;

impl Store {
    /// The finished personalization of a card of the agency (it holds the checked card key).
    pub async fn issued_card(&self, agency: &str, serial: &[u8]) -> Result<Option<PersoRow>> {
        let row = sqlx::query(&format!(
            "SELECT {PERSO_COLS} FROM personalizations \
             WHERE agency = $1 AND serial = $2 AND state = 'issued'"
        ))
        .bind(agency)
        .bind(serial)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(sqlx::FromRow::from_row).transpose()?)
    }

    /// A renewal of the agency by request key.
    pub async fn renewal_by_request(
        &self,
        agency: &str,
        request_key: &str,
    ) -> Result<Option<RenewalRow>> {
        let row = sqlx::query(&format!(
            "SELECT {RENEWAL_COLS} FROM renewals WHERE agency = $1 AND request_key = $2"
        ))
        .bind(agency)
        .bind(request_key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(sqlx::FromRow::from_row).transpose()?)
    }

    /// Start a renewal (unique per request key and per replaced credential).
    pub async fn insert_renewal(&self, r: &RenewalRow, audit: &Audit<'_>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO renewals (id, agency, request_key, replaces, serial, state, created, \
             updated) VALUES ($1, $2, $3, $4, $5, $6, $7, $7)",
        )
        .bind(&r.id)
        .bind(&r.agency)
        .bind(&r.request_key)
        .bind(&r.replaces)
        .bind(&r.serial)
        .bind(&r.state)
        .bind(audit.at)
        .execute(&mut *tx)
        .await?;
        audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The card holds the new credential: in one transaction the renewal and the new credential
    /// become `issued` and the replaced credential is revoked (a pending change under the
    /// renewal's request key). If the replaced credential was suspended or revoked meanwhile
    /// (a lost card reported during the renewal), the new one takes that status, so a renewal
    /// never undoes a status decision.
    pub async fn record_renewed(&self, r: &RenewalRow, audit: &Audit<'_>) -> Result<bool> {
        let Some(new) = &r.credential else {
            return Ok(false);
        };
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE renewals SET state = 'issued', updated = $1 WHERE id = $2 AND state = 'minted'",
        )
        .bind(audit.at)
        .bind(&r.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(false);
        }
        sqlx::query("UPDATE credentials SET state = 'issued' WHERE id = $1")
            .bind(new)
            .execute(&mut *tx)
            .await?;
        let superseded = sqlx::query(
            "UPDATE credentials SET wanted = $1 WHERE id = $2 AND agency = $3 AND wanted = 0",
        )
        .bind(REVOKED)
        .bind(&r.replaces)
        .bind(&r.agency)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let mut changes: Vec<(&str, i64)> = Vec::new();
        if superseded == 1 {
            changes.push((&r.replaces, REVOKED));
        } else {
            let old: i64 = sqlx::query_scalar("SELECT wanted FROM credentials WHERE id = $1")
                .bind(&r.replaces)
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query("UPDATE credentials SET wanted = $1 WHERE id = $2")
                .bind(old)
                .bind(new)
                .execute(&mut *tx)
                .await?;
            changes.push((new, old));
            if old == SUSPENDED {
                sqlx::query("UPDATE credentials SET wanted = $1 WHERE id = $2")
                    .bind(REVOKED)
                    .bind(&r.replaces)
                    .execute(&mut *tx)
                    .await?;
                changes.push((&r.replaces, REVOKED));
            }
        }
        for (credential, value) in changes {
            sqlx::query(
                "INSERT INTO status_changes \
                 (agency, request_key, credential, list, idx, value, state, created) \
                 SELECT agency, $1, id, list, idx, $2, 'pending', $3 FROM credentials \
                 WHERE id = $4",
            )
            .bind(&r.request_key)
            .bind(value)
            .bind(audit.at)
            .bind(credential)
            .execute(&mut *tx)
            .await?;
        }
        audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }
}
