//! Holder logic for Civis credentials.
//!
//! What will live here (issue #4): stored credentials and consent, building ISO 18013-5
//! `DeviceResponse`s with selective disclosure, device signatures through a `DeviceKey` trait,
//! the compact QR presentation for phone wallets, and **the card applet** — the on-card program as
//! a sans-IO state machine (APDU in, APDU out, persistent state as a value the host stores).
//!
//! Today it only re-exports the core formats it will build on.
#![forbid(unsafe_code)]

pub use civis_core as core;
