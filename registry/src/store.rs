//! Storage of finalized blocks and state.
//!
//! A validator commits each finalized block together with the state entries it changed, in one
//! database transaction: after a crash the database holds the last committed block and exactly
//! its state, never part of a block. Committing a height again with the same block is a no-op
//! (consensus redelivers after a restart); a different block at a stored height, or a gap, is
//! refused. On start the state is rebuilt from the stored entries and checked against the last
//! header's roots.

use std::collections::BTreeMap;
use std::sync::Mutex;

use civis_core::chain::block::{Block, Header};
use civis_core::chain::light::EpochChange;
use civis_core::chain::smt::Hash;
use civis_core::chain::state::{Entry, Genesis, State};
use civis_core::chain::table::Table;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};
use thiserror::Error;

/// Storage errors.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A different block is already committed at this height.
    #[error("a different block is committed at height {0}")]
    Conflict(u64),
    /// The block does not follow the last committed height.
    #[error("height {got} does not follow the committed height {have}")]
    Gap {
        /// Last committed height (0 = genesis).
        have: u64,
        /// The block's height.
        got: u64,
    },
    /// Stored data that does not decode or does not reproduce its header's roots.
    #[error("stored state is corrupt: {0}")]
    Corrupt(String),
    /// A fault injected by a test (`FaultPoint`).
    #[error("injected fault at {0:?}")]
    Injected(FaultPoint),
    /// An unsupported database URL.
    #[error("unsupported database URL (use sqlite:… or postgres://…)")]
    UnsupportedUrl,
}

/// Where a test may make a commit fail, to check that no partial block survives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultPoint {
    /// Before the database transaction starts.
    BeforeTransaction,
    /// Inside it, after the block row and before the state entries.
    AfterBlockRow,
    /// Inside it, after the state entries and before commit.
    BeforeCommit,
    /// After the commit (the block is durable; the process has not yet moved on).
    AfterCommit,
}

impl std::str::FromStr for FaultPoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "before-transaction" => Self::BeforeTransaction,
            "after-block-row" => Self::AfterBlockRow,
            "before-commit" => Self::BeforeCommit,
            "after-commit" => Self::AfterCommit,
            other => {
                return Err(format!(
                    "unknown fault point {other:?} (before-transaction, after-block-row, \
                     before-commit, after-commit)"
                ));
            }
        })
    }
}

/// A finalized block with what it changed.
#[derive(Debug, Clone)]
pub struct Commit {
    /// The block.
    pub block: Block,
    /// Its finalization certificate, when it was finalized directly.
    pub finalization: Option<Vec<u8>>,
    /// Kiosk-tree entries the block wrote.
    pub kiosk: Vec<Entry>,
    /// The value each of `kiosk` replaced (`None`: the entry is new), kept so that a node can
    /// rebuild the kiosk tree of an older height for a delta sync bundle.
    pub kiosk_before: Vec<Option<Vec<u8>>>,
    /// Public-tree entries the block wrote.
    pub public: Vec<Entry>,
    /// The validator-set change this boundary block certifies (an encoded
    /// [`EpochChange`]), kept so that sync bundles can carry it.
    pub epoch_change: Option<Vec<u8>>,
}

impl Commit {
    /// The commit for `block`, given the state before it and the state `block::build` or
    /// `block::execute` produced from it (whose trees record the paths the block wrote).
    pub fn new(block: Block, finalization: Option<Vec<u8>>, before: &State, after: &State) -> Self {
        let (kiosk, kiosk_before) = after
            .kiosk_tree()
            .touched_since(before.kiosk_tree())
            .into_iter()
            .unzip();
        let public = after
            .public_tree()
            .touched_since(before.public_tree())
            .into_iter()
            .map(|(e, _)| e)
            .collect();
        let epoch_change = finalization
            .as_deref()
            .and_then(|f| EpochChange::of_block(&block.header, f, before, after))
            .map(|c| c.encode());
        Self {
            kiosk,
            kiosk_before,
            public,
            block,
            finalization,
            epoch_change,
        }
    }
}

