//! Token Status List and delta decoding: never panics, decompression stays bounded, and a
//! decoded list survives get/set and (when small) re-encoding.
#![no_main]

use civis_core::status::{StatusDelta, StatusList};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut list) = StatusList::from_cbor(data) {
        let n = list.len();
        if n > 0 {
            let _ = list.get(n - 1);
            let _ = list.get(n);
            let _ = list.set(n / 2, 1);
        }
        // Re-compressing inputs that inflate to the 32 MiB cap would make the fuzzer measure
        // zlib, not our code; the round trip of small lists covers the encoder.
        if list.as_bytes().len() <= 64 * 1024 {
            let again = StatusList::from_cbor(&list.to_cbor()).expect("re-encoded list decodes");
            assert_eq!(again, list);
        }
        if let Ok(delta) = StatusDelta::from_cbor(data) {
            let _ = list.apply(&delta);
        }
    }
    if let Ok(delta) = StatusDelta::from_cbor(data) {
        assert_eq!(
            StatusDelta::from_cbor(&delta.to_cbor()).expect("round trip"),
            delta
        );
    }
});
