//! Holder logic for Civis credentials, and the citizen-card applet.
//!
//! - [`holder`]: stored credentials, consent and intent-to-retain, building ISO 18013-5
//!   `DeviceResponse`s with selective disclosure.
//! - [`device_key`]: device signatures through the [`DeviceKey`] trait (card key, phone key,
//!   software key).
//! - [`applet`]: the on-card program as a sans-IO state machine (APDU in, APDU out, persistent
//!   state as a value the host stores).
#![forbid(unsafe_code)]

pub mod applet;
pub mod device_key;
pub mod error;
pub mod holder;

pub use civis_core as core;
pub use device_key::DeviceKey;
pub use error::{Error, Result};