/// One kiosk-tree write to undo: `(table, key, value before the write)`.
pub type Undo = (Table, Vec<u8>, Option<Vec<u8>>);

/// How a table is stored in the `tag` columns: its one-byte code.
fn table_column(t: Table) -> Vec<u8> {
    vec![t.code()]
}

/// The table a stored `tag` column names.
fn table_of(column: &[u8]) -> Result<Table, StoreError> {
    match column {
        [code] => Table::from_code(*code),
        _ => None,
    }
    .ok_or_else(|| StoreError::Corrupt("a stored entry names an unknown table".into()))
}

/// A stored block with its finalization certificate, if it was finalized directly.
pub type StoredBlock = (Block, Option<Vec<u8>>);

/// What a restarted validator resumes from.
#[derive(Debug, Clone)]
pub struct Resumed {
    /// The state after the last committed block.
    pub state: State,
    /// That block's header (the genesis header if none).
    pub head: Header,
}

const KIOSK: i16 = 0;
const PUBLIC: i16 = 1;

/// Persistent storage of the chain.
pub trait Store {
    /// Commit a finalized block and its state changes atomically.
    fn commit(&self, c: &Commit) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The last committed height (0 when only genesis).
    fn height(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// The block at `height`.
    fn block(
        &self,
        height: u64,
    ) -> impl Future<Output = Result<Option<StoredBlock>, StoreError>> + Send;
    /// The highest block that has its own finalization certificate.
    fn latest_certified(
        &self,
        at_most: u64,
    ) -> impl Future<Output = Result<Option<(Block, Vec<u8>)>, StoreError>> + Send;
    /// The kiosk-tree writes of blocks in `(above, upto]`, newest block first: `(height, entry
    /// replaced with its old value or None)`. Undoing them on the tree at `upto` yields the
    /// kiosk tree at `above`.
    fn kiosk_undo(
        &self,
        above: u64,
        upto: u64,
    ) -> impl Future<Output = Result<Vec<(u64, Undo)>, StoreError>> + Send;
    /// The validator-set changes certified at heights in `(after, upto]`, oldest first.
    fn epoch_changes(
        &self,
        after: u64,
        upto: u64,
    ) -> impl Future<Output = Result<Vec<EpochChange>, StoreError>> + Send;
    /// Rebuild the state from storage and check it against the last header.
    fn resume(&self, genesis: &Genesis)
    -> impl Future<Output = Result<Resumed, StoreError>> + Send;
}

/// A shared store is a store (the simulation keeps a validator's store across its restarts).
impl<T: Store + Send + Sync> Store for std::sync::Arc<T> {
    fn commit(&self, c: &Commit) -> impl Future<Output = Result<(), StoreError>> + Send {
        T::commit(self, c)
    }
    fn height(&self) -> impl Future<Output = Result<u64, StoreError>> + Send {
        T::height(self)
    }
    fn block(
        &self,
        height: u64,
    ) -> impl Future<Output = Result<Option<StoredBlock>, StoreError>> + Send {
        T::block(self, height)
    }
    fn latest_certified(
        &self,
        at_most: u64,
    ) -> impl Future<Output = Result<Option<(Block, Vec<u8>)>, StoreError>> + Send {
        T::latest_certified(self, at_most)
    }
    fn kiosk_undo(
        &self,
        above: u64,
        upto: u64,
    ) -> impl Future<Output = Result<Vec<(u64, Undo)>, StoreError>> + Send {
        T::kiosk_undo(self, above, upto)
    }
    fn epoch_changes(
        &self,
        after: u64,
        upto: u64,
    ) -> impl Future<Output = Result<Vec<EpochChange>, StoreError>> + Send {
        T::epoch_changes(self, after, upto)
    }
    fn resume(
        &self,
        genesis: &Genesis,
    ) -> impl Future<Output = Result<Resumed, StoreError>> + Send {
        T::resume(self, genesis)
    }
}

fn check_resumed(
    genesis: &Genesis,
    head: Option<Header>,
    kiosk: Vec<Entry>,
    public: Vec<Entry>,
) -> Result<Resumed, StoreError> {
    let genesis_state = State::genesis(genesis).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let Some(head) = head else {
        return Ok(Resumed {
            head: Header::genesis(&genesis_state, genesis.time),
            state: genesis_state,
        });
    };
    // Entries are stored only when a block writes them; genesis entries fill the rest.
    let merge = |genesis_tree: &civis_core::chain::state::Tree, stored: Vec<Entry>| {
        let mut all: BTreeMap<Hash, Entry> = genesis_tree
            .entries()
            .map(|e| (e.path(), e.clone()))
            .collect();
        for e in stored {
            all.insert(e.path(), e);
        }
        all.into_values().collect::<Vec<_>>()
    };
    let state = State::restore(
        genesis,
        merge(genesis_state.kiosk_tree(), kiosk),
        merge(genesis_state.public_tree(), public),
    )
    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
    if state.kiosk_root() != head.kiosk_root || state.public_root() != head.public_root {
        return Err(StoreError::Corrupt(format!(
            "state does not match the header at height {}",
            head.height
        )));
    }
    Ok(Resumed { state, head })
}

/// The in-memory twin, for the deterministic simulation and unit tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<MemoryInner>,
    fault: Mutex<Option<FaultPoint>>,
}

