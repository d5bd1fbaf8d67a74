//! COSE_Sign1 decode and verify: never panics.
#![no_main]

use civis_core::cose;
use civis_core::crypto::SoftwareKey;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(sign1) = cose::decode_sign1(data) {
        let key = SoftwareKey::from_scalar(&[7; 32]).expect("key");
        let _ = cose::verify_sign1_with_aad(&sign1, key.public_key(), b"", None);
        let _ = cose::x5chain(&sign1);
        let _ = cose::encode_sign1(&sign1);
    }
});
