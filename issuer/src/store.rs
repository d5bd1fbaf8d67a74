//! The issuer's database: SQLite (embedded default) or PostgreSQL through sqlx, the same SQL for
//! both (`$n` placeholders, `ON CONFLICT`, `RETURNING`). Every change that must be audited is
//! written in the same database transaction as its audit entry, so a crash leaves both or
//! neither. What is stored is listed in specs/issuer-storage.md.

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

use crate::error::{Error, Result};

/// A connection pool with the migrations applied.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
}

/// An operator token as stored (the secret only as its hash).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRow {
    /// Public token id.
    pub id: String,
    /// SHA-256 of the secret.
    pub hash: Vec<u8>,
    /// Agency it acts for.
    pub agency: String,
    /// Comma-separated scopes.
    pub scopes: String,
    /// Revoked at (Unix seconds).
    pub revoked: Option<i64>,
}

/// A credential as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CredentialRow {
    /// Id.
    pub id: String,
    /// Agency.
    pub agency: String,
    /// Resident id.
    pub resident: String,
    /// The request key that minted it.
    pub request_key: String,
    /// Status list name.
    pub list: String,
    /// Status index.
    pub idx: i64,
    /// The card it is on, if any.
    pub card_serial: Option<Vec<u8>>,
    /// The card's batch, if any.
    pub batch: Option<String>,
    /// IssuerSigned bytes.
    pub issuer_signed: Vec<u8>,
    /// `minted` or `issued`.
    pub state: String,
    /// Status the issuer decided (0 valid, 1 revoked, 2 suspended).
    pub wanted: i64,
}

/// A personalization as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PersoRow {
    /// Id.
    pub id: String,
    /// Agency.
    pub agency: String,
    /// Request key.
    pub request_key: String,
    /// Resident id.
    pub resident: String,
    /// Batch.
    pub batch: String,
    /// Card serial.
    pub serial: Vec<u8>,
    /// State name (see [`crate::perso::State`]).
    pub state: String,
    /// The card key, once checked.
    pub card_key: Option<Vec<u8>>,
    /// The card's VRF key (SEC1 compressed), recorded with the card key.
    pub vrf_key: Option<Vec<u8>>,
    /// Status list, once an index is allocated.
    pub list: Option<String>,
    /// Status index, once allocated.
    pub idx: Option<i64>,
    /// Credential id, once minted.
    pub credential: Option<String>,
}

/// A status change as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChangeRow {
    /// Id (increasing).
    pub id: i64,
    /// Credential id.
    pub credential: String,
    /// List.
    pub list: String,
    /// Index.
    pub idx: i64,
    /// Value (0 valid, 1 revoked, 2 suspended).
    pub value: i64,
    /// `pending`, `submitted` or `anchored`.
    pub state: String,
    /// The transaction that carries it.
    pub tx: Option<String>,
    /// The block that anchored it.
    pub height: Option<i64>,
}

/// A chain transaction the issuer signed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    /// Transaction id (hex SHA-256 of its bytes).
    pub id: String,
    /// Its sequence number.
    pub seq: i64,
    /// `create-did`, `create-status-list`, `update-status`, `rotate-key`.
    pub kind: String,
    /// Its bytes.
    pub bytes: Vec<u8>,
}

/// One audit entry to write.
#[derive(Debug, Clone)]
pub struct Audit<'a> {
    /// Agency.
    pub agency: &'a str,
    /// Token id.
    pub actor: &'a str,
    /// What.
    pub action: &'a str,
    /// Which object.
    pub object: &'a str,
    /// Request key.
    pub request_key: &'a str,
    /// When.
    pub at: i64,
}

/// One status change to record.
#[derive(Debug, Clone)]
pub struct NewChange {
    /// Credential id.
    pub credential: String,
    /// List.
    pub list: String,
    /// Index.
    pub idx: i64,
    /// Value.
    pub value: i64,
}

mod renewals;
pub use renewals::RenewalRow;

/// The state machine a card credential is minted for: its table, whose rows go
/// `… → index_allocated → minted → …`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MintedFor {
    /// A personalization (`personalizations`).
    Personalization,
    /// A renewal (`renewals`).
    Renewal,
}

