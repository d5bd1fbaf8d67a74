//! Blocks as validators receive them from peers: never panics; a decoded block re-encodes to
//! bytes that decode to the same block.
#![no_main]

use civis_core::chain::block::Block;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(b) = Block::decode(data) {
        assert_eq!(Block::decode(&b.encode()).ok().as_ref(), Some(&b));
    }
});
