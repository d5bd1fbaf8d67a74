//! ES256 verification: the pure-Rust `p256` crate against `ring` (the chosen backend) and, with
//! `--features bench-aws-lc`, `aws-lc-rs`, in the same run.
//!
//! `cargo bench -p civis-core --bench es256 [--features bench-aws-lc]`
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use civis_core::crypto::{SoftwareKey, verify_p256};
use criterion::{Criterion, black_box, criterion_group, criterion_main};

fn es256(c: &mut Criterion) {
    let key = SoftwareKey::from_scalar(&[0x2a; 32]).unwrap();
    let msg = vec![0x5a; 300];
    let sig = key.sign_es256(&msg);
    let public = key.public_key().clone();
    let mut g = c.benchmark_group("es256_verify");
    g.bench_function("p256", |b| {
        b.iter(|| verify_p256(black_box(&public), black_box(&msg), black_box(&sig)).unwrap())
    });
    g.bench_function("ring", |b| {
        b.iter(|| {
            black_box(&public)
                .verify_es256(black_box(&msg), black_box(&sig))
                .unwrap()
        })
    });
    #[cfg(feature = "bench-aws-lc")]
    g.bench_function("aws-lc-rs", |b| {
        b.iter(|| {
            civis_core::crypto::verify_aws_lc(black_box(&public), black_box(&msg), black_box(&sig))
                .unwrap()
        })
    });
    g.finish();
    c.bench_function("es256_sign/p256", |b| {
        b.iter(|| key.sign_es256(black_box(&msg)))
    });
}

criterion_group!(benches, es256);
criterion_main!(benches);
