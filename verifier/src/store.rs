//! The kiosk's SQLite database (specs/kiosk-storage.md): the trust snapshot, replaced whole in
//! one transaction or not at all, and a log of syncs that holds heights, sizes and the kind of a
//! refusal, nothing else.

use std::path::Path;

use civis_core::chain::light::KioskSnapshot;
use civis_core::chain::state::Genesis;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions};
use sqlx::{Row, SqlitePool};

use crate::sync::SyncError;

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

    /// Log a sync.
    pub async fn record(&self, e: &SyncEntry) -> Result<(), SyncError> {
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
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
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
