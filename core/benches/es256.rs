//! ES256 verification: the pure-Rust `p256` crate against `ring` (the chosen backend) and, with
//! `--features bench-aws-lc`, `aws-lc-rs`, in the same run; criterion figures first, then an
//! interleaved head-to-head that is robust to the VM's frequency drift.
//!
//! `cargo bench -p civis-core --features bench-aws-lc --bench es256`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use civis_core::crypto::{SoftwareKey, verify_p256};
use criterion::{Criterion, black_box};

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

/// Alternating batches of each backend, so that the VM's frequency drift hits all alike; the
/// median per-verify time of each decides the backend.
fn interleaved() {
    let key = SoftwareKey::from_scalar(&[0x2a; 32]).unwrap();
    let msg = vec![0x5a; 300];
    let sig = key.sign_es256(&msg);
    let pk = key.public_key().clone();
    type Backend<'a> = (&'static str, Box<dyn Fn() + 'a>);
    #[allow(unused_mut)]
    let mut backends: Vec<Backend<'_>> = vec![
        (
            "ring",
            Box::new(|| pk.verify_es256(black_box(&msg), black_box(&sig)).unwrap()),
        ),
        (
            "p256",
            Box::new(|| verify_p256(&pk, black_box(&msg), black_box(&sig)).unwrap()),
        ),
    ];
    #[cfg(feature = "bench-aws-lc")]
    backends.push((
        "aws-lc-rs",
        Box::new(|| {
            civis_core::crypto::verify_aws_lc(&pk, black_box(&msg), black_box(&sig)).unwrap()
        }),
    ));
    let mut samples = vec![Vec::new(); backends.len()];
    for _ in 0..60 {
        for (i, (_, f)) in backends.iter().enumerate() {
            let t = std::time::Instant::now();
            for _ in 0..50 {
                f();
            }
            samples[i].push(t.elapsed().as_secs_f64() / 50.0);
        }
    }
    for (i, (name, _)) in backends.iter().enumerate() {
        samples[i].sort_by(f64::total_cmp);
        println!(
            "RESULT es256 verify {name}: median {:.1} us (interleaved)",
            samples[i][samples[i].len() / 2] * 1e6
        );
    }
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    es256(&mut c);
    c.final_summary();
    interleaved();
}
