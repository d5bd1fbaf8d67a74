//! The NFC static handover a reader reads from a card's NDEF file: NDEF records, the Handover
//! Select with its carrier records, and the DeviceEngagement it carries. Never panics; what
//! parses re-encodes to something that parses the same.
#![no_main]

use civis_core::cbor::CborForm;
use civis_core::mdoc::DeviceEngagement;
use civis_core::ndef;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = ndef::parse(data) {
        if let Ok(again) = ndef::encode(&records) {
            assert_eq!(ndef::parse(&again).ok().as_ref(), Some(&records));
        }
    }
    if let Ok(h) = ndef::parse_static_handover(data) {
        let _ = DeviceEngagement::from_slice(&h.device_engagement);
    }
});
