//! The Civis registry chain node.
//!
//! - [`ledger`]: the application consensus orders — execution, finalized head, mempool — behind
//!   the narrow [`ledger::Application`] trait.
//! - [`consensus`]: commonware `simplex` + `marshal` (2026.10.0) driving that trait.
//! - [`store`]: finalized blocks and state through sqlx (SQLite, PostgreSQL) or in memory, one
//!   database transaction per block.
//! - [`mempool`]: bounded pending transactions.
//! - [`api`]: the HTTP API (axum); [`http_server`] serves it within connection limits.
//! - [`bulk_reads`]: sync bundles, status lists and blocks cached, built off the consensus
//!   threads one at a time, limited per client.
//! - [`files`]: the registry directory (`genesis.json`, keys, `network.json`).
//! - [`node`]: a validator process on tokio with authenticated p2p.
//!
//! Formats live in `civis-core`; clients use `civis-registry-client`; the specs are in `specs/`.
#![forbid(unsafe_code)]

pub mod api;
pub mod bulk_reads;
pub mod consensus;
pub mod error;
pub mod files;
/// Serving within connection limits (the shared `civis-http-serve` crate).
pub use civis_http_serve as http_server;
pub mod ledger;
pub mod mempool;
pub mod node;
pub mod store;

pub use civis_core as core;
pub use error::Error;
