//! The verifier kiosk.
//!
//! Today: [`sync`], the kiosk side of registry sync (the light client in `civis-core` advancing
//! a snapshot from sync bundles), kept in the kiosk's SQLite database ([`store`]). To come: offline verification with
//! [`civis_core::verify`], NFC and QR intake, the local kiosk screen, and the e-voting station
//! profile.
#![forbid(unsafe_code)]

#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
pub mod frames;
pub mod intake;
pub mod kiosk;
pub mod ledger;
pub mod messages;
pub mod outcome;
pub mod policy;
pub mod screen;
pub mod station;
pub mod store;
pub mod sync;

pub use civis_core as core;
pub use civis_firmware_bridge as bridge;
