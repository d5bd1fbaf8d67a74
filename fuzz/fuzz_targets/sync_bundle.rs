//! Sync bundle decoding and application by a kiosk at genesis: never panics, and a refused
//! bundle leaves the kiosk's header and tree unchanged.
#![no_main]

use std::sync::OnceLock;

use civis_core::chain::light::{KioskSnapshot, SyncBundle};
use libfuzzer_sys::fuzz_target;

#[path = "common/genesis.rs"]
mod genesis;

fn kiosk() -> &'static KioskSnapshot {
    static KIOSK: OnceLock<KioskSnapshot> = OnceLock::new();
    KIOSK.get_or_init(|| KioskSnapshot::from_genesis(&genesis::genesis()).expect("genesis"))
}

fuzz_target!(|data: &[u8]| {
    if let Ok(bundle) = SyncBundle::decode(data) {
        let mut k = kiosk().clone();
        let root = k.tree().root();
        if k.apply(&bundle).is_err() {
            assert_eq!(k.tree().root(), root, "a refused bundle changed the kiosk");
        }
        let _ = SyncBundle::decode(&bundle.encode());
    }
});