#[derive(Debug, Default)]
struct MemoryInner {
    blocks: BTreeMap<u64, StoredBlock>,
    entries: BTreeMap<(i16, Hash), Entry>,
    kiosk_history: BTreeMap<u64, Vec<Undo>>,
    epoch_changes: BTreeMap<u64, Vec<u8>>,
}

impl MemoryStore {
    /// Make the next commit fail at `point`.
    pub fn inject(&self, point: FaultPoint) {
        if let Ok(mut f) = self.fault.lock() {
            *f = Some(point);
        }
    }

    fn take_fault(&self) -> Option<FaultPoint> {
        self.fault.lock().ok().and_then(|mut f| f.take())
    }
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Corrupt("memory store lock poisoned".into())
}

impl Store for MemoryStore {
    async fn commit(&self, c: &Commit) -> Result<(), StoreError> {
        let fault = self.take_fault();
        if fault == Some(FaultPoint::BeforeTransaction) {
            return Err(StoreError::Injected(FaultPoint::BeforeTransaction));
        }
        let mut g = self.inner.lock().map_err(poisoned)?;
        let h = c.block.header.height;
        if let Some((existing, _)) = g.blocks.get(&h) {
            return if existing.header.digest() == c.block.header.digest() {
                Ok(())
            } else {
                Err(StoreError::Conflict(h))
            };
        }
        let have = g.blocks.keys().next_back().copied().unwrap_or(0);
        if h != have.saturating_add(1) {
            return Err(StoreError::Gap { have, got: h });
        }
        // The "transaction" is applied under the lock only after every fault point has passed,
        // so an injected failure leaves nothing behind, as a rolled-back SQL transaction would.
        for point in [FaultPoint::AfterBlockRow, FaultPoint::BeforeCommit] {
            if fault == Some(point) {
                return Err(StoreError::Injected(point));
            }
        }
        g.blocks
            .insert(h, (c.block.clone(), c.finalization.clone()));
        for (tree, entries) in [(KIOSK, &c.kiosk), (PUBLIC, &c.public)] {
            for e in entries {
                g.entries.insert((tree, e.path()), e.clone());
            }
        }
        g.kiosk_history.insert(
            h,
            c.kiosk
                .iter()
                .zip(&c.kiosk_before)
                .map(|(e, old)| (e.table, e.key.clone(), old.clone()))
                .collect(),
        );
        if let Some(change) = &c.epoch_change {
            g.epoch_changes.insert(h, change.clone());
        }
        drop(g);
        if fault == Some(FaultPoint::AfterCommit) {
            return Err(StoreError::Injected(FaultPoint::AfterCommit));
        }
        Ok(())
    }

    async fn height(&self) -> Result<u64, StoreError> {
        let g = self.inner.lock().map_err(poisoned)?;
        Ok(g.blocks.keys().next_back().copied().unwrap_or(0))
    }

