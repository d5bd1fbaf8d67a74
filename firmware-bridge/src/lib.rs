//! Everything between software and a physical citizen card.
//!
//! What will live here (issue #4): a `CardTransport` trait with an in-process transport for unit
//! tests; the reader side over `nfc1`/libnfc (feature `nfc`, on its own thread); and the virtual
//! card that runs the wallet-core applet behind pcscd's vpcd reader, so every PC/SC or libnfc tool
//! sees a real card. APDUs are encoded and parsed with [`civis_core::apdu`].
#![forbid(unsafe_code)]

pub use civis_core::apdu;
pub use civis_wallet_core as wallet;