impl MintedFor {
    fn table(self) -> &'static str {
        match self {
            Self::Personalization => "personalizations",
            Self::Renewal => "renewals",
        }
    }

    fn before_index(self) -> &'static str {
        match self {
            Self::Personalization => "key_checked",
            Self::Renewal => "started",
        }
    }
}

type Tx<'c> = sqlx::Transaction<'c, sqlx::Any>;

/// What a request key named before, for a kind of request that may record nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First use: the key now names this request.
    New,
    /// The same request again: answer as before, record nothing.
    Same,
    /// The key named another request of this kind: `409`.
    Other,
}

/// Claim `request_key` of `kind` for `what` (the request's content, canonical) in `tx`.
async fn claim_in(tx: &mut Tx<'_>, audit: &Audit<'_>, kind: &str, what: &str) -> Result<Claim> {
    let inserted = sqlx::query(
        "INSERT INTO request_keys (agency, kind, request_key, what, at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (agency, kind, request_key) DO NOTHING",
    )
    .bind(audit.agency)
    .bind(kind)
    .bind(audit.request_key)
    .bind(what)
    .bind(audit.at)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::New);
    }
    let before: String = sqlx::query_scalar(
        "SELECT what FROM request_keys WHERE agency = $1 AND kind = $2 AND request_key = $3",
    )
    .bind(audit.agency)
    .bind(kind)
    .bind(audit.request_key)
    .fetch_one(&mut **tx)
    .await?;
    Ok(if before == what {
        Claim::Same
    } else {
        Claim::Other
    })
}

