//! The service's shared state: store, agencies, index pool, the chain's governance set,
//! clock and metrics. Handlers and workers take `&Service`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use civis_core::crypto::EcPublicKey;
use rand_core::{OsRng, RngCore};

use crate::agency::Agency;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::mint::IndexPool;
use crate::store::{Audit, PersoRow, Store};

/// Refuse a request key that is not 1–64 of `A–Z a–z 0–9 - _ . :`.
pub fn check_request_key(key: &str) -> Result<()> {
    if civis_core::issuer_api::valid_request_key(key) {
        Ok(())
    } else {
        Err(Error::Invalid {
            field: "requestKey",
            why: "must be 1 to 64 of A-Z a-z 0-9 - _ . :",
        })
    }
}

/// Where the crash tests kill the process (`CIVIS_ISSUER_CRASH_AT`), as a power cut would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// After a status index is recorded for a personalization.
    AfterIndex,
    /// After the credential is signed, before it is recorded.
    AfterSign,
    /// After the card reports the credential written, before that is recorded.
    AfterWrite,
    /// After LOCK is built, before the counter gets it.
    BeforeLock,
    /// A rotation's key after next exists, its transaction not yet sent.
    BeforeRotateTx,
    /// A rotation's transaction is final, the service not yet switched to the new key.
    AfterRotateTx,
}

impl CrashPoint {
    /// From the environment variable's value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "after-index" => Self::AfterIndex,
            "after-sign" => Self::AfterSign,
            "after-write" => Self::AfterWrite,
            "before-lock" => Self::BeforeLock,
            "before-rotate-tx" => Self::BeforeRotateTx,
            "after-rotate-tx" => Self::AfterRotateTx,
            _ => return None,
        })
    }
}

/// Who is acting: the token id and its agency.
#[derive(Debug, Clone)]
pub struct Actor {
    /// Token id (public part).
    pub token: String,
    /// Agency id.
    pub agency: String,
    /// Scopes.
    pub scopes: Vec<String>,
}

impl Actor {
    /// An audit entry by this actor.
    pub fn audit<'a>(
        &'a self,
        agency: &'a Agency,
        action: &'a str,
        object: &'a str,
        request_key: &'a str,
        at: i64,
    ) -> Audit<'a> {
        Audit {
            agency: agency.id(),
            actor: &self.token,
            action,
            object,
            request_key,
            at,
        }
    }
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Credentials minted.
    pub minted: AtomicU64,
    /// Cards issued (locked with their credential).
    pub issued: AtomicU64,
    /// Status changes recorded.
    pub status_changes: AtomicU64,
    /// Status changes anchored.
    pub anchored: AtomicU64,
    /// `update-status` transactions final.
    pub anchor_txs: AtomicU64,
    /// Registry failures seen by the anchoring worker.
    pub registry_errors: AtomicU64,
    /// Requests refused for the rate limit.
    pub rate_limited: AtomicU64,
    /// Requests refused for authentication or authorization.
    pub auth_refused: AtomicU64,
}

impl Metrics {
    /// One credential minted.
    pub fn minted(&self) {
        self.minted.fetch_add(1, Ordering::Relaxed);
    }

    /// One card issued.
    pub fn issued(&self) {
        self.issued.fetch_add(1, Ordering::Relaxed);
    }

    /// Prometheus text exposition.
    pub fn render(&self, pending: i64) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let rows: [(&str, &str, &str, u64); 9] = [
            (
                "civis_issuer_credentials_minted_total",
                "counter",
                "Credentials signed and recorded.",
                g(&self.minted),
            ),
            (
                "civis_issuer_cards_issued_total",
                "counter",
                "Cards locked with their credential.",
                g(&self.issued),
            ),
            (
                "civis_issuer_status_changes_total",
                "counter",
                "Status changes recorded.",
                g(&self.status_changes),
            ),
            (
                "civis_issuer_status_anchored_total",
                "counter",
                "Status changes anchored on the chain.",
                g(&self.anchored),
            ),
            (
                "civis_issuer_anchor_transactions_total",
                "counter",
                "update-status transactions final on the chain.",
                g(&self.anchor_txs),
            ),
            (
                "civis_issuer_registry_errors_total",
                "counter",
                "Registry calls that failed.",
                g(&self.registry_errors),
            ),
            (
                "civis_issuer_rate_limited_total",
                "counter",
                "Requests refused by the per-token rate limit.",
                g(&self.rate_limited),
            ),
            (
                "civis_issuer_auth_refused_total",
                "counter",
                "Requests refused with 401 or 403.",
                g(&self.auth_refused),
            ),
            (
                "civis_issuer_status_pending",
                "gauge",
                "Status changes not yet anchored.",
                u64::try_from(pending).unwrap_or(0),
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, v) in rows {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            ));
        }
        out
    }
}

