//! The one error type of `civis-wallet-core`.

use thiserror::Error;

/// What can go wrong in holder logic or in the card applet's host-facing calls.
#[derive(Debug, Error)]
pub enum Error {
    /// A core format or cryptographic check failed.
    #[error(transparent)]
    Core(#[from] civis_core::Error),
    /// The stored card state does not decode (corrupt or from another version).
    #[error("card state: {0}")]
    State(String),
    /// No stored credential of the requested document type.
    #[error("no credential of docType {0:?}")]
    NoCredential(String),
    /// The device key could not sign.
    #[error("device key: {0}")]
    DeviceKey(String),
}

/// Result with the wallet-core [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
