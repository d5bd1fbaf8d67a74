//! The kiosk's light client: a pinned genesis, a certified header, and the kiosk subtree it
//! commits — advanced by sync bundles, turned into the verification engine's trust snapshot.
//!
//! A bundle is a checkpoint, not a replay: the latest directly finalized header and its
//! certificate, the certified validator-set changes since the kiosk's epoch, and what changed in
//! the kiosk tree since the kiosk's height — or since genesis on a first sync, since every kiosk
//! recomputes the genesis state itself. Changed entries travel whole, except status-list chunks:
//! those travel as status changes `(list id, gap-encoded index/value pairs)`, a few bytes each,
//! which the kiosk applies to its own chunks (synthesizing the zero chunks of new lists). The
//! kiosk adopts the result only if the recomputed root equals the certified header's kiosk
//! sub-root. Size and cost grow with the changes, never with the number of blocks in between.

//!
//! The modules: [`bundle`] (the wire form and how a node builds it), [`snapshot`] (what a kiosk
//! holds and how it checks a bundle) and [`file`] (the kiosk's stored form).

pub mod bundle;
pub mod file;
pub mod snapshot;

use thiserror::Error;

pub use bundle::{Changes, EpochChange, StatusChanges, SyncBundle};
pub use file::MAX_SNAPSHOT_LEN;
pub use snapshot::KioskSnapshot;

/// Largest bundle accepted.
pub const MAX_BUNDLE_LEN: usize = 64 * 1024 * 1024;
/// Most list bytes a bundle may make a kiosk synthesize for new lists. Zero chunks are built
/// before the sub-root check, so this bounds what a replayed header with forged list entries
/// can make a kiosk allocate (a review measured 946 MB of peak memory at the earlier 256 MiB).
/// 64 MiB is 2^28 two-bit entries of new lists per bundle, 25 times the ten million entries the
/// design targets; a chain that outgrows it needs kiosks that sync more often than its lists
/// grow by that much, or a larger budget.
pub const MAX_SYNTHESIZED_BYTES: usize = 64 * 1024 * 1024;

/// Why a bundle was refused. The kiosk keeps its previous state.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SyncError {
    /// Bytes that are not a bundle.
    #[error("malformed bundle: {0}")]
    Malformed(String),
    /// A bundle of another chain.
    #[error("bundle is for chain {0:?}")]
    ForeignChain(String),
    /// A snapshot file made for another genesis than the one the kiosk pins.
    #[error("the snapshot was made for another genesis")]
    ForeignGenesis,
    /// A certificate that does not verify against the kiosk's validator set.
    #[error("certificate refused: {0}")]
    Certificate(String),
    /// The certificate is not for this header.
    #[error("certificate is for another block")]
    CertificateMismatch,
    /// A header older than the kiosk's.
    #[error("rollback from height {have} to {got}")]
    Rollback {
        /// The kiosk's height.
        have: u64,
        /// The bundle's.
        got: u64,
    },
    /// Two certified headers at one height: both kept as evidence.
    #[error("two certified blocks at height {0}")]
    Equivocation(u64),
    /// A delta relative to another height than the kiosk's.
    #[error("delta is relative to height {got}, the kiosk is at {have}")]
    WrongBase {
        /// The kiosk's height.
        have: u64,
        /// The delta's base.
        got: u64,
    },
    /// The entries do not reproduce the certified kiosk sub-root.
    #[error("kiosk sub-root does not match the certified header")]
    SubRootMismatch,
    /// A validator-set change that does not follow the kiosk's epoch or proof.
    #[error("validator-set change refused: {0}")]
    EpochChange(String),
    /// The status lists the entries describe are not whole (a chunk missing, extra or of the
    /// wrong size, or chunks of no list).
    #[error("status lists refused: {0}")]
    Lists(String),
}

fn malformed(e: impl std::fmt::Display) -> SyncError {
    SyncError::Malformed(e.to_string())
}