    async fn block(&self, height: u64) -> Result<Option<StoredBlock>, StoreError> {
        let g = self.inner.lock().map_err(poisoned)?;
        Ok(g.blocks.get(&height).cloned())
    }

    async fn latest_certified(&self, at_most: u64) -> Result<Option<(Block, Vec<u8>)>, StoreError> {
        let g = self.inner.lock().map_err(poisoned)?;
        Ok(g.blocks
            .range(..=at_most)
            .rev()
            .find_map(|(_, (b, f))| f.as_ref().map(|f| (b.clone(), f.clone()))))
    }

    async fn kiosk_undo(&self, above: u64, upto: u64) -> Result<Vec<(u64, Undo)>, StoreError> {
        let g = self.inner.lock().map_err(poisoned)?;
        if upto <= above {
            return Ok(Vec::new());
        }
        Ok(g.kiosk_history
            .range(above.saturating_add(1)..=upto)
            .rev()
            .flat_map(|(h, undos)| undos.iter().map(|u| (*h, u.clone())))
            .collect())
    }

    async fn epoch_changes(&self, after: u64, upto: u64) -> Result<Vec<EpochChange>, StoreError> {
        let g = self.inner.lock().map_err(poisoned)?;
        g.epoch_changes
            .range(after.saturating_add(1)..=upto)
            .map(|(_, c)| decode_change(c))
            .collect()
    }

    async fn resume(&self, genesis: &Genesis) -> Result<Resumed, StoreError> {
        let (head, kiosk, public) = {
            let g = self.inner.lock().map_err(poisoned)?;
            let head = g.blocks.values().next_back().map(|(b, _)| b.header.clone());
            let pick = |t: i16| {
                g.entries
                    .iter()
                    .filter(|((tree, _), _)| *tree == t)
                    .map(|(_, e)| e.clone())
                    .collect::<Vec<_>>()
            };
            (head, pick(KIOSK), pick(PUBLIC))
        };
        check_resumed(genesis, head, kiosk, public)
    }
}

/// SQLite or PostgreSQL through sqlx.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    fault: std::sync::Arc<Mutex<Option<FaultPoint>>>,
    crash: Option<(FaultPoint, u64)>,
}

impl SqlStore {
    /// Connect to `sqlite:PATH` (created if missing) or `postgres://…` and run the migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let url = if url.starts_with("sqlite:") {
            if url.contains('?') {
                url.to_owned()
            } else {
                format!("{url}?mode=rwc")
            }
        } else if postgres {
            url.to_owned()
        } else {
            return Err(StoreError::UnsupportedUrl);
        };
        // SQLite serializes writers anyway; one connection avoids busy errors.
        let pool = AnyPoolOptions::new()
            .max_connections(if postgres { 8 } else { 1 })
            .connect(&url)
            .await?;
        if postgres {
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
        } else {
            sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        }
        Ok(Self {
            pool,
            fault: std::sync::Arc::default(),
            crash: None,
        })
    }

    /// Make the next commit fail at `point`.
    pub fn inject(&self, point: FaultPoint) {
        if let Ok(mut f) = self.fault.lock() {
            *f = Some(point);
        }
    }

    /// Crash-test hook: abort the whole process at `point` while committing `height`, as a power
    /// cut would (used by the crash tests through `CIVIS_CRASH_AT`).
    pub fn crash_at(&mut self, point: FaultPoint, height: u64) {
        self.crash = Some((point, height));
    }

    fn reached(
        &self,
        fault: Option<FaultPoint>,
        point: FaultPoint,
        h: u64,
    ) -> Result<(), StoreError> {
        if self.crash == Some((point, h)) {
            eprintln!("crash test: aborting at {point:?} of height {h}");
            std::process::abort();
        }
        if fault == Some(point) {
            return Err(StoreError::Injected(point));
        }
        Ok(())
    }

    /// Close the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Run one administrative statement (tests create their databases with it).
    pub async fn execute_admin(&self, sql: &str) -> Result<(), StoreError> {
        sqlx::query(sql).execute(&self.pool).await?;
        Ok(())
    }
}

