//! The one error type of `civis-firmware-bridge`.

use civis_core::apdu::StatusWord;
use thiserror::Error;

/// What can go wrong between a host and a card.
#[derive(Debug, Error)]
pub enum Error {
    /// The link to the card failed (reader gone, card removed, socket closed).
    #[error("card link: {0}")]
    Link(String),
    /// The card answered a command with an error status.
    #[error("card refused {command}: status {status}")]
    Status {
        /// Which command.
        command: &'static str,
        /// The status word.
        status: StatusWord,
    },
    /// The card's answer broke the protocol (wrong length, undecodable message).
    #[error("card protocol: {0}")]
    Protocol(String),
    /// The mdoc session ended with a status (10 decryption, 11 decoding, 20 termination).
    #[error("the card ended the session with status {0}")]
    SessionStatus(u64),
    /// A core format or cryptographic check failed.
    #[error(transparent)]
    Core(#[from] civis_core::Error),
    /// Holder logic or card state failed.
    #[cfg(feature = "card")]
    #[error(transparent)]
    Wallet(#[from] civis_wallet_core::Error),
    /// Local I/O (state files, sockets).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// Result with the firmware-bridge [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
