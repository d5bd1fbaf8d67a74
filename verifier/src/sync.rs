//! Keeping a kiosk snapshot file in step with the registry: fetch a bundle (a delta from the
//! snapshot's height, or a first sync), check it with the light client, and replace the file
//! atomically. On any failure the old snapshot stays as it was.

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
}

// Not `#[from]`: that would also make the refusal the error's source, and reports that print
// the chain of sources would say it twice.
impl From<civis_core::chain::light::SyncError> for SyncError {
    fn from(e: civis_core::chain::light::SyncError) -> Self {
        Self::Refused(e)
    }
}

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
    let (bundle, bundle_bytes) = client.sync(from).await?;
    snap.apply(&bundle)?;
    keyfile::write_public(path, &snap.encode())?;
    let h = snap.header();
    Ok(SyncReport {
        from,
        height: h.height,
        state_root: h.state_root(),
        time: h.time,
        bundle_bytes,
        set_epoch: snap.epoch(),
        set_changes: bundle.epochs.len(),
    })
}
