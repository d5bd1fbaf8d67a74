//! Reader side of an mdoc session: the card's SessionData as the reader decodes and decrypts
//! it, under fixed session keys (the fuzzer also finds inputs that decrypt: it can reuse the
//! seed's ciphertext). Never panics.
#![no_main]

use std::sync::OnceLock;

use civis_core::cbor::CborForm;
use civis_core::crypto::SoftwareKey;
use civis_core::mdoc::{SessionData, SessionTranscript};
use civis_core::session::{Role, Session};
use libfuzzer_sys::fuzz_target;

fn keys() -> &'static (SoftwareKey, SoftwareKey, Vec<u8>) {
    static KEYS: OnceLock<(SoftwareKey, SoftwareKey, Vec<u8>)> = OnceLock::new();
    KEYS.get_or_init(|| {
        let reader = SoftwareKey::from_scalar(&[5; 32]).expect("key");
        let device = SoftwareKey::from_scalar(&[6; 32]).expect("key");
        let transcript =
            SessionTranscript::new(None, None, ciborium::Value::Null).tagged_bytes();
        (reader, device, transcript)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(sd) = SessionData::from_slice(data) else {
        return;
    };
    let (reader, device, transcript) = keys();
    let mut s = Session::new(Role::Reader, reader, device.public_key(), transcript);
    if let Some(ct) = sd.data.as_deref() {
        let _ = s.decrypt(ct);
    }
    let _ = SessionData::from_slice(&sd.to_vec());
});
