//! Consensus: commonware `simplex` + `marshal` (pinned at 2026.10.0) behind Civis's narrow
//! [`Application`](crate::ledger::Application) trait.
//!
//! - [`block`]: the block as commonware's codec sees it.
//! - [`app`]: the bridge from marshal's application and reporter to the ledger.
//! - [`engine`]: one validator's engine, generic over runtime and network.
//! - [`gossip`]: mempool gossip between validators.
//! - [`keys`]: validator keys between Civis's and commonware's types.
//!
//! Validators sign with the secp256r1 scheme; the finalization certificate that results is the
//! one `civis_core::chain::cert` verifies byte for byte, without any of these crates.

pub mod app;
pub mod block;
pub mod engine;
pub mod gossip;
pub mod keys;

/// The signing scheme: secp256r1 (P-256 ECDSA), identities equal to signing keys.
pub type Scheme = commonware_consensus::simplex::scheme::secp256r1::Scheme<
    commonware_cryptography::secp256r1::standard::PublicKey,
>;
