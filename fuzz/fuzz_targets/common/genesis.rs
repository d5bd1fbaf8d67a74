//! The small genesis the chain fuzz targets run against.

use civis_core::chain::state::Genesis;
use civis_core::crypto::SoftwareKey;
use civis_core::did::KeyCommitment;

/// One validator, one governance member, chain id `fuzz`.
pub fn genesis() -> Genesis {
    let k = |i: u8| SoftwareKey::from_scalar(&[i; 32]).expect("key");
    Genesis {
        chain_id: "fuzz".into(),
        time: 0,
        validators: vec![k(1).public_key().clone()],
        governance: vec![(
            k(2).public_key().clone(),
            KeyCommitment::to(k(3).public_key()),
        )],
        governance_threshold: 1,
        epoch_length: 100,
    }
}
