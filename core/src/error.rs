//! The one error type of `civis-core`.
//!
//! Errors carry no personal data: element *identifiers* may appear, element values never do.

use thiserror::Error;

/// Everything that can go wrong while decoding or checking Civis formats.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// Bytes that do not form the expected structure.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// Which structure was being decoded.
        what: &'static str,
        /// What was wrong with it.
        detail: String,
    },
    /// Input larger than the limit for its kind.
    #[error("{what} of {len} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Which structure.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        limit: usize,
    },
    /// CBOR with more data items than the decode's budget ([`crate::cbor::Limits::max_items`]).
    #[error("{what} holds more than {limit} CBOR items")]
    TooManyItems {
        /// Which structure.
        what: &'static str,
        /// The budget.
        limit: usize,
    },
    /// CBOR nested deeper than allowed.
    #[error("CBOR nested deeper than {0} levels")]
    TooDeep(usize),
    /// A valid structure outside the profile Civis accepts.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A signature or MAC did not verify.
    #[error("{0} does not verify")]
    BadSignature(&'static str),
    /// A key that cannot be used (wrong curve, not on the curve, wrong encoding).
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// AES-GCM decryption failed (wrong key, wrong counter or tampered ciphertext).
    #[error("decryption failed")]
    Decrypt,
    /// An X.509 certificate problem.
    #[error("certificate: {0}")]
    Certificate(String),
    /// A value that is well formed but breaks a rule of the format.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// Which value.
        what: &'static str,
        /// The rule it breaks.
        detail: String,
    },
    /// A signer (card, HSM, software key) failed to produce a signature.
    #[error("signer failed: {0}")]
    Signer(String),
}

impl Error {
    /// Shorthand for [`Error::Malformed`].
    pub fn malformed(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Malformed {
            what,
            detail: detail.into(),
        }
    }

    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            detail: detail.into(),
        }
    }
}

/// Result with the core [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