async fn audit_in(tx: &mut Tx<'_>, a: &Audit<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit (at, agency, actor, action, object, request_key) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(a.at)
    .bind(a.agency)
    .bind(a.actor)
    .bind(a.action)
    .bind(a.object)
    .bind(a.request_key)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Read rows into a stored type (the columns named as its fields).
fn from_rows<T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow>>(
    rows: &[sqlx::any::AnyRow],
) -> Result<Vec<T>> {
    Ok(rows.iter().map(T::from_row).collect::<Result<_, _>>()?)
}

const CREDENTIAL_COLS: &str = "id, agency, resident, request_key, list, idx, card_serial, batch, \
                               issuer_signed, state, wanted";
const PERSO_COLS: &str = "id, agency, request_key, resident, batch, serial, state, card_key, vrf_key, list, idx, \
     credential";
const CHANGE_COLS: &str = "id, credential, list, idx, value, state, tx, height";

impl Store {
    /// Connect to `sqlite:PATH` (created if missing) or `postgres://…` and migrate.
    pub async fn connect(url: &str) -> Result<Self> {
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
            return Err(Error::Config(
                "database must be sqlite:PATH or postgres://…".into(),
            ));
        };
        // SQLite serializes writers anyway; one connection avoids busy errors.
        let pool = AnyPoolOptions::new()
            .max_connections(if postgres { 16 } else { 1 })
            .connect(&url)
            .await?;
        if postgres {
            sqlx::migrate!("migrations/postgres").run(&pool).await?;
        } else {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
            sqlx::migrate!("migrations/sqlite").run(&pool).await?;
        }
        Ok(Self { pool })
    }

    /// Close the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    // ---- tokens ----

    /// Store a token (its secret only hashed).
    pub async fn insert_token(
        &self,
        id: &str,
        hash: &[u8],
        agency: &str,
        scopes: &str,
        label: &str,
        now: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO tokens (id, hash, agency, scopes, label, created) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(hash)
        .bind(agency)
        .bind(scopes)
        .bind(label)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Revoke a token of the agency: `None` if the agency has no such token, else whether it
    /// was revoked now (a token revoked before keeps its first revocation time).
    pub async fn revoke_token(&self, agency: &str, id: &str, now: i64) -> Result<Option<bool>> {
        let revoked = sqlx::query(
            "UPDATE tokens SET revoked = $1 WHERE id = $2 AND agency = $3 AND revoked IS NULL",
        )
        .bind(now)
        .bind(id)
        .bind(agency)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1;
        if revoked {
            return Ok(Some(true));
        }
        Ok(
            sqlx::query("SELECT 1 FROM tokens WHERE id = $1 AND agency = $2")
                .bind(id)
                .bind(agency)
                .fetch_optional(&self.pool)
                .await?
                .map(|_| false),
        )
    }

    /// The ids of all tokens not revoked.
    pub async fn token_ids(&self) -> Result<std::collections::HashSet<String>> {
        let rows = sqlx::query("SELECT id FROM tokens WHERE revoked IS NULL")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get::<String, _>(0).map_err(Error::from))
            .collect()
    }

    /// A token by its public id.
    pub async fn token(&self, id: &str) -> Result<Option<TokenRow>> {
        let row = sqlx::query("SELECT id, hash, agency, scopes, revoked FROM tokens WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(sqlx::FromRow::from_row).transpose()?)
    }

    // ---- residents ----

    /// Enroll a resident unless the request key already did; returns the resident id and
    /// whether it was created now.
    pub async fn enroll(
        &self,
        id: &str,
        attributes: &[u8],
        audit: &Audit<'_>,
    ) -> Result<(String, bool)> {
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO residents (id, agency, request_key, attributes, created) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (agency, request_key) DO NOTHING",
        )
        .bind(id)
        .bind(audit.agency)
        .bind(audit.request_key)
        .bind(attributes)
        .bind(audit.at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 1 {
            audit_in(&mut tx, audit).await?;
            tx.commit().await?;
            return Ok((id.to_owned(), true));
        }
        let row = sqlx::query(
            "SELECT id, attributes FROM residents WHERE agency = $1 AND request_key = $2",
        )
        .bind(audit.agency)
        .bind(audit.request_key)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        let stored: Vec<u8> = row.try_get("attributes")?;
        if stored != attributes {
            return Err(Error::Conflict(
                "this request key enrolled someone else; use a new request key",
            ));
        }
        Ok((row.try_get("id")?, false))
    }

    /// A resident's stored attributes, if the resident is the agency's.
    pub async fn resident(&self, agency: &str, id: &str) -> Result<Option<Vec<u8>>> {
        let row = sqlx::query("SELECT attributes FROM residents WHERE agency = $1 AND id = $2")
            .bind(agency)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    // ---- status indexes ----

    /// Reserve `count` fresh indexes of a list of `size` entries, durably: the range is never
    /// handed out again, whatever happens to the process afterwards.
    pub async fn reserve_indexes(
        &self,
        agency: &str,
        list: &str,
        count: i64,
        size: i64,
    ) -> Result<std::ops::Range<i64>> {
        let mut tx = self.pool.begin().await?;
        let end: i64 = sqlx::query(
            "INSERT INTO index_reservations (agency, list, next_index) VALUES ($1, $2, $3) \
             ON CONFLICT (agency, list) DO UPDATE \
             SET next_index = index_reservations.next_index + excluded.next_index \
             RETURNING next_index",
        )
        .bind(agency)
        .bind(list)
        .bind(count)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
        let start = end - count;
        if start >= size {
            // Roll back: a full list stays full, the counter does not run on.
            return Err(Error::ListFull);
        }
        tx.commit().await?;
        Ok(start..end.min(size))
    }

    // ---- credentials ----

    /// A credential of the agency by its request key.
    pub async fn credential_by_request(
        &self,
        agency: &str,
        request_key: &str,
    ) -> Result<Option<CredentialRow>> {
        let row = sqlx::query(&format!(
            "SELECT {CREDENTIAL_COLS} FROM credentials WHERE agency = $1 AND request_key = $2"
        ))
        .bind(agency)
        .bind(request_key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(sqlx::FromRow::from_row).transpose()?)
    }

    /// A credential of the agency by id.
    pub async fn credential(&self, agency: &str, id: &str) -> Result<Option<CredentialRow>> {
        let row = sqlx::query(&format!(
            "SELECT {CREDENTIAL_COLS} FROM credentials WHERE agency = $1 AND id = $2"
        ))
        .bind(agency)
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(sqlx::FromRow::from_row).transpose()?)
    }

    /// Record a minted credential with its audit entry. A duplicate request key or index is a
    /// unique violation (see [`Error::is_unique_violation`]).
    pub async fn insert_credential(&self, c: &CredentialRow, audit: &Audit<'_>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        insert_credential_in(&mut tx, c, audit.at).await?;
        audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    // ---- personalizations ----

    /// A personalization of the agency by request key.
    pub async fn perso_by_request(
        &self,
        agency: &str,
        request_key: &str,
    ) -> Result<Option<PersoRow>> {
        let row = sqlx::query(&format!(
            "SELECT {PERSO_COLS} FROM personalizations WHERE agency = $1 AND request_key = $2"
        ))
        .bind(agency)
        .bind(request_key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(sqlx::FromRow::from_row).transpose()?)
    }

    /// Start a personalization (unique per request key and per card serial).
    pub async fn insert_perso(&self, p: &PersoRow, audit: &Audit<'_>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO personalizations \
             (id, agency, request_key, resident, batch, serial, state, created, updated) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)",
        )
        .bind(&p.id)
        .bind(&p.agency)
        .bind(&p.request_key)
        .bind(&p.resident)
        .bind(&p.batch)
        .bind(&p.serial)
        .bind(&p.state)
        .bind(audit.at)
        .execute(&mut *tx)
        .await?;
        audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Record a checked card key and move `started` → `key_checked`. The key's uniqueness
    /// across every card ever seen is the `card_keys` primary key.
    pub async fn record_card_key(
        &self,
        p: &PersoRow,
        key: &[u8],
        vrf_key: Option<&[u8]>,
        now: i64,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE personalizations SET state = 'key_checked', card_key = $1, vrf_key = $4, \
             updated = $2 WHERE id = $3 AND state = 'started'",
        )
        .bind(key)
        .bind(now)
        .bind(&p.id)
        .bind(vrf_key)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO card_keys (public_key, serial, agency, batch, seen) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(key)
        .bind(&p.serial)
        .bind(&p.agency)
        .bind(&p.batch)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Whether a card key was ever seen.
    pub async fn card_key_seen(&self, key: &[u8]) -> Result<bool> {
        Ok(sqlx::query("SELECT 1 FROM card_keys WHERE public_key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?
            .is_some())
    }

    /// Move `owner`'s row from the state before an index to `index_allocated`, with the
    /// allocated index.
    pub async fn record_index(
        &self,
        owner: MintedFor,
        id: &str,
        list: &str,
        idx: i64,
        now: i64,
    ) -> Result<bool> {
        Ok(sqlx::query(&format!(
            "UPDATE {} SET state = 'index_allocated', list = $1, idx = $2, updated = $3 \
             WHERE id = $4 AND state = '{}'",
            owner.table(),
            owner.before_index()
        ))
        .bind(list)
        .bind(idx)
        .bind(now)
        .bind(id)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// Record a minted card credential and move `owner`'s row `index_allocated` → `minted`, in
    /// one transaction.
    pub async fn record_minted(
        &self,
        owner: MintedFor,
        id: &str,
        c: &CredentialRow,
        audit: &Audit<'_>,
    ) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(&format!(
            "UPDATE {} SET state = 'minted', credential = $1, updated = $2 \
             WHERE id = $3 AND state = 'index_allocated'",
            owner.table()
        ))
        .bind(&c.id)
        .bind(audit.at)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(false);
        }
        insert_credential_in(&mut tx, c, audit.at).await?;
        audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Move a personalization between two states (compare-and-set).
    pub async fn move_perso(&self, id: &str, from: &str, to: &str, now: i64) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE personalizations SET state = $1, updated = $2 WHERE id = $3 AND state = $4",
        )
        .bind(to)
        .bind(now)
        .bind(id)
        .bind(from)
        .execute(&self.pool)
        .await?
        .rows_affected()
            == 1)
    }

    /// The card is locked: the personalization and its credential become `issued`.
    pub async fn record_issued(&self, p: &PersoRow, audit: &Audit<'_>) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let moved = sqlx::query(
            "UPDATE personalizations SET state = 'issued', updated = $1 \
             WHERE id = $2 AND state = 'written'",
        )
        .bind(audit.at)
        .bind(&p.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            return Ok(false);
        }
        sqlx::query("UPDATE credentials SET state = 'issued' WHERE id = $1")
            .bind(&p.credential)
            .execute(&mut *tx)
            .await?;
        audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok(true)
    }

    // ---- status ----

    /// Record status changes for credentials (the caller checked the transitions) and set each
    /// credential's wanted value, unless this request key already did.
    /// Returns how many were recorded now (0 for a repeated request key).
    pub async fn record_changes(
        &self,
        changes: &[NewChange],
        audit: &Audit<'_>,
        claim: (&str, &str),
    ) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        // The key is bound to this request in the same transaction that records it, so a
        // crash loses neither, and a key that changed nothing still names its request.
        match claim_in(&mut tx, audit, claim.0, claim.1).await? {
            Claim::New => {}
            Claim::Same => return Ok(0),
            Claim::Other => {
                return Err(Error::Conflict(
                    "this request key named another request; use a new request key",
                ));
            }
        }
        let mut n = 0;
        for c in changes {
            // The transition is decided here, under the row's lock, not by an earlier read:
            // revocation is final, suspend only from valid, unsuspend only from suspended. A
            // change that lost a race to another records nothing.
            let guard = match c.value {
                1 => "wanted <> 1",
                2 => "wanted = 0",
                _ => "wanted = 2",
            };
            let moved = sqlx::query(&format!(
                "UPDATE credentials SET wanted = $1 WHERE id = $2 AND agency = $3 AND {guard}"
            ))
            .bind(c.value)
            .bind(&c.credential)
            .bind(audit.agency)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if moved == 0 {
                continue;
            }
            let inserted = sqlx::query(
                "INSERT INTO status_changes \
                 (agency, request_key, credential, list, idx, value, state, created) \
                 VALUES ($1, $2, $3, $4, $5, $6, 'pending', $7) \
                 ON CONFLICT (agency, request_key, credential) DO NOTHING",
            )
            .bind(audit.agency)
            .bind(audit.request_key)
            .bind(&c.credential)
            .bind(&c.list)
            .bind(c.idx)
            .bind(c.value)
            .bind(audit.at)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted == 0 {
                // This request key already recorded a change for this credential: undo the
                // transition (the transaction is rolled back) and record nothing.
                return Ok(0);
            }
            n += 1;
        }
        if n > 0 {
            audit_in(&mut tx, audit).await?;
        }
        // Committed even when nothing changed: the key's claim is the record.
        tx.commit().await?;
        Ok(n)
    }

    /// The credential a request key changed the status of, and the value it set, if it was
    /// used for a status change.
    pub async fn change_of_request(
        &self,
        agency: &str,
        request_key: &str,
    ) -> Result<Option<(String, i64)>> {
        let row = sqlx::query(
            "SELECT credential, value FROM status_changes \
             WHERE agency = $1 AND request_key = $2 ORDER BY id LIMIT 1",
        )
        .bind(agency)
        .bind(request_key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row
            .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
            .transpose()?)
    }

    /// A credential's status changes, oldest first.
    pub async fn changes_of(&self, credential: &str) -> Result<Vec<ChangeRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {CHANGE_COLS} FROM status_changes WHERE credential = $1 ORDER BY id"
        ))
        .bind(credential)
        .fetch_all(&self.pool)
        .await?;
        from_rows(&rows)
    }

    /// Pending changes of an agency's list, oldest first.
    pub async fn pending_changes(
        &self,
        agency: &str,
        list: &str,
        limit: i64,
    ) -> Result<Vec<ChangeRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {CHANGE_COLS} FROM status_changes \
             WHERE agency = $1 AND list = $2 AND state = 'pending' ORDER BY id LIMIT $3"
        ))
        .bind(agency)
        .bind(list)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        from_rows(&rows)
    }

    /// How many changes are not yet anchored.
    pub async fn unanchored_count(&self) -> Result<i64> {
        Ok(
            sqlx::query("SELECT COUNT(*) FROM status_changes WHERE state <> 'anchored'")
                .fetch_one(&self.pool)
                .await?
                .try_get(0)?,
        )
    }

    /// Write a signed transaction to the outbox and bind the changes it carries to it, in one
    /// database transaction (so a crash re-sends these bytes, never signs a second set).
    pub async fn stage_tx(
        &self,
        agency: &str,
        row: &OutboxRow,
        change_ids: &[i64],
        now: i64,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            // Signatures are deterministic: the same operation at the same sequence number
            // after a refusal is the same transaction, sent again.
            "INSERT INTO outbox (id, agency, seq, kind, bytes, state, created) \
             VALUES ($1, $2, $3, $4, $5, 'submitted', $6) \
             ON CONFLICT (id) DO UPDATE SET state = 'submitted', height = NULL",
        )
        .bind(&row.id)
        .bind(agency)
        .bind(row.seq)
        .bind(&row.kind)
        .bind(&row.bytes)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for chunk in change_ids.chunks(500) {
            let list = chunk
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            // Ids are integers from our own rows, never outside text.
            sqlx::query(&format!(
                "UPDATE status_changes SET state = 'submitted', tx = $1 \
                 WHERE state = 'pending' AND id IN ({list})"
            ))
            .bind(&row.id)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The agency's outbox transactions not yet final, by sequence number.
    pub async fn unfinished_txs(&self, agency: &str) -> Result<Vec<OutboxRow>> {
        let rows = sqlx::query(
            "SELECT id, seq, kind, bytes FROM outbox WHERE agency = $1 AND state = 'submitted' \
             ORDER BY seq",
        )
        .bind(agency)
        .fetch_all(&self.pool)
        .await?;
        from_rows(&rows)
    }

    /// Whether a transaction of this kind became final for the agency.
    pub async fn has_final(&self, agency: &str, kind: &str) -> Result<bool> {
        Ok(sqlx::query(
            "SELECT 1 FROM outbox WHERE agency = $1 AND kind = $2 AND state = 'final' LIMIT 1",
        )
        .bind(agency)
        .bind(kind)
        .fetch_optional(&self.pool)
        .await?
        .is_some())
    }

    /// A transaction is final at `height` (or was refused: `height` None): its changes are
    /// anchored, or go back to pending to be sent again.
    pub async fn finish_tx(&self, id: &str, height: Option<i64>) -> Result<u64> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE outbox SET state = $1, height = $2 WHERE id = $3")
            .bind(if height.is_some() { "final" } else { "refused" })
            .bind(height)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        let n = match height {
            Some(h) => {
                sqlx::query(
                    "UPDATE status_changes SET state = 'anchored', height = $1 WHERE tx = $2",
                )
                .bind(h)
                .bind(id)
                .execute(&mut *tx)
                .await?
            }
            None => {
                sqlx::query("UPDATE status_changes SET state = 'pending', tx = NULL WHERE tx = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?
            }
        }
        .rows_affected();
        tx.commit().await?;
        Ok(if height.is_some() { n } else { 0 })
    }

    /// Credentials of an agency's batch that are not revoked, with a change to suspend
    /// recorded for each, unless the batch was suspended before. Returns the count and
    /// whether it happened now.
    pub async fn suspend_batch(&self, batch: &str, audit: &Audit<'_>) -> Result<(u64, bool)> {
        let mut tx = self.pool.begin().await?;
        match claim_in(&mut tx, audit, "batch", batch).await? {
            Claim::New => {}
            Claim::Same => return Ok((0, false)),
            Claim::Other => {
                return Err(Error::Conflict(
                    "this request key named another batch; use a new request key",
                ));
            }
        }
        let inserted = sqlx::query(
            "INSERT INTO batch_suspensions (agency, batch, request_key, at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (agency, batch) DO NOTHING",
        )
        .bind(audit.agency)
        .bind(batch)
        .bind(audit.request_key)
        .bind(audit.at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        let rows = sqlx::query(
            "SELECT id, list, idx FROM credentials \
             WHERE agency = $1 AND batch = $2 AND wanted <> 1",
        )
        .bind(audit.agency)
        .bind(batch)
        .fetch_all(&mut *tx)
        .await?;
        if inserted == 0 {
            // Suspended before under another key: this key is bound to it all the same.
            tx.commit().await?;
            return Ok((0, false));
        }
        let mut changed = 0u64;
        for r in &rows {
            let id: String = r.try_get("id")?;
            let list: String = r.try_get("list")?;
            let idx: i64 = r.try_get("idx")?;
            // Only a valid credential is suspended; a revoked one stays revoked, a suspended one
            // suspended (decided under the row's lock).
            let moved =
                sqlx::query("UPDATE credentials SET wanted = 2 WHERE id = $1 AND wanted = 0")
                    .bind(&id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
            if moved == 0 {
                continue;
            }
            sqlx::query(
                "INSERT INTO status_changes \
                 (agency, request_key, credential, list, idx, value, state, created) \
                 VALUES ($1, $2, $3, $4, $5, 2, 'pending', $6) \
                 ON CONFLICT (agency, request_key, credential) DO NOTHING",
            )
            .bind(audit.agency)
            .bind(audit.request_key)
            .bind(&id)
            .bind(&list)
            .bind(idx)
            .bind(audit.at)
            .execute(&mut *tx)
            .await?;
            changed += 1;
        }
        audit_in(&mut tx, audit).await?;
        tx.commit().await?;
        Ok((changed, true))
    }

    /// Whether the agency suspended this batch.
    pub async fn batch_suspended(&self, agency: &str, batch: &str) -> Result<bool> {
        Ok(
            sqlx::query("SELECT 1 FROM batch_suspensions WHERE agency = $1 AND batch = $2")
                .bind(agency)
                .bind(batch)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// The agency's credentials on the card with this serial.
    pub async fn credentials_on_card(
        &self,
        agency: &str,
        serial: &[u8],
    ) -> Result<Vec<CredentialRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {CREDENTIAL_COLS} FROM credentials WHERE agency = $1 AND card_serial = $2"
        ))
        .bind(agency)
        .bind(serial)
        .fetch_all(&self.pool)
        .await?;
        from_rows(&rows)
    }

    // ---- audit ----

    /// Write an audit entry on its own.
    pub async fn audit(&self, a: &Audit<'_>) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        audit_in(&mut tx, a).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The agency's audit entries after `after`, oldest first.
    pub async fn audit_page(
        &self,
        agency: &str,
        after: i64,
        limit: i64,
    ) -> Result<Vec<civis_core::issuer_api::AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, at, actor, action, object, request_key FROM audit \
             WHERE agency = $1 AND id > $2 ORDER BY id LIMIT $3",
        )
        .bind(agency)
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let id: i64 = r.try_get("id")?;
                Ok(civis_core::issuer_api::AuditEntry {
                    id: u64::try_from(id).map_err(|_| Error::Corrupt("audit id"))?,
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    object: r.try_get("object")?,
                    request_key: r.try_get("request_key")?,
                })
            })
            .collect()
    }

    /// Counts for tests and metrics: (credentials, distinct status indexes).
    pub async fn credential_counts(&self, agency: &str) -> Result<(i64, i64)> {
        let r =
            sqlx::query("SELECT COUNT(*), COUNT(DISTINCT idx) FROM credentials WHERE agency = $1")
                .bind(agency)
                .fetch_one(&self.pool)
                .await?;
        Ok((r.try_get(0)?, r.try_get(1)?))
    }
}

async fn insert_credential_in(tx: &mut Tx<'_>, c: &CredentialRow, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO credentials (id, agency, resident, request_key, list, idx, card_serial, \
         batch, issuer_signed, state, wanted, created) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&c.id)
    .bind(&c.agency)
    .bind(&c.resident)
    .bind(&c.request_key)
    .bind(&c.list)
    .bind(c.idx)
    .bind(&c.card_serial)
    .bind(&c.batch)
    .bind(&c.issuer_signed)
    .bind(&c.state)
    .bind(c.wanted)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
