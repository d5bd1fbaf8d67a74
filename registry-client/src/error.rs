//! The one error type of the registry client.

use thiserror::Error;

/// What can go wrong talking to a registry node or handling key files.
#[derive(Debug, Error)]
pub enum Error {
    /// No node could be reached (every URL tried).
    #[error("registry unreachable: {0}")]
    Unreachable(String),
    /// The node answered with something that is not the expected body, or larger than allowed.
    #[error("malformed answer from the registry: {0}")]
    Malformed(String),
    /// The node refused the request because of its content (HTTP 400, 413, 422).
    #[error("refused by the registry: {0}")]
    Refused(String),
    /// Another pending transaction holds the signer's sequence number (HTTP 409).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The node is busy or limits this client (HTTP 429, 503); retrying later may succeed.
    #[error("registry busy: {0}")]
    Busy(String),
    /// Nothing under that name (HTTP 404).
    #[error("not found: {0}")]
    NotFound(String),
    /// The node failed on its side (HTTP 5xx).
    #[error("registry node error: {0}")]
    Node(String),
    /// A transaction did not leave the pool in time.
    #[error("transaction {0} still pending after {1:?}")]
    Timeout(String, std::time::Duration),
    /// A key file or another local file.
    #[error("{path}: {message}")]
    File {
        /// Which file.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A format check of core failed (e.g. a proof that does not verify).
    #[error(transparent)]
    Core(#[from] civis_core::Error),
}

impl Error {
    /// Whether trying another node (or later) may help.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable(_) | Self::Busy(_) | Self::Node(_))
    }
}
