//! Registry chain types that kiosks and validators share (issue #3).
//!
//! - [`cert`]: the finality certificate (commonware simplex, secp256r1 scheme), checked from a
//!   pinned validator set alone, without commonware's consensus, runtime or p2p crates.
//! - [`smt`]: the authenticated map (compacted sparse Merkle tree) with inclusion and
//!   non-inclusion proofs.
//! - [`tx`]: signed registry transactions.
//! - [`table`]: the state's tables and the Merkle path of each entry.
//! - [`state`]: the registry state and the authorization rules of every operation.
//! - [`block`]: headers, blocks, proposer build and validator re-execution.
//! - [`genesis`]: the `genesis.json` text form.
//! - [`gossip`]: the mempool gossip batch validators exchange.
//! - [`light`]: the kiosk light client and sync bundles.

pub mod block;
pub mod cert;
pub mod genesis;
pub mod gossip;
pub mod light;
pub mod smt;
pub mod state;
pub mod table;
pub mod tx;
