//! DeviceResponse decode + verify against a fixed transcript and trust anchor: never panics,
//! and whatever decodes re-encodes to something that decodes to the same structure.
#![no_main]

use std::sync::OnceLock;

use civis_core::Timestamp;
use civis_core::cbor::CborForm;
use civis_core::crypto::SoftwareKey;
use civis_core::mdoc::{self, DeviceResponse, SessionTranscript, TrustAnchor, VerifyContext};
use libfuzzer_sys::fuzz_target;

struct Ctx {
    transcript: SessionTranscript,
    anchors: Vec<TrustAnchor>,
    reader: SoftwareKey,
}

fn ctx() -> &'static Ctx {
    static CTX: OnceLock<Ctx> = OnceLock::new();
    CTX.get_or_init(|| {
        let issuer = SoftwareKey::from_scalar(&[7; 32]).expect("key");
        Ctx {
            transcript: SessionTranscript::new(None, None, ciborium::Value::Null),
            anchors: vec![TrustAnchor::DidKey {
                kid: civis_core::did::Did::from_inception(
                    issuer.public_key(),
                    &civis_core::did::KeyCommitment::to(issuer.public_key()),
                )
                .key_url(1),
                key: issuer.public_key().clone(),
            }],
            reader: SoftwareKey::from_scalar(&[9; 32]).expect("key"),
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let c = ctx();
    if let Ok(resp) = DeviceResponse::from_slice(data) {
        // Keys may come in any order, so compare structures, not bytes.
        let again =
            DeviceResponse::from_slice(&resp.to_vec()).expect("a re-encoded response decodes");
        assert_eq!(again.to_vec(), resp.to_vec(), "re-encoding is stable");
    }
    let vc = VerifyContext {
        transcript: &c.transcript,
        anchors: &c.anchors,
        at: Timestamp(1_700_000_000),
        reader_key: Some(&c.reader),
        request: None,
    };
    let _ = mdoc::verify_bytes(data, &vc);
});
