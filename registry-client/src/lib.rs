//! `civis-registry-client`: how the CLI, the issuer and the kiosk talk to the registry chain
//! without depending on the registry app.
//!
//! - [`http`]: the client of the node's HTTP API, with the bodies typed in `civis_core::api`:
//!   several node URLs tried in turn, every answer read under a hard size cap, submit and wait,
//!   resolve, sync bundles.
//! - [`keyfile`]: private keys as JWK files, written atomically with mode 0600.
#![forbid(unsafe_code)]

pub mod error;
pub mod http;
pub mod keyfile;

pub use error::Error;
pub use http::Client;
