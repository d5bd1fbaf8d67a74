//! ECVRF-P256-SHA256-TAI (`civis_core::vrf`): proving an election pseudonym (what the card does,
//! here in software) and verifying it (what the polling station does), beside one ES256
//! signature and one ES256 verification on the same machine.
//!
//! `cargo bench -p civis-core --bench vrf`
#![allow(clippy::unwrap_used, missing_docs)]

use civis_core::crypto::SoftwareKey;
use civis_core::vrf::{self, VrfSecretKey};
use criterion::{Criterion, black_box};

fn main() {
    let sk = VrfSecretKey::from_scalar(&[0x42; 32]).unwrap();
    let alpha = b"civis/evote/v1 civis-demo election-2027";
    let proof = sk.prove(alpha).unwrap();
    let pk = sk.public_key().clone();
    assert_eq!(vrf::verify(&pk, alpha, &proof).unwrap(), proof.output());
    let es = SoftwareKey::from_scalar(&[0x42; 32]).unwrap();
    let sig = es.sign_es256(alpha);

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("vrf/prove", |b| {
        b.iter(|| black_box(sk.prove(black_box(alpha)).unwrap()))
    });
    c.bench_function("vrf/verify", |b| {
        b.iter(|| black_box(vrf::verify(&pk, black_box(alpha), &proof).unwrap()))
    });
    c.bench_function("es256/sign (p256)", |b| {
        b.iter(|| black_box(es.sign_es256(black_box(alpha))))
    });
    c.bench_function("es256/verify (ring)", |b| {
        b.iter(|| {
            es.public_key()
                .verify_es256(black_box(alpha), &sig)
                .unwrap()
        })
    });
    c.final_summary();
}
