//! Keeping a kiosk snapshot in step with the registry: fetch a bundle (a delta from the
//! snapshot's height, or a first sync), check it with the light client, and replace the stored
//! snapshot whole — in the kiosk's database ([`sync_store`]) or a file ([`sync_snapshot`]). On
//! any failure the old snapshot stays as it was.

use std::path::Path;

use civis_core::chain::light::KioskSnapshot;
use civis_core::chain::state::Genesis;
use civis_registry_client::{Client, keyfile};

/// Why a sync did not advance the snapshot. The snapshot file is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The stored snapshot cannot be read or belongs to another chain.
    #[error("snapshot {path}: {message}")]
    Snapshot {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The registry could not be asked, or answered with something that is not a bundle.
    #[error(transparent)]
    Registry(#[from] civis_registry_client::Error),
    /// The bundle does not check against the snapshot (forged, rolled back, another chain).
    #[error("sync bundle refused: {0}")]
    Refused(civis_core::chain::light::SyncError),
    /// The kiosk's database failed.
    #[error("kiosk database: {0}")]
    Store(String),
}

// Not `#[from]`: that would also make the refusal the error's source, and reports that print
// the chain of sources would say it twice.
impl From<civis_core::chain::light::SyncError> for SyncError {
    fn from(e: civis_core::chain::light::SyncError) -> Self {
        Self::Refused(e)
    }
}

/// How far a sync has come, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncStep {
    /// Asking the registry for a bundle from this height (None: a first sync).
    Asking {
        /// The stored snapshot's height.
        from: Option<u64>,
    },
    /// Bundle bytes received so far, and the length the registry declared.
    Receiving {
        /// Bytes so far.
        bytes: u64,
        /// Declared length, if the registry sent one.
        total: Option<u64>,
    },
    /// The whole bundle is in; the light client checks it.
    Checking {
        /// Its size.
        bytes: u64,
    },
    /// Checked; the new snapshot is being stored.
    Storing,
}

/// Where a sync reports its [`SyncStep`]s.
pub type OnStep<'a> = dyn Fn(SyncStep) + Send + Sync + 'a;

/// What a sync did.
#[derive(Debug, Clone)]
pub struct SyncReport {
    /// Height before (None: the snapshot was created).
    pub from: Option<u64>,
    /// Certified height now.
    pub height: u64,
    /// State root of that header.
    pub state_root: [u8; 32],
    /// Header time (Unix seconds).
    pub time: i64,
    /// Bundle size in bytes.
    pub bundle_bytes: usize,
    /// First epoch of the validator set the snapshot now follows.
    pub set_epoch: u64,
    /// Validator-set changes the bundle carried.
    pub set_changes: usize,
}

impl SyncReport {
    fn of(
        snap: &KioskSnapshot,
        from: Option<u64>,
        bundle_bytes: usize,
        set_changes: usize,
    ) -> Self {
        let h = snap.header();
        Self {
            from,
            height: h.height,
            state_root: h.state_root(),
            time: h.time,
            bundle_bytes,
            set_epoch: snap.epoch(),
            set_changes,
        }
    }
}

/// Ask for a bundle. A registry that limits this kiosk says so (busy, 429): wait and ask again
/// a few times (1, 2, 4 s), as it asks, before giving up on this sync.
async fn fetch(
    client: &Client,
    from: Option<u64>,
    on_step: Option<&OnStep<'_>>,
) -> Result<(civis_core::chain::light::SyncBundle, usize), civis_registry_client::Error> {
    if let Some(f) = on_step {
        f(SyncStep::Asking { from });
    }
    let receiving = |bytes: u64, total: Option<u64>| {
        if let Some(f) = on_step {
            f(SyncStep::Receiving { bytes, total });
        }
    };
    let progress: Option<&civis_registry_client::http::Progress<'_>> =
        on_step.map(|_| &receiving as &civis_registry_client::http::Progress<'_>);
    let mut answer = client.sync_with(from, progress).await;
    for wait in [1, 2, 4] {
        if !matches!(answer, Err(civis_registry_client::Error::Busy(_))) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_secs(wait)).await;
        answer = client.sync_with(from, progress).await;
    }
    if let (Some(f), Ok((_, bytes))) = (on_step, &answer) {
        f(SyncStep::Checking {
            bytes: *bytes as u64,
        });
    }
    answer
}

