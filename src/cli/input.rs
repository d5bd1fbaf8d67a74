//! Reading inputs: files may be raw bytes or hex text. The kiosk's command line (its own binary
//! too) defines the convention; every `civis` command shares it.

pub use civis_verifier::cli::{maybe_hex, read_bytes};
