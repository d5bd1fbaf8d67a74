//! QR texts and their CBOR from a camera: never panic; what decodes re-encodes to the same bytes.
#![no_main]

use civis_core::qr::{KioskEngagement, QrPresentation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = KioskEngagement::decode(data) {
        assert_eq!(KioskEngagement::decode(&e.encode()).expect("re-decode"), e);
    }
    if let Ok(p) = QrPresentation::decode(data) {
        assert_eq!(QrPresentation::decode(&p.encode()).expect("re-decode"), p);
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = KioskEngagement::from_text(text);
        let _ = QrPresentation::from_text(text);
    }
});
