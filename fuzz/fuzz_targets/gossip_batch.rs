//! Mempool gossip batches from peers: framing and every transaction in them. Never panics.
#![no_main]

use civis_core::chain::gossip::decode_batch;
use civis_core::chain::tx::SignedTx;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(txs) = decode_batch(data) {
        for tx in txs {
            if let Ok(t) = SignedTx::decode(tx) {
                assert_eq!(SignedTx::decode(t.bytes()).ok().as_ref(), Some(&t));
            }
        }
    }
});
