//! The card-info record a reader gets from GET DATA: never panics; what decodes re-encodes to
//! the same record.
#![no_main]

use civis_core::card::CardInfo;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(info) = CardInfo::decode(data) {
        assert_eq!(CardInfo::decode(&info.encode()).ok(), Some(info));
    }
});
