//! The verifier kiosk: registry sync into the kiosk's database ([`sync`], [`store`]), offline
//! verification against it ([`station`], [`policy`]), card and phone intake ([`intake`],
//! [`frames`]), the local screen ([`screen`], [`kiosk`], [`messages`]) with the holder's
//! review of the card's read log ([`review`]), and the e-voting station's pseudonym ledger
//! ([`ledger`]).
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
pub mod review;
pub mod screen;
pub mod station;
pub mod store;
pub mod sync;

pub use civis_core as core;
pub use civis_firmware_bridge as bridge;
