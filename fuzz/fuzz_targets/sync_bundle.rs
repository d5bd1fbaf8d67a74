//! Sync bundle decoding and application by a kiosk at genesis: never panics, and a refused
//! bundle leaves the kiosk's header and tree unchanged.
#![no_main]

use std::sync::OnceLock;

use civis_core::chain::light::{KioskSnapshot, SyncBundle};
use civis_core::chain::state::Genesis;
use civis_core::crypto::SoftwareKey;
use civis_core::did::KeyCommitment;
use libfuzzer_sys::fuzz_target;

fn kiosk() -> &'static KioskSnapshot {
    static KIOSK: OnceLock<KioskSnapshot> = OnceLock::new();
    KIOSK.get_or_init(|| {
        let k = |i: u8| SoftwareKey::from_scalar(&[i; 32]).expect("key");
        let g = Genesis {
            chain_id: "fuzz".into(),
            time: 0,
            validators: vec![k(1).public_key().clone()],
            governance: vec![(k(2).public_key().clone(), KeyCommitment::to(k(3).public_key()))],
            governance_threshold: 1,
        };
        KioskSnapshot::from_genesis(&g).expect("genesis")
    })
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
