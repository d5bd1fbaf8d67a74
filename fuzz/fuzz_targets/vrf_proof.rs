//! ECVRF proof decoding and verification: never panics, and a proof that decodes re-encodes to
//! the same 81 bytes (one proof, one byte string).
#![no_main]

use civis_core::vrf::{self, VrfProof, VrfSecretKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(proof) = VrfProof::from_bytes(data) {
        assert_eq!(&proof.to_bytes()[..], data);
        let key = VrfSecretKey::from_scalar(&[7; 32]).expect("key");
        let _ = vrf::verify(key.public_key(), b"civis fuzz", &proof);
        let _ = proof.output();
    }
});
