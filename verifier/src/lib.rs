//! The verifier kiosk.
//!
//! What will live here: the registry sync client (light client in `civis-core`), offline
//! verification with [`civis_core::verify`], NFC and QR intake, the local kiosk screen, and the
//! e-voting station profile.
#![forbid(unsafe_code)]

pub use civis_core as core;
pub use civis_firmware_bridge as bridge;
