//! The card applet fed random APDU sequences: never panics, every answer is a well-formed
//! response APDU, committed before the answer, and the persistent state always encodes to bytes that decode to the same
//! state. The input is split into APDUs at 0xFF 0xFF markers; a 0xFF 0xFE marker resets the
//! card (a new tap).
#![no_main]

use civis_core::card::TransportKey;
use civis_wallet_core::applet::{Card, CardState, MemoryNvm};
use libfuzzer_sys::fuzz_target;

#[path = "common/rng.rs"]
mod rng;
use rng::Counter;

fuzz_target!(|data: &[u8]| {
    let blank = CardState::blank([1; 16], TransportKey([0x42; 32]));
    let mut memory = MemoryNvm::new(blank.clone());
    let mut card = Card::new(blank);
    let mut rng = Counter(7);
    let mut rest = data;
    while !rest.is_empty() {
        let end = rest.windows(2).position(|w| w[0] == 0xFF && (w[1] == 0xFF || w[1] == 0xFE));
        let (apdu, marker, tail) = match end {
            Some(i) => (&rest[..i], rest[i + 1], &rest[i + 2..]),
            None => (rest, 0, &rest[rest.len()..]),
        };
        let reply = card.process(apdu, &mut rng, &mut memory).expect("memory never fails here");
        assert!(civis_core::apdu::Response::parse(&reply).is_ok());
        assert_eq!(memory.state(), card.state(), "answered before committing");
        let bytes = card.state().encode();
        assert_eq!(&CardState::decode(&bytes).expect("state decodes"), card.state());
        if marker == 0xFE {
            card.reset();
        }
        rest = tail;
    }
});
