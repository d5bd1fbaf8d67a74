//! Kiosk sync at the scale of issue #3: 10,000 issuers with a status list each, 10 million
//! entries in total, 1% revoked — built through real signed transactions and the state rules.
//! Reports the cold bundle (size, verify time) and a delta of 1,000 status changes (size,
//! verify time). Empty blocks add nothing to a delta (`chain_light` tests 10,000 of them), so
//! the changes are applied directly and certified in one header.
//!
//! `cargo bench -p civis-core --bench kiosk_sync`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use std::time::{Duration, Instant};

use civis_core::chain::block::{self, Header};
use civis_core::chain::cert::{Proposal, ValidatorSet};
use civis_core::chain::light::{KioskSnapshot, SyncBundle};
use civis_core::chain::state::{Genesis, State};
use civis_core::chain::tx::{Op, SignedTx, Tx};
use civis_core::crypto::SoftwareKey;
use civis_core::did::{Did, KeyCommitment};
use civis_core::status::StatusDelta;
use criterion::{Criterion, black_box};
use sha2::Digest;

const CHAIN: &str = "civis-bench";
const ISSUERS: usize = 10_000;
const LIST: u64 = 1_000;
const T0: i64 = 1_780_000_000;

fn key(label: &str) -> SoftwareKey {
    SoftwareKey::from_scalar(&sha2::Sha256::digest(label.as_bytes())).unwrap()
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn certify(keys: &[SoftwareKey], header: &Header) -> Vec<u8> {
    let set = ValidatorSet::new(
        CHAIN.as_bytes(),
        keys.iter().map(|k| k.public_key().clone()).collect(),
    )
    .unwrap();
    let proposal = Proposal {
        epoch: header.epoch,
        view: header.height + 1,
        parent_view: header.height,
        payload: header.digest(),
    };
    let three: Vec<&SoftwareKey> = keys.iter().take(3).collect();
    set.certify(proposal, &three).unwrap().encode()
}

fn kib(n: usize) -> String {
    format!("{:.1} KiB", n as f64 / 1024.0)
}

fn zlib_len(bytes: &[u8]) -> usize {
    use std::io::Write;
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap().len()
}

fn main() {
    let started = Instant::now();
    let validators: Vec<_> = (0..4).map(|i| key(&format!("v{i}"))).collect();
    let gov = [key("gov/0"), key("gov/1")];
    let gov_did = Did::from_inception(gov[0].public_key(), &KeyCommitment::to(gov[1].public_key()));
    let genesis = Genesis {
        chain_id: CHAIN.into(),
        time: T0,
        validators: validators.iter().map(|k| k.public_key().clone()).collect(),
        governance: vec![(
            gov[0].public_key().clone(),
            KeyCommitment::to(gov[1].public_key()),
        )],
        governance_threshold: 1,
        epoch_length: civis_core::chain::state::DEFAULT_EPOCH_LENGTH,
    };
    let genesis_state = State::genesis(&genesis).unwrap();
    let mut state = genesis_state.clone();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut issuers = Vec::with_capacity(ISSUERS);
    for i in 0..ISSUERS {
        // Governance signs one accreditation per issuer, so its sequence number is the index.
        let gov_seq = i as u64;
        let k0 = key(&format!("issuer/{i}/0"));
        let k1 = key(&format!("issuer/{i}/1"));
        let did = Did::from_inception(k0.public_key(), &KeyCommitment::to(k1.public_key()));
        let url = did.key_url(1);
        let sign = |seq, op| {
            SignedTx::sign(
                Tx {
                    chain: CHAIN.into(),
                    seq,
                    op,
                },
                url.clone(),
                &k0,
            )
            .unwrap()
        };
        state
            .apply(
                &sign(
                    0,
                    Op::CreateDid {
                        key: k0.public_key().clone(),
                        next: KeyCommitment::to(k1.public_key()),
                    },
                ),
                T0,
            )
            .unwrap();
        let accredit = Op::AccreditIssuer {
            issuer: did.clone(),
            doc_types: vec!["org.civis.citizen.1".into()],
            until: T0 + 86_400 * 365,
        };
        state
            .apply(
                &SignedTx::sign(
                    Tx {
                        chain: CHAIN.into(),
                        seq: gov_seq,
                        op: accredit,
                    },
                    gov_did.key_url(1),
                    &gov[0],
                )
                .unwrap(),
                T0,
            )
            .unwrap();
        state
            .apply(
                &sign(
                    0,
                    Op::CreateStatusList {
                        list: "cards".into(),
                        bits: 2,
                        size: LIST,
                    },
                ),
                T0,
            )
            .unwrap();
        // 1% revoked.
        let revoked: Vec<_> = (0..LIST / 100).map(|_| (rng.next() % LIST, 1u8)).collect();
        state
            .apply(
                &sign(
                    1,
                    Op::UpdateStatus {
                        list: "cards".into(),
                        delta: StatusDelta::from_changes(revoked),
                    },
                ),
                T0,
            )
            .unwrap();
        issuers.push((url, k0, 2u64));
    }
    let genesis_header = Header::genesis(&genesis_state, T0);
    let cold_block = block::build(&state, &genesis_header, vec![], T0 + 1).block;
    let head = Header {
        kiosk_root: state.kiosk_root(),
        public_root: state.public_root(),
        ..cold_block.header
    };
    println!(
        "setup: {} issuers, {} status entries, {} kiosk-tree entries in {:.1} s",
        ISSUERS,
        ISSUERS as u64 * LIST,
        state.kiosk_tree().len(),
        started.elapsed().as_secs_f64()
    );

    let cold = SyncBundle::build(
        head.clone(),
        certify(&validators, &head),
        vec![],
        None,
        genesis_state.kiosk_tree(),
        state.kiosk_tree(),
    );
    let cold_bytes = cold.encode();
    let fresh = KioskSnapshot::from_genesis(&genesis).unwrap();
    let apply_cold = || {
        let mut k = fresh.clone();
        k.apply(&SyncBundle::decode(black_box(&cold_bytes)).unwrap())
            .unwrap();
        k
    };
    let synced = apply_cold();

    // 1,000 status changes spread over the issuers.
    let base_state = state.clone();
    for _ in 0..1_000 {
        let i = (rng.next() % ISSUERS as u64) as usize;
        let (url, k, seq) = &mut issuers[i];
        let idx = rng.next() % LIST;
        let value = if state
            .status_list(&format!("{}/status/cards", url.did))
            .unwrap()
            .get(idx)
            == Some(1)
        {
            continue;
        } else {
            2
        };
        let tx = SignedTx::sign(
            Tx {
                chain: CHAIN.into(),
                seq: *seq,
                op: Op::UpdateStatus {
                    list: "cards".into(),
                    delta: StatusDelta::from_changes(vec![(idx, value)]),
                },
            },
            url.clone(),
            &*k,
        )
        .unwrap();
        state.apply(&tx, T0 + 2).unwrap();
        *seq += 1;
    }
    let head2 = Header {
        height: head.height + 10_000,
        // 10,000 blocks on, past an epoch boundary; the set is unchanged, so no epoch change.
        epoch: civis_core::chain::state::epoch_of(
            head.height + 10_000,
            civis_core::chain::state::DEFAULT_EPOCH_LENGTH,
        ),
        parent: head.digest(),
        time: T0 + 10_000,
        kiosk_root: state.kiosk_root(),
        public_root: state.public_root(),
        ..head.clone()
    };
    let delta = SyncBundle::build(
        head2.clone(),
        certify(&validators, &head2),
        vec![],
        Some(head.height),
        base_state.kiosk_tree(),
        state.kiosk_tree(),
    );
    let delta_bytes = delta.encode();
    let changes: usize = delta.status.count();
    // The kiosk applies to its own snapshot; cloning it is harness work, kept out of the timing.
    let apply_delta = |mut k: KioskSnapshot| {
        k.apply(&SyncBundle::decode(black_box(&delta_bytes)).unwrap())
            .unwrap();
        k
    };
    assert_eq!(apply_delta(synced.clone()).header().height, head2.height);

    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    c.bench_function("kiosk_sync/cold_bundle_decode_verify_apply", |b| {
        b.iter(apply_cold)
    });
    c.bench_function("kiosk_sync/delta_1000_changes_decode_verify_apply", |b| {
        b.iter_batched(
            || synced.clone(),
            apply_delta,
            criterion::BatchSize::LargeInput,
        )
    });
    c.final_summary();

    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] * 1e3
    };
    let cold_ms = median(
        (0..7)
            .map(|_| {
                let t = Instant::now();
                black_box(apply_cold());
                t.elapsed().as_secs_f64()
            })
            .collect(),
    );
    let delta_ms = median(
        (0..15)
            .map(|_| {
                let k = synced.clone();
                let t = Instant::now();
                let out = black_box(apply_delta(k));
                let took = t.elapsed().as_secs_f64();
                // Dropping the replaced snapshot is not part of the sync.
                drop(out);
                took
            })
            .collect(),
    );
    // Kiosk start: the stored snapshot decoded and checked against the pinned genesis, and the
    // trust snapshot built from it (what `civis kiosk run` does before it serves; reading the
    // blob from SQLite adds a few milliseconds).
    let stored = synced.encode();
    let start_ms = median(
        (0..7)
            .map(|_| {
                let t = Instant::now();
                let k = KioskSnapshot::decode(&genesis, black_box(&stored)).unwrap();
                black_box(k.trust_snapshot());
                t.elapsed().as_secs_f64()
            })
            .collect(),
    );
    println!(
        "RESULT kiosk start: snapshot of {} decoded, checked and turned into trust in {:.1} ms median (target <= 500 ms to ready)",
        kib(stored.len()),
        start_ms
    );
    println!(
        "RESULT cold bundle: {} raw ({} zlib), {} entries + {} lists of status changes; verify {:.1} ms median (targets <= 3 MB, <= 300 ms)",
        kib(cold_bytes.len()),
        kib(zlib_len(&cold_bytes)),
        cold.entries.len(),
        cold.status.lists().count(),
        cold_ms
    );
    println!(
        "RESULT delta bundle: {} status changes in {} lists over 10,000 blocks: {} raw ({} zlib); verify {:.2} ms median (targets <= 8 KB, <= 20 ms)",
        changes,
        delta.status.lists().count(),
        kib(delta_bytes.len()),
        kib(zlib_len(&delta_bytes)),
        delta_ms
    );
}
