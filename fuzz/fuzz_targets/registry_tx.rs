//! Registry transaction decoding and application against a genesis state: never panics, and a
//! refused transaction never changes the state root.
#![no_main]

use std::sync::OnceLock;

use civis_core::chain::state::State;
use civis_core::chain::tx::SignedTx;
use libfuzzer_sys::fuzz_target;

#[path = "common/genesis.rs"]
mod genesis;

fn genesis_state() -> &'static State {
    static STATE: OnceLock<State> = OnceLock::new();
    STATE.get_or_init(|| State::genesis(&genesis::genesis()).expect("genesis"))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = SignedTx::decode(data) {
        let mut state = genesis_state().clone();
        let before = state.root();
        if state.apply(&tx, 1).is_err() {
            assert_eq!(
                state.root(),
                before,
                "a refused transaction changed the state"
            );
        }
    }
});