/// Rows per multi-row INSERT: well inside SQLite's and PostgreSQL's limits on bound parameters.
const ROWS_PER_STATEMENT: usize = 200;

/// Append `rows` groups of `cols` numbered placeholders: `($1, $2), ($3, $4)`.
fn push_placeholders(sql: &mut String, rows: usize, cols: usize) {
    use std::fmt::Write as _;
    let mut n = 0usize;
    for r in 0..rows {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..cols {
            n += 1;
            let _ = write!(sql, "{}${n}", if c == 0 { "" } else { ", " });
        }
        sql.push(')');
    }
}

fn decode_change(bytes: &[u8]) -> Result<EpochChange, StoreError> {
    EpochChange::decode(bytes).map_err(|e| StoreError::Corrupt(format!("epoch change: {e}")))
}

fn height_i64(h: u64) -> Result<i64, StoreError> {
    i64::try_from(h).map_err(|_| StoreError::Corrupt("height out of range".into()))
}

impl Store for SqlStore {
    async fn commit(&self, c: &Commit) -> Result<(), StoreError> {
        let fault = self.fault.lock().ok().and_then(|mut f| f.take());
        let h = c.block.header.height;
        self.reached(fault, FaultPoint::BeforeTransaction, h)?;
        let digest = c.block.header.digest().to_vec();
        let mut tx = self.pool.begin().await?;
        let existing = sqlx::query("SELECT digest FROM blocks WHERE height = $1")
            .bind(height_i64(h)?)
            .fetch_optional(&mut *tx)
            .await?;
        if let Some(row) = existing {
            let stored: Vec<u8> = row.try_get(0)?;
            // Dropping `tx` rolls back; nothing was written.
            return if stored == digest {
                Ok(())
            } else {
                Err(StoreError::Conflict(h))
            };
        }
        let have: Option<i64> = sqlx::query("SELECT MAX(height) FROM blocks")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        let have = have.and_then(|v| u64::try_from(v).ok()).unwrap_or(0);
        if h != have.saturating_add(1) {
            return Err(StoreError::Gap { have, got: h });
        }
        sqlx::query(
            "INSERT INTO blocks (height, digest, block, finalization) VALUES ($1, $2, $3, $4)",
        )
        .bind(height_i64(h)?)
        .bind(digest)
        .bind(c.block.encode())
        .bind(c.finalization.clone())
        .execute(&mut *tx)
        .await?;
        self.reached(fault, FaultPoint::AfterBlockRow, h)?;
        let h64 = height_i64(h)?;
        // Many rows per statement: a block writes a few rows per transaction, and a statement per
        // row is a round trip per row inside the commit every finalized block waits for. Paths
        // are unique within a tree's list, so no statement updates a row twice.
        for (tree, entries) in [(KIOSK, &c.kiosk), (PUBLIC, &c.public)] {
            for chunk in entries.chunks(ROWS_PER_STATEMENT) {
                let mut sql = String::from(
                    "INSERT INTO entries (tree, path, tag, key, value, height) VALUES ",
                );
                push_placeholders(&mut sql, chunk.len(), 6);
                sql.push_str(
                    " ON CONFLICT (tree, path) DO UPDATE SET value = excluded.value, \
                     height = excluded.height",
                );
                let mut q = sqlx::query(&sql);
                for e in chunk {
                    q = q
                        .bind(tree)
                        .bind(e.path().to_vec())
                        .bind(table_column(e.table))
                        .bind(e.key.clone())
                        .bind(e.value.clone())
                        .bind(h64);
                }
                q.execute(&mut *tx).await?;
            }
        }
        let history: Vec<_> = c.kiosk.iter().zip(&c.kiosk_before).collect();
        for chunk in history.chunks(ROWS_PER_STATEMENT) {
            let mut sql =
                String::from("INSERT INTO kiosk_history (height, tag, key, old_value) VALUES ");
            push_placeholders(&mut sql, chunk.len(), 4);
            let mut q = sqlx::query(&sql);
            for (e, old) in chunk {
                q = q
                    .bind(h64)
                    .bind(table_column(e.table))
                    .bind(e.key.clone())
                    .bind((*old).clone());
            }
            q.execute(&mut *tx).await?;
        }
        if let Some(change) = &c.epoch_change {
            sqlx::query("INSERT INTO epoch_changes (height, change) VALUES ($1, $2)")
                .bind(height_i64(h)?)
                .bind(change.clone())
                .execute(&mut *tx)
                .await?;
        }
        self.reached(fault, FaultPoint::BeforeCommit, h)?;
        tx.commit().await?;
        self.reached(fault, FaultPoint::AfterCommit, h)?;
        Ok(())
    }