/// Everything a request or worker needs.
pub struct Service {
    /// The configuration.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// Agencies by id.
    pub agencies: BTreeMap<String, Arc<Agency>>,
    /// Reserved status indexes.
    pub pool: IndexPool,
    /// The chain id (from genesis).
    pub chain_id: String,
    /// The governance set cards are given (the genesis members: inception key, next-key
    /// commitment); cards follow rotations from there.
    pub governance: Vec<(EcPublicKey, civis_core::did::KeyCommitment)>,
    /// Unix seconds now (a parameter so tests can fix it).
    pub clock: Arc<dyn Fn() -> i64 + Send + Sync>,
    /// Crash-test hook.
    pub crash: Option<CrashPoint>,
    /// Counters.
    pub metrics: Metrics,
    /// Agencies whose DID and status list are known to be on chain.
    registered: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// Agencies whose last anchoring round failed.
    failing: std::sync::Mutex<std::collections::BTreeSet<String>>,
    /// The pending-change count `/health` and `/metrics` show, and when it was counted: those
    /// routes need no token, so a flood of them must not turn into a flood of table scans.
    pending: tokio::sync::Mutex<Option<(std::time::Instant, i64)>>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("agencies", &self.agencies.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Service {
    /// Open the store, load the agencies' keys and the genesis.
    pub async fn open(config: Config) -> Result<Self> {
        let text = std::fs::read_to_string(&config.genesis)
            .map_err(|e| Error::Config(format!("{}: {e}", config.genesis.display())))?;
        let genesis = civis_core::chain::state::Genesis::from_json(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", config.genesis.display())))?;
        let governance = genesis.governance.clone();
        // Checked here so a genesis no card can hold stops the service, not every card.
        civis_core::card::governance::GovernanceSet::from_inception(&genesis.chain_id, &governance)
            .map_err(|e| Error::Config(format!("{}: {e}", config.genesis.display())))?;
        let mut agencies = BTreeMap::new();
        for a in &config.agencies {
            agencies.insert(a.id.clone(), Arc::new(Agency::load(a)?));
        }
        let store = Store::connect(&config.database).await?;
        let crash = std::env::var("CIVIS_ISSUER_CRASH_AT")
            .ok()
            .and_then(|v| CrashPoint::parse(&v));
        Ok(Self {
            config,
            store,
            agencies,
            pool: IndexPool::default(),
            chain_id: genesis.chain_id,
            governance,
            clock: Arc::new(system_now),
            crash,
            metrics: Metrics::default(),
            registered: std::sync::Mutex::default(),
            failing: std::sync::Mutex::default(),
            pending: tokio::sync::Mutex::new(None),
        })
    }

    /// Unix seconds now.
    pub fn now(&self) -> i64 {
        (self.clock)()
    }

    /// A fresh random id (16 bytes, hex): carries nothing about the object.
    pub fn new_id(&self) -> String {
        let mut b = [0u8; 16];
        OsRng.fill_bytes(&mut b);
        hex::encode(b)
    }

    /// Kill the process here if the crash test asks for it.
    pub fn crash_point(&self, at: CrashPoint) {
        if self.crash == Some(at) {
            eprintln!("crash test: aborting at {at:?}");
            std::process::abort();
        }
    }

    /// Whether the agency's DID and status list are known to be on chain.
    pub fn is_registered(&self, agency: &str) -> bool {
        self.registered
            .lock()
            .map(|r| r.contains(agency))
            .unwrap_or(false)
    }

    /// Remember that the agency is registered.
    pub fn set_registered(&self, agency: &str) {
        if let Ok(mut r) = self.registered.lock() {
            r.insert(agency.to_owned());
        }
    }

    /// Record how the agency's last anchoring round went.
    pub fn set_anchoring(&self, agency: &str, ok: bool) {
        if let Ok(mut f) = self.failing.lock() {
            if ok {
                f.remove(agency);
            } else {
                f.insert(agency.to_owned());
            }
        }
    }

    /// Agencies whose last anchoring round failed.
    pub fn anchoring_failing(&self) -> Vec<String> {
        self.failing
            .lock()
            .map(|f| f.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Status changes not yet anchored, counted at most once a second.
    pub async fn pending_changes(&self) -> Result<i64> {
        let mut cached = self.pending.lock().await;
        if let Some((at, n)) = *cached
            && at.elapsed() < std::time::Duration::from_secs(1)
        {
            return Ok(n);
        }
        let n = self.store.unanchored_count().await?;
        *cached = Some((std::time::Instant::now(), n));
        Ok(n)
    }

    /// A client of the registry nodes in the config.
    pub fn registry(&self) -> Result<civis_registry_client::Client> {
        let urls: Vec<&str> = self.config.registry.iter().map(String::as_str).collect();
        civis_registry_client::Client::with_nodes(&urls)
            .map_err(|e| Error::Config(format!("registry URLs: {e}")))
    }

    /// An agency by id.
    pub fn agency(&self, id: &str) -> Result<&Arc<Agency>> {
        self.agencies.get(id).ok_or(Error::Unauthorized)
    }

    /// The IssuerSigned bytes of a personalization's credential.
    pub async fn credential_bytes(&self, agency: &Agency, row: &PersoRow) -> Result<Vec<u8>> {
        self.credential_by_id(agency, row.credential.as_deref())
            .await
    }

    /// The IssuerSigned bytes of a credential a recorded state names.
    pub async fn credential_by_id(&self, agency: &Agency, id: Option<&str>) -> Result<Vec<u8>> {
        let id = id.ok_or(Error::Corrupt("minted without credential"))?;
        Ok(self
            .store
            .credential(agency.id(), id)
            .await?
            .ok_or(Error::Corrupt("credential missing"))?
            .issuer_signed)
    }
}
