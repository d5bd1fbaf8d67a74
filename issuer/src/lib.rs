//! The agency issuer service.
//!
//! What will live here: enrollment, card personalization, credential minting with
//! [`civis_core::mdoc::issue`], status management, PKCS#11 HSM keys (SoftHSM2 in tests) behind the
//! core [`civis_core::cose::Signer`] trait, and W3C VC issuance for phone wallets — an axum + sqlx
//! service with a CLI.
#![forbid(unsafe_code)]

pub use civis_core as core;
pub use civis_firmware_bridge as bridge;
pub use civis_wallet_core as wallet;
