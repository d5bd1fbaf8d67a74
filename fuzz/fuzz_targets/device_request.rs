//! What a card receives inside its encrypted session (the applet target never gets past
//! AES-GCM): a DeviceRequest, each DocRequest's ReaderAuth, the kiosk accreditation attached to
//! it and its signature under a fixed governance set, and the governance rotations a card is
//! pushed. Never panics; nothing forged verifies or rotates the set.
#![no_main]

use std::sync::OnceLock;

use civis_core::card::governance::GovernanceSet;
use civis_core::cbor::CborForm;
use civis_core::crypto::SoftwareKey;
use civis_core::did::KeyCommitment;
use civis_core::kiosk::{self, KioskAccreditation};
use civis_core::mdoc::DeviceRequest;
use libfuzzer_sys::fuzz_target;

fn root() -> &'static SoftwareKey {
    static ROOT: OnceLock<SoftwareKey> = OnceLock::new();
    ROOT.get_or_init(|| SoftwareKey::from_scalar(&[2; 32]).expect("key"))
}

fn governance() -> &'static GovernanceSet {
    static SET: OnceLock<GovernanceSet> = OnceLock::new();
    SET.get_or_init(|| {
        let next = SoftwareKey::from_scalar(&[3; 32]).expect("key");
        GovernanceSet::from_inception(
            "civis-fuzz",
            &[(
                root().public_key().clone(),
                KeyCommitment::to(next.public_key()),
            )],
        )
        .expect("set")
    })
}

fuzz_target!(|data: &[u8]| {
    // The bytes as a rotation pushed to the card: nobody without the member's key gets one in.
    let mut set = governance().clone();
    assert!(set.rotate(data).is_err() || set == *governance());
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
            let _ = governance().verify_accreditation(&statement);
        }
    }
    let _ = DeviceRequest::from_slice(&request.to_vec());
});
