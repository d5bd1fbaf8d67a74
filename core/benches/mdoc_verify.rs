//! `mdoc::verify` of a citizen-credential DeviceResponse (issuer signature, device signature,
//! 10 digests, decoding included) against two bare ES256 verifies on the same backend.
//!
//! `cargo bench -p civis-core --bench mdoc_verify` — prints criterion's figures, then an
//! interleaved measurement of both and their ratio (target ≤ 1.3).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs,
    dead_code
)]

#[path = "../tests/common/citizen.rs"]
mod citizen;

use std::time::Instant;

use civis_core::cbor::CborForm;
use civis_core::mdoc::{self, VerifyContext};
use criterion::{Criterion, black_box};

fn main() {
    let f = citizen::fixture();
    let bytes = f.response.to_vec();
    let anchors = f.anchors();
    let ctx = VerifyContext {
        transcript: &f.transcript,
        anchors: &anchors,
        at: citizen::now(),
        reader_key: None,
        request: Some(&f.request),
    };
    let docs = mdoc::verify_bytes(&bytes, &ctx).unwrap();
    assert_eq!(docs[0].disclosed[0].1.len(), 10);

    let msg = vec![0x5a; 600];
    let sig = f.issuer_key.sign_es256(&msg);
    let pk = f.issuer_key.public_key().clone();
    let two_verifies = || {
        pk.verify_es256(black_box(&msg), black_box(&sig)).unwrap();
        pk.verify_es256(black_box(&msg), black_box(&sig)).unwrap();
    };
    let full = || {
        black_box(mdoc::verify_bytes(black_box(&bytes), &ctx).unwrap());
    };

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("mdoc_verify/citizen_10_elements", |b| b.iter(full));
    c.bench_function("mdoc_verify/two_bare_es256_verifies", |b| {
        b.iter(two_verifies)
    });
    c.bench_function("mdoc_decode/device_response", |b| {
        b.iter(|| black_box(mdoc::DeviceResponse::from_slice(black_box(&bytes)).unwrap()))
    });
    c.final_summary();

    // Interleave batches of both so that frequency drift hits them alike; compare medians.
    let batch = 200;
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..40 {
        let t = Instant::now();
        for _ in 0..batch {
            full();
        }
        a.push(t.elapsed().as_secs_f64() / f64::from(batch));
        let t = Instant::now();
        for _ in 0..batch {
            two_verifies();
        }
        b.push(t.elapsed().as_secs_f64() / f64::from(batch));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (ma, mb) = (median(&mut a), median(&mut b));
    println!(
        "RESULT mdoc_verify median {:.1} us; two ES256 verifies median {:.1} us; ratio {:.2} (target <= 1.30)",
        ma * 1e6,
        mb * 1e6,
        ma / mb
    );
}