/// Create or advance the kiosk snapshot at `path` for the pinned `genesis` from `client`.
pub async fn sync_snapshot(
    client: &Client,
    genesis: &Genesis,
    path: &Path,
) -> Result<SyncReport, SyncError> {
    let snapshot_error = |message: String| SyncError::Snapshot {
        path: path.display().to_string(),
        message,
    };
    let (mut snap, from) = if path.exists() {
        let bytes = std::fs::read(path).map_err(|e| snapshot_error(e.to_string()))?;
        let snap =
            KioskSnapshot::decode(genesis, &bytes).map_err(|e| snapshot_error(e.to_string()))?;
        let h = snap.header().height;
        (snap, Some(h))
    } else {
        (KioskSnapshot::from_genesis(genesis)?, None)
    };
    let (bundle, bundle_bytes) = fetch(client, from, None).await?;
    snap.apply(&bundle)?;
    keyfile::write_public(path, &snap.encode())?;
    Ok(SyncReport::of(
        &snap,
        from,
        bundle_bytes,
        bundle.epochs.len(),
    ))
}

/// Create or advance the snapshot in the kiosk's database for the pinned `genesis` from
/// `client` (its URLs tried in turn), at time `now`. Every attempt is logged (heights, size,
/// the kind of a refusal); a refused or missing bundle leaves the stored snapshot untouched.
pub async fn sync_store(
    client: &Client,
    genesis: &Genesis,
    store: &crate::store::KioskStore,
    now: i64,
) -> Result<SyncReport, SyncError> {
    sync_store_with(client, genesis, store, now, None).await
}

/// [`sync_store`], reporting each step to `on_step` (`civis kiosk sync` draws its progress bar
/// from them).
pub async fn sync_store_with(
    client: &Client,
    genesis: &Genesis,
    store: &crate::store::KioskStore,
    now: i64,
    on_step: Option<&OnStep<'_>>,
) -> Result<SyncReport, SyncError> {
    advance_store(client, genesis, store, now, on_step)
        .await
        .map(|(report, _)| report)
}

/// [`sync_store_with`], also handing back the advanced snapshot (the running kiosk puts it in
/// use without reading it back). The stored snapshot is decoded only once a bundle is in: a
/// kiosk that finds no registry pays no decode.
pub(crate) async fn advance_store(
    client: &Client,
    genesis: &Genesis,
    store: &crate::store::KioskStore,
    now: i64,
    on_step: Option<&OnStep<'_>>,
) -> Result<(SyncReport, KioskSnapshot), SyncError> {
    let fresh = KioskSnapshot::from_genesis(genesis)?;
    let from = store.stored_height(&fresh.genesis_digest()).await?;
    let entry = |outcome, height, bundle_bytes, reason: Option<String>| crate::store::SyncEntry {
        at: now,
        from,
        height,
        bundle_bytes,
        outcome,
        reason,
    };
    let (bundle, bundle_bytes) = match fetch(client, from, on_step).await {
        Ok(b) => b,
        Err(e) => {
            let kind = match &e {
                civis_registry_client::Error::Malformed(_) => "refused",
                _ => "unreachable",
            };
            store
                .record(&entry(
                    kind,
                    None,
                    0,
                    Some(crate::kiosk::tame(&e.to_string())),
                ))
                .await?;
            return Err(e.into());
        }
    };
    let mut snap = match store.snapshot(genesis).await? {
        Some(s) => s.snapshot,
        None => fresh,
    };
    if let Err(e) = snap.apply(&bundle) {
        let reason = Some(crate::kiosk::tame(&e.to_string()));
        store
            .record(&entry("refused", None, bundle_bytes, reason))
            .await?;
        return Err(e.into());
    }
    if let Some(f) = on_step {
        f(SyncStep::Storing);
    }
    store.save(&snap, now).await?;
    let height = snap.header().height;
    store
        .record(&entry("advanced", Some(height), bundle_bytes, None))
        .await?;
    let report = SyncReport::of(&snap, from, bundle_bytes, bundle.epochs.len());
    Ok((report, snap))
}
