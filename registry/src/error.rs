//! The registry node's error type.

use civis_core::chain::state::Refused;
use thiserror::Error;

use crate::store::StoreError;

/// Everything that can go wrong in the node. The HTTP API maps each kind to a status code.
#[derive(Debug, Error)]
pub enum Error {
    /// Input that does not decode (transaction, DID, query).
    #[error("malformed input: {0}")]
    Malformed(String),
    /// The state refused a transaction.
    #[error("refused: {0}")]
    Refused(Refused),
    /// A node refused a transaction (its message, as a client sees it).
    #[error("refused by the node: {0}")]
    Rejected(String),
    /// Another pending transaction holds this slot.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A limit was hit; retrying later may succeed.
    #[error("busy: {0}")]
    Busy(String),
    /// This client asked too often; it may retry after this many seconds.
    #[error("too many requests; retry in {0} s")]
    RateLimited(u64),
    /// Nothing under that name.
    #[error("not found: {0}")]
    NotFound(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The consensus engine failed.
    #[error("consensus: {0}")]
    Consensus(String),
    /// Bad configuration or files (genesis, keys, directory).
    #[error("configuration: {0}")]
    Config(String),
    /// File or network I/O.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

impl From<civis_core::Error> for Error {
    fn from(e: civis_core::Error) -> Self {
        Self::Malformed(e.to_string())
    }
}

impl From<civis_registry_client::Error> for Error {
    fn from(e: civis_registry_client::Error) -> Self {
        Self::Config(e.to_string())
    }
}
