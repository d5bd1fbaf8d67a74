//! What a card receives inside its encrypted session (the applet target never gets past
//! AES-GCM): a DeviceRequest, each DocRequest's ReaderAuth, the kiosk accreditation attached to
//! it and its signature under a fixed governance root. Never panics; nothing forged verifies.
#![no_main]

use std::sync::OnceLock;

use civis_core::cbor::CborForm;
use civis_core::crypto::SoftwareKey;
use civis_core::kiosk::{self, KioskAccreditation};
use civis_core::mdoc::DeviceRequest;
use libfuzzer_sys::fuzz_target;

fn root() -> &'static SoftwareKey {
    static ROOT: OnceLock<SoftwareKey> = OnceLock::new();
    ROOT.get_or_init(|| SoftwareKey::from_scalar(&[2; 32]).expect("key"))
}

fuzz_target!(|data: &[u8]| {
    // The bytes as a statement on their own, then as a request carrying statements.
    let _ = KioskAccreditation::verify(data, root().public_key());
    let Ok(request) = DeviceRequest::from_slice(data) else {
        return;
    };
    for d in &request.doc_requests {
        let Some(auth) = d.reader_auth.as_ref() else {
            continue;
        };
        if let Ok(Some(statement)) = kiosk::attached(&auth.cose) {
            let _ = KioskAccreditation::verify_sign1(&statement, root().public_key());
        }
    }
    let _ = DeviceRequest::from_slice(&request.to_vec());
});