    async fn height(&self) -> Result<u64, StoreError> {
        let h: Option<i64> = sqlx::query("SELECT MAX(height) FROM blocks")
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        Ok(h.and_then(|v| u64::try_from(v).ok()).unwrap_or(0))
    }

    async fn block(&self, height: u64) -> Result<Option<StoredBlock>, StoreError> {
        let row = sqlx::query("SELECT block, finalization FROM blocks WHERE height = $1")
            .bind(height_i64(height)?)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let bytes: Vec<u8> = row.try_get(0)?;
        let fin: Option<Vec<u8>> = row.try_get(1)?;
        let block = Block::decode(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some((block, fin)))
    }

    async fn latest_certified(&self, at_most: u64) -> Result<Option<(Block, Vec<u8>)>, StoreError> {
        let row = sqlx::query(
            "SELECT block, finalization FROM blocks WHERE finalization IS NOT NULL \
             AND height <= $1 ORDER BY height DESC LIMIT 1",
        )
        .bind(height_i64(at_most)?)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let bytes: Vec<u8> = row.try_get(0)?;
        let fin: Vec<u8> = row.try_get(1)?;
        let block = Block::decode(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some((block, fin)))
    }

    async fn kiosk_undo(&self, above: u64, upto: u64) -> Result<Vec<(u64, Undo)>, StoreError> {
        let rows = sqlx::query(
            "SELECT height, tag, key, old_value FROM kiosk_history WHERE height > $1 \
             AND height <= $2 ORDER BY height DESC",
        )
        .bind(height_i64(above)?)
        .bind(height_i64(upto)?)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| {
                let h: i64 = row.try_get(0)?;
                let table: Vec<u8> = row.try_get(1)?;
                Ok((
                    u64::try_from(h).unwrap_or(0),
                    (table_of(&table)?, row.try_get(2)?, row.try_get(3)?),
                ))
            })
            .collect()
    }

    async fn epoch_changes(&self, after: u64, upto: u64) -> Result<Vec<EpochChange>, StoreError> {
        let rows = sqlx::query(
            "SELECT change FROM epoch_changes WHERE height > $1 AND height <= $2 ORDER BY height",
        )
        .bind(height_i64(after)?)
        .bind(height_i64(upto)?)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| decode_change(&row.try_get::<Vec<u8>, _>(0)?))
            .collect()
    }

    async fn resume(&self, genesis: &Genesis) -> Result<Resumed, StoreError> {
        let height = self.height().await?;
        let head = if height == 0 {
            None
        } else {
            Some(
                self.block(height)
                    .await?
                    .ok_or_else(|| StoreError::Corrupt("missing head block".into()))?
                    .0
                    .header,
            )
        };
        let rows = sqlx::query("SELECT tree, tag, key, value FROM entries")
            .fetch_all(&self.pool)
            .await?;
        let (mut kiosk, mut public) = (Vec::new(), Vec::new());
        for row in rows {
            let tree: i16 = row.try_get(0)?;
            let table: Vec<u8> = row.try_get(1)?;
            let e = Entry {
                table: table_of(&table)?,
                key: row.try_get(2)?,
                value: row.try_get(3)?,
            };
            if tree == KIOSK {
                kiosk.push(e)
            } else {
                public.push(e)
            }
        }
        check_resumed(genesis, head, kiosk, public)
    }
}
