//! The Civis registry chain node.
//!
//! What will live here (issue #3): commonware `simplex` + `marshal` consensus behind a narrow trait,
//! deterministic `execute(state, block) -> state root` over an authenticated map, persistence of
//! finalized blocks, certificates and read models through sqlx (SQLite default, PostgreSQL in
//! production), and the HTTP API (submit, resolve, sync bundle). Transaction and header formats live
//! in `civis-core`.
#![forbid(unsafe_code)]

pub use civis_core as core;
