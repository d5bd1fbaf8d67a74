//! Everything between software and a physical citizen card.
//!
//! - [`transport`]: the [`CardTransport`] trait and the in-process transport (the applet in this
//!   process, for unit tests and the demo).
//! - [`reader`]: the reader side of the card protocol over any transport — NDEF engagement, the
//!   mdoc session over ENVELOPE / GET RESPONSE, card info, INTERNAL AUTHENTICATE and
//!   personalization.
//! - `virtual_card` (feature `card`, on by default): the applet behind pcscd's vpcd reader
//!   (`civis card serve`). A kiosk builds without `card`: it links the reader side only, not
//!   the applet and not the vpcd host.
//! - `nfc` (feature `nfc`): real readers through libnfc — its PC/SC driver and the native
//!   PN53x drivers — each on its own thread.
#![forbid(unsafe_code)]

pub mod error;
#[cfg(feature = "nfc")]
pub mod nfc;
pub mod reader;
pub mod transport;
#[cfg(feature = "card")]
pub mod virtual_card;

pub use civis_core::apdu;
#[cfg(feature = "card")]
pub use civis_wallet_core as wallet;
pub use error::{Error, Result};
pub use transport::CardTransport;
