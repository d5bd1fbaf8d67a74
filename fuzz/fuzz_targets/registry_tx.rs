//! Registry transaction decoding and application against a genesis state: never panics, and a
//! refused transaction never changes the state root.
#![no_main]

use std::sync::OnceLock;

use civis_core::chain::state::{Genesis, State};
use civis_core::chain::tx::SignedTx;
use civis_core::crypto::SoftwareKey;
use civis_core::did::KeyCommitment;
use libfuzzer_sys::fuzz_target;

fn genesis_state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| {
        let k = |i: u8| SoftwareKey::from_scalar(&[i; 32]).expect("key");
        let g = Genesis {
            chain_id: "fuzz".into(),
            time: 0,
            validators: vec![k(1).public_key().clone()],
            governance: vec![(k(2).public_key().clone(), KeyCommitment::to(k(3).public_key()))],
            governance_threshold: 1,
        };
        State::genesis(&g).expect("genesis")
    })
}

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = SignedTx::decode(data) {
        let mut state = genesis_state().clone();
        let before = state.root();
        if state.apply(&tx, 1).is_err() {
            assert_eq!(state.root(), before, "a refused transaction changed the state");
        }
    }
});
