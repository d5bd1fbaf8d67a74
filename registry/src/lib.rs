//! The Civis registry chain node.
//!
//! Today: [`store`] — persistence of finalized blocks and of the state they produce, through sqlx
//! (SQLite by default, PostgreSQL in production) with an in-memory twin for the deterministic
//! simulation, one database transaction per block, idempotent on height, recovered after a crash.
//! Still to come (issue #3): commonware `simplex` + `marshal` consensus behind a narrow trait, the
//! HTTP API and the `civis registry` commands. Formats live in `civis-core`.
#![forbid(unsafe_code)]

pub mod store;

pub use civis_core as core;
