//! The golden finalization certificate made by the real commonware engine
//! (`specs/vectors/chain/finalization.json`, written by the registry's simulation with
//! `CIVIS_BLESS=1`), verified here by `civis_core::chain::cert` alone: no commonware crate is a
//! dependency of core.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use civis_core::cbor::CborForm;
use civis_core::chain::block::Header;
use civis_core::chain::cert::{Finalization, ValidatorSet};
use civis_core::crypto::EcPublicKey;
use serde_json::Value;

fn golden() -> (ValidatorSet, Header, Vec<u8>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../specs/vectors/chain/finalization.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let hex = |k: &str| hex::decode(v[k].as_str().unwrap()).unwrap();
    let keys = v["validators"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| EcPublicKey::from_sec1(&hex::decode(k.as_str().unwrap()).unwrap()).unwrap())
        .collect();
    let set = ValidatorSet::new(v["namespace"].as_str().unwrap().as_bytes(), keys).unwrap();
    (
        set,
        Header::from_slice(&hex("header")).unwrap(),
        hex("finalization"),
    )
}

#[test]
fn the_engines_certificate_verifies_from_the_validator_set_alone() {
    let (set, header, bytes) = golden();
    let fin = Finalization::decode(&bytes).unwrap();
    assert_eq!(fin.proposal.payload, header.digest());
    assert_eq!(fin.proposal.epoch, 0);
    assert!(fin.signers.len() >= set.quorum());
    fin.verify(&set).unwrap();
    assert_eq!(fin.encode(), bytes, "byte-exact round trip");
}

#[test]
fn tampering_with_the_engines_certificate_is_refused() {
    let (set, _, bytes) = golden();
    // Any flipped bit in the proposal or a signature.
    for i in [0, 3, 10, bytes.len() - 1, bytes.len() - 40] {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        assert!(
            Finalization::decode(&b)
                .and_then(|f| f.verify(&set))
                .is_err(),
            "flip at {i} accepted"
        );
    }
    // Truncated and extended bytes.
    for n in [0, 1, 36, bytes.len() - 1] {
        assert!(Finalization::decode(&bytes[..n]).is_err());
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(Finalization::decode(&longer).is_err());
    // Below quorum: drop one signer.
    let mut fin = Finalization::decode(&bytes).unwrap();
    fin.signers.pop();
    fin.signatures.pop();
    assert!(fin.verify(&set).is_err());
    // Another validator set (another namespace) does not accept it.
    let other = ValidatorSet::new(b"another-chain", set.keys().to_vec()).unwrap();
    assert!(
        Finalization::decode(&bytes)
            .unwrap()
            .verify(&other)
            .is_err()
    );
}
