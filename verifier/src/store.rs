//! The kiosk's SQLite database (specs/kiosk-storage.md): the trust snapshot, replaced whole in
//! one transaction or not at all, and a log of syncs that holds heights, sizes and the kind of a
//! refusal, nothing else.

use std::path::Path;

use civis_core::chain::light::KioskSnapshot;
use civis_core::chain::state::Genesis;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};

use crate::sync::SyncError;

/// Sync attempts the log keeps.
pub const SYNC_LOG_ROWS: i64 = 1000;

/// The kiosk's database.
#[derive(Debug, Clone)]
pub struct KioskStore {
    pub(crate) pool: SqlitePool,
}

/// The stored snapshot and when it was synced.
#[derive(Debug)]
pub struct Stored {
    /// The snapshot.
    pub snapshot: KioskSnapshot,
    /// When the kiosk last advanced it (Unix seconds).
    pub synced_at: i64,
}

/// One sync, as the log keeps it.
#[derive(Debug, Clone)]
pub struct SyncEntry {
    /// When (Unix seconds).
    pub at: i64,
    /// Height before.
    pub from: Option<u64>,
    /// Height after (advanced syncs).
    pub height: Option<u64>,
    /// Bundle size (0 when none arrived).
    pub bundle_bytes: usize,
    /// `advanced`, `refused` or `unreachable`.
    pub outcome: &'static str,
    /// The kind of refusal or failure (never the bundle's content).
    pub reason: Option<String>,
}

pub(crate) fn db(e: impl std::fmt::Display) -> SyncError {
    SyncError::Store(e.to_string())
}

