//! `civis-core`: the formats and checks every Civis component speaks.
//!
//! No I/O, no async, no clock: time, randomness, keys and trust state are parameters.
//!
//! - [`api`]: the registry's HTTP request and answer bodies.
//! - [`issuer_api`]: the issuer service's HTTP request and answer bodies.
//! - [`cose`]: COSE_Sign1 / ES256 with per-structure signing domains and a [`cose::Signer`] trait.
//! - [`mdoc`]: ISO 18013-5 credentials — issue, present, verify.
//! - [`session`]: ISO 18013-5 session encryption and MAC keys.
//! - [`did`]: the `did:civis` method.
//! - [`status`]: IETF Token Status Lists and their deltas.
//! - [`apdu`]: ISO 7816-4 APDUs.
//! - [`card`]: the citizen card's command set (AIDs, instructions, personalization MAC).
//! - [`ndef`]: NDEF records and the 18013-5 NFC static handover.
//! - [`qr`]: kiosk engagements and QR presentations for phone wallets.
//! - [`kiosk`]: the governance-signed kiosk accreditation cards check in ReaderAuth.
//! - [`verdict`]: the reasons behind `reject` and `undetermined` (a leaf both verifiers use).
//! - [`verify`]: the offline verification engine and its verdicts.
//! - `ssi_did` (feature `ssi`): a `did:civis` resolver for the `ssi` crate, from a verified
//!   kiosk snapshot (the one async trait impl in core; it does no I/O).
#![forbid(unsafe_code)]

pub mod apdu;
pub mod api;
pub mod card;
pub mod cbor;
pub mod chain;
pub mod cose;
pub mod crypto;
pub mod did;
pub mod error;
pub mod evote;
pub mod issuer_api;
pub mod jwk;
pub mod kiosk;
pub mod mdoc;
pub mod ndef;
pub mod qr;
pub mod session;
#[cfg(feature = "ssi")]
pub mod ssi_did;
pub mod status;
pub mod timestamp;
pub mod verdict;
pub mod verify;
pub mod vrf;
pub mod x509;

pub use error::{Error, Result};
pub use timestamp::Timestamp;
