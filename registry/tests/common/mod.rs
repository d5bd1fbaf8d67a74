//! Shared test fixtures: deterministic keys, a genesis with validators and governance, and signed
//! transactions.
#![allow(dead_code)]

use civis_core::chain::state::Genesis;
use civis_core::chain::tx::{Op, SignedTx, Tx};
use civis_core::crypto::SoftwareKey;
use civis_core::did::{Did, KeyCommitment};
use sha2::Digest;

/// A key derived from a label.
pub fn key(label: &str) -> SoftwareKey {
    SoftwareKey::from_scalar(&sha2::Sha256::digest(label.as_bytes())).unwrap()
}

/// A DID holder with deterministic keys.
pub struct Holder {
    /// Label.
    pub label: String,
    /// Current key.
    pub key: SoftwareKey,
    /// Next key.
    pub next: SoftwareKey,
    /// Its DID.
    pub did: Did,
    /// Next sequence number.
    pub seq: u64,
}

impl Holder {
    /// Holder `label`.
    pub fn new(label: &str) -> Self {
        let key = key(&format!("{label}/0"));
        let next = key_next(label);
        let did = Did::from_inception(key.public_key(), &KeyCommitment::to(next.public_key()));
        Self {
            label: label.into(),
            key,
            next,
            did,
            seq: 0,
        }
    }

    /// Its create-did transaction.
    pub fn create(&self, chain: &str) -> SignedTx {
        SignedTx::sign(
            Tx {
                chain: chain.into(),
                seq: 0,
                op: Op::CreateDid {
                    key: self.key.public_key().clone(),
                    next: KeyCommitment::to(self.next.public_key()),
                },
            },
            self.did.key_url(1),
            &self.key,
        )
        .unwrap()
    }

    /// Sign `op` with the next sequence number.
    pub fn sign(&mut self, chain: &str, op: Op) -> SignedTx {
        let tx = SignedTx::sign(
            Tx {
                chain: chain.into(),
                seq: self.seq,
                op,
            },
            self.did.key_url(1),
            &self.key,
        )
        .unwrap();
        self.seq += 1;
        tx
    }
}

fn key_next(label: &str) -> SoftwareKey {
    key(&format!("{label}/1"))
}

/// The governance holder of [`genesis`].
pub fn governance() -> Holder {
    Holder::new("governance")
}

/// Validator `i`'s key.
pub fn validator(i: usize) -> SoftwareKey {
    key(&format!("validator/{i}"))
}

/// A genesis with `n` validators and one governance member.
pub fn genesis(chain: &str, n: usize, time: i64) -> Genesis {
    let gov = governance();
    Genesis {
        chain_id: chain.into(),
        time,
        validators: (0..n).map(|i| validator(i).public_key().clone()).collect(),
        governance: vec![(
            gov.key.public_key().clone(),
            KeyCommitment::to(gov.next.public_key()),
        )],
        governance_threshold: 1,
        epoch_length: civis_core::chain::state::DEFAULT_EPOCH_LENGTH,
    }
}

/// A finalization certificate of `header` by validators `who` (indexes into the sorted set), in
/// the exact commonware secp256r1 form (the simulation checks that form against the real engine).
pub fn certify(
    chain: &str,
    keys: &[SoftwareKey],
    header: &civis_core::chain::block::Header,
    who: &[usize],
) -> Vec<u8> {
    use civis_core::chain::cert::{Proposal, ValidatorSet};
    let set = ValidatorSet::new(
        chain.as_bytes(),
        keys.iter().map(|k| k.public_key().clone()).collect(),
    )
    .unwrap();
    let signers: Vec<&SoftwareKey> = who
        .iter()
        .map(|&i| {
            keys.iter()
                .find(|k| k.public_key() == &set.keys()[i])
                .unwrap()
        })
        .collect();
    let proposal = Proposal {
        epoch: header.epoch,
        view: header.height + 1,
        parent_view: header.height,
        payload: header.digest(),
    };
    set.certify(proposal, &signers).unwrap().encode()
}