fn height(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl KioskStore {
    /// Open (creating if missing) the database at `path` and migrate it.
    pub async fn open(path: &Path) -> Result<Self, SyncError> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal);
        // One writer: the kiosk's syncs never overlap.
        // Errors name the file: "unable to open database file" alone does not say which.
        let at = |e: &dyn std::fmt::Display| SyncError::Store(format!("{}: {e}", path.display()));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .map_err(|e| at(&e))?;
        sqlx::migrate!("./migrations")
            .run(&pool)
            .await
            .map_err(|e| at(&e))?;
        Ok(Self { pool })
    }

    /// The stored snapshot, checked against the pinned `genesis` (a database made for another
    /// chain is an error, never a silent fresh start).
    pub async fn snapshot(&self, genesis: &Genesis) -> Result<Option<Stored>, SyncError> {
        let row = sqlx::query("SELECT bytes, synced_at FROM snapshot WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let bytes: Vec<u8> = row.try_get(0).map_err(db)?;
        let synced_at: i64 = row.try_get(1).map_err(db)?;
        let snapshot = KioskSnapshot::decode(genesis, &bytes).map_err(|e| SyncError::Snapshot {
            path: "kiosk database".into(),
            message: e.to_string(),
        })?;
        Ok(Some(Stored {
            snapshot,
            synced_at,
        }))
    }

    /// The stored snapshot's height without decoding it (a sync asks the registry first and
    /// decodes only once a bundle is in); a database made for another chain is an error.
    pub async fn stored_height(&self, genesis_digest: &[u8]) -> Result<Option<u64>, SyncError> {
        let row = sqlx::query("SELECT genesis, height FROM snapshot WHERE id = 1")
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let stored: Vec<u8> = row.try_get(0).map_err(db)?;
        if stored != genesis_digest {
            return Err(SyncError::Snapshot {
                path: "kiosk database".into(),
                message: "made for another chain (genesis digest differs)".into(),
            });
        }
        let h: i64 = row.try_get(1).map_err(db)?;
        Ok(Some(u64::try_from(h).unwrap_or(0)))
    }

    /// Replace the snapshot, whole, in one transaction.
    pub async fn save(&self, snap: &KioskSnapshot, synced_at: i64) -> Result<(), SyncError> {
        let h = snap.header();
        sqlx::query(
            "INSERT INTO snapshot (id, genesis, height, header_time, synced_at, bytes) \
             VALUES (1, $1, $2, $3, $4, $5) ON CONFLICT (id) DO UPDATE SET \
             genesis = excluded.genesis, height = excluded.height, \
             header_time = excluded.header_time, synced_at = excluded.synced_at, \
             bytes = excluded.bytes",
        )
        .bind(snap.genesis_digest().to_vec())
        .bind(height(h.height))
        .bind(h.time)
        .bind(synced_at)
        .bind(snap.encode())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Count `outcome`: its verdict and, unless accepted, its reason code (nothing about the
    /// resident).
    pub async fn record_outcome(
        &self,
        at: i64,
        policy: &str,
        outcome: &crate::outcome::Outcome,
        snapshot_height: Option<u64>,
    ) -> Result<(), SyncError> {
        let reason = (outcome.kind != crate::outcome::Kind::Accept).then(|| outcome.reason.code());
        self.record_verdict(at, policy, outcome.kind.name(), reason, snapshot_height)
            .await
    }

    /// Log a sync, keeping the last [`SYNC_LOG_ROWS`] (a kiosk offline for months tries every
    /// minute: the log must not grow with it).
    pub async fn record(&self, e: &SyncEntry) -> Result<(), SyncError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(
            "INSERT INTO syncs (at, from_height, height, bundle_bytes, outcome, reason) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(e.at)
        .bind(e.from.map(height))
        .bind(e.height.map(height))
        .bind(i64::try_from(e.bundle_bytes).unwrap_or(i64::MAX))
        .bind(e.outcome)
        .bind(&e.reason)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        sqlx::query("DELETE FROM syncs WHERE id <= last_insert_rowid() - $1")
            .bind(SYNC_LOG_ROWS)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    /// The last `n` syncs, newest first.
    pub async fn syncs(&self, n: u32) -> Result<Vec<SyncEntry>, SyncError> {
        let rows = sqlx::query(
            "SELECT at, from_height, height, bundle_bytes, outcome, reason FROM syncs \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(i64::from(n))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                let outcome: String = r.try_get(4).map_err(db)?;
                Ok(SyncEntry {
                    at: r.try_get(0).map_err(db)?,
                    from: r
                        .try_get::<Option<i64>, _>(1)
                        .map_err(db)?
                        .and_then(|v| u64::try_from(v).ok()),
                    height: r
                        .try_get::<Option<i64>, _>(2)
                        .map_err(db)?
                        .and_then(|v| u64::try_from(v).ok()),
                    bundle_bytes: usize::try_from(r.try_get::<i64, _>(3).map_err(db)?).unwrap_or(0),
                    outcome: match outcome.as_str() {
                        "advanced" => "advanced",
                        "refused" => "refused",
                        _ => "unreachable",
                    },
                    reason: r.try_get(5).map_err(db)?,
                })
            })
            .collect()
    }

    /// Log a verdict (never anything about the resident).
    pub async fn record_verdict(
        &self,
        at: i64,
        policy: &str,
        verdict: &str,
        reason: Option<&str>,
        snapshot_height: Option<u64>,
    ) -> Result<(), SyncError> {
        sqlx::query(
            "INSERT INTO verdicts (at, policy, verdict, reason, snapshot_height) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(at)
        .bind(policy)
        .bind(verdict)
        .bind(reason)
        .bind(snapshot_height.map(height))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    /// Verdict counts: `(verdict, count)`, most frequent first.
    pub async fn verdict_counts(&self) -> Result<Vec<(String, i64)>, SyncError> {
        let rows = sqlx::query(
            "SELECT verdict, COUNT(*) AS n FROM verdicts GROUP BY verdict ORDER BY n DESC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| Ok((r.try_get(0).map_err(db)?, r.try_get(1).map_err(db)?)))
            .collect()
    }

    /// Close the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn the_sync_log_keeps_its_newest_rows_only() {
        let dir = std::env::temp_dir().join(format!("civis-sync-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let store = KioskStore::open(&dir.join("kiosk.db")).await.unwrap();
        let extra = 25;
        for at in 0..SYNC_LOG_ROWS + extra {
            let e = SyncEntry {
                at,
                from: None,
                height: None,
                bundle_bytes: 0,
                outcome: "unreachable",
                reason: Some("no registry".into()),
            };
            store.record(&e).await.unwrap();
        }
        let kept = store.syncs(u32::MAX).await.unwrap();
        assert_eq!(kept.len() as i64, SYNC_LOG_ROWS);
        assert_eq!(kept.first().unwrap().at, SYNC_LOG_ROWS + extra - 1);
        assert_eq!(kept.last().unwrap().at, extra);
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
