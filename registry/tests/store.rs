//! The storage contract on every backend: the in-memory twin, SQLite, and PostgreSQL (started by
//! `scripts/test.sh`, URL in `CIVIS_TEST_POSTGRES_URL`). Blocks are real: built and executed by
//! the core rules from a genesis with governance and issuers.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use civis_core::chain::block::{self, Header};
use civis_core::chain::state::{Genesis, State};
use civis_core::chain::tx::{Op, SignedTx, Tx};
use civis_core::crypto::SoftwareKey;
use civis_core::did::{Did, KeyCommitment};
use civis_core::status::StatusDelta;
use civis_registry::store::{Commit, FaultPoint, MemoryStore, SqlStore, Store, StoreError};
use sha2::Digest;

/// Every height a store can hold (heights are stored as i64).
const ALL: u64 = i64::MAX as u64;

const CHAIN: &str = "civis-store-test";
const T0: i64 = 1_780_000_000;

fn key(label: &str) -> SoftwareKey {
    SoftwareKey::from_scalar(&sha2::Sha256::digest(label.as_bytes())).unwrap()
}

fn genesis() -> Genesis {
    Genesis {
        chain_id: CHAIN.into(),
        time: T0,
        validators: vec![key("v0").public_key().clone()],
        governance: vec![(
            key("gov0").public_key().clone(),
            KeyCommitment::to(key("gov1").public_key()),
        )],
        governance_threshold: 1,
        // Block 4 ends epoch 0 and hands over to the set approved in block 1.
        epoch_length: 5,
    }
}

/// Five blocks: an issuer is created and accredited, makes a list (and governance approves a
/// new validator set), revokes entries, an empty block that ends the epoch with the set change,
/// and one more.
fn chain() -> Vec<(Commit, State)> {
    let g = genesis();
    let gov = Did::from_inception(
        key("gov0").public_key(),
        &KeyCommitment::to(key("gov1").public_key()),
    );
    let (k0, k1) = (key("issuer0"), key("issuer1"));
    let issuer = Did::from_inception(k0.public_key(), &KeyCommitment::to(k1.public_key()));
    let itx = |seq, op| {
        SignedTx::sign(
            Tx {
                chain: CHAIN.into(),
                seq,
                op,
            },
            issuer.key_url(1),
            &k0,
        )
        .unwrap()
    };
    let gtx = |seq, op| {
        SignedTx::sign(
            Tx {
                chain: CHAIN.into(),
                seq,
                op,
            },
            gov.key_url(1),
            &key("gov0"),
        )
        .unwrap()
    };
    let blocks = vec![
        vec![
            itx(
                0,
                Op::CreateDid {
                    key: k0.public_key().clone(),
                    next: KeyCommitment::to(k1.public_key()),
                },
            ),
            gtx(
                0,
                Op::AccreditIssuer {
                    issuer: issuer.clone(),
                    doc_types: vec!["org.civis.citizen.1".into()],
                    until: T0 + 1_000_000,
                },
            ),
        ],
        vec![
            itx(
                0,
                Op::CreateStatusList {
                    list: "cards".into(),
                    bits: 2,
                    size: 5000,
                },
            ),
            gtx(
                1,
                Op::SetValidators {
                    validators: vec![key("v1").public_key().clone()],
                    approvals: vec![],
                },
            ),
        ],
        vec![itx(
            1,
            Op::UpdateStatus {
                list: "cards".into(),
                delta: StatusDelta::from_changes(vec![(3, 1), (4000, 2)]),
            },
        )],
        vec![],
        vec![itx(
            2,
            Op::UpdateStatus {
                list: "cards".into(),
                delta: StatusDelta::from_changes(vec![(4000, 0)]),
            },
        )],
    ];
    let mut state = State::genesis(&g).unwrap();
    let mut head = Header::genesis(&state, T0);
    let mut out = Vec::new();
    for (i, txs) in blocks.into_iter().enumerate() {
        let block::Built {
            state: next,
            block: blk,
            refused,
            ..
        } = block::build(&state, &head, txs, T0 + 1 + i as i64);
        assert!(refused.is_empty(), "{refused:?}");
        let commit = Commit::new(blk.clone(), Some(vec![i as u8; 8]), &state, &next);
        head = blk.header;
        state = next;
        out.push((commit, state.clone()));
    }
    out
}

/// The contract, on any store. `reopen` gives a fresh handle on the same storage (a restart);
/// `inject` arms a fault for the next commit.
async fn contract<S: Store, F: AsyncFn() -> S>(
    store: S,
    reopen: F,
    inject: impl Fn(&S, FaultPoint),
) {
    let g = genesis();
    let chain = chain();
    // Empty storage resumes at genesis.
    let r = store.resume(&g).await.unwrap();
    assert_eq!(r.head.height, 0);
    assert_eq!(r.state.root(), State::genesis(&g).unwrap().root());

    for (commit, state) in &chain[..3] {
        store.commit(commit).await.unwrap();
        assert_eq!(store.height().await.unwrap(), commit.block.header.height);
        let r = store.resume(&g).await.unwrap();
        assert_eq!(r.state.root(), state.root());
    }
    // Redelivery of a committed block is a no-op; another block at that height is refused.
    store.commit(&chain[2].0).await.unwrap();
    let mut other = chain[2].0.clone();
    other.block.header.time += 1;
    assert!(matches!(
        store.commit(&other).await.unwrap_err(),
        StoreError::Conflict(3)
    ));
    // A gap is refused.
    assert!(matches!(
        store.commit(&chain[4].0).await.unwrap_err(),
        StoreError::Gap { have: 3, got: 5 }
    ));

    // A crash at every injection point leaves the last committed block, with no partial state.
    for point in [
        FaultPoint::BeforeTransaction,
        FaultPoint::AfterBlockRow,
        FaultPoint::BeforeCommit,
    ] {
        inject(&store, point);
        assert!(
            matches!(store.commit(&chain[3].0).await.unwrap_err(), StoreError::Injected(p) if p == point)
        );
        let restarted = reopen().await;
        let r = restarted.resume(&g).await.unwrap();
        assert_eq!(
            r.head, chain[2].0.block.header,
            "after a fault at {point:?}"
        );
        assert_eq!(r.state.root(), chain[2].1.root());
        assert!(
            restarted.block(4).await.unwrap().is_none(),
            "no partial block at {point:?}"
        );
        assert!(
            restarted.epoch_changes(0, 10).await.unwrap().is_empty(),
            "no partial epoch change at {point:?}"
        );
    }
    // And it goes on from there.
    for (commit, _) in &chain[3..] {
        store.commit(commit).await.unwrap();
    }
    let restarted = reopen().await;
    let r = restarted.resume(&g).await.unwrap();
    assert_eq!(r.head, chain[4].0.block.header);
    assert_eq!(r.state.root(), chain[4].1.root());
    let (blk, fin) = restarted.block(5).await.unwrap().unwrap();
    assert_eq!(blk.header, chain[4].0.block.header);
    assert_eq!(fin, Some(vec![4u8; 8]));
    let (certified, fin) = restarted.latest_certified(ALL).await.unwrap().unwrap();
    assert_eq!((certified.header.height, fin), (5, vec![4u8; 8]));
    // The boundary block's validator-set change is kept with its certificate and proof.
    let changes = restarted.epoch_changes(0, 5).await.unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].header, chain[3].0.block.header);
    assert_eq!(changes[0].finalization, vec![3u8; 8]);
    let record = civis_core::chain::state::ChainRecord::decode(&changes[0].record).unwrap();
    assert_eq!(
        (record.epoch, record.validators),
        (1, vec![key("v1").public_key().clone()])
    );
    civis_core::chain::smt::verify(
        &changes[0].header.kiosk_root,
        &civis_core::chain::table::Table::Chain.path(b"validators"),
        Some(&civis_core::chain::smt::value_hash(&changes[0].record)),
        &changes[0].proof,
    )
    .unwrap();
    assert!(restarted.epoch_changes(4, 5).await.unwrap().is_empty());
    assert!(restarted.epoch_changes(0, 3).await.unwrap().is_empty());
    // Undoing the kiosk writes above a height rebuilds that height's kiosk tree exactly.
    for base in 0..5 {
        let mut tree = chain[4].1.kiosk_tree().clone();
        let undo = restarted.kiosk_undo(base as u64, ALL).await.unwrap();
        assert!(undo.windows(2).all(|w| w[0].0 >= w[1].0), "newest first");
        for (_, (t, k, old)) in undo {
            tree.restore_entry(t, &k, old);
        }
        let want = if base == 0 {
            State::genesis(&g).unwrap().kiosk_root()
        } else {
            chain[base - 1].1.kiosk_root()
        };
        assert_eq!(tree.root(), want, "kiosk tree at height {base}");
    }
    // A block larger than one multi-row statement: 250 DIDs (500 public entries) and a list of
    // 250 chunks from the accredited issuer (250 kiosk entries and history rows).
    let (i0, i1) = (key("issuer0"), key("issuer1"));
    let issuer = Did::from_inception(i0.public_key(), &KeyCommitment::to(i1.public_key()));
    let bulk_list = SignedTx::sign(
        Tx {
            chain: CHAIN.into(),
            seq: 3,
            op: Op::CreateStatusList {
                list: "bulk".into(),
                bits: 1,
                size: 250 * 8192,
            },
        },
        issuer.key_url(1),
        &i0,
    )
    .unwrap();
    let mut txs: Vec<SignedTx> = (0..250)
        .map(|i| {
            let (k0, k1) = (key(&format!("bulk{i}/0")), key(&format!("bulk{i}/1")));
            let did = Did::from_inception(k0.public_key(), &KeyCommitment::to(k1.public_key()));
            SignedTx::sign(
                Tx {
                    chain: CHAIN.into(),
                    seq: 0,
                    op: Op::CreateDid {
                        key: k0.public_key().clone(),
                        next: KeyCommitment::to(k1.public_key()),
                    },
                },
                did.key_url(1),
                &k0,
            )
            .unwrap()
        })
        .collect();
    txs.push(bulk_list);
    let (parent, parent_state) = (&chain[4].0.block.header, &chain[4].1);
    let built = block::build(parent_state, parent, txs, T0 + 10);
    assert!(built.refused.is_empty(), "{:?}", built.refused);
    assert_eq!(built.block.txs.len(), 251);
    let commit = Commit::new(built.block.clone(), None, parent_state, &built.state);
    assert!(commit.kiosk.len() >= 250 && commit.public.len() >= 250);
    restarted.commit(&commit).await.unwrap();
    let again = reopen().await;
    let r = again.resume(&g).await.unwrap();
    assert_eq!(r.head, built.block.header);
    assert_eq!(r.state.root(), built.state.root());
    let undo = again.kiosk_undo(5, ALL).await.unwrap();
    assert_eq!(undo.len(), commit.kiosk.len());
}

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    // The twin's "restart" is a new handle on the same memory: it has no process to lose.
    let store = std::sync::Arc::new(MemoryStore::default());
    let shared = store.clone();
    contract(store, async || shared.clone(), |s, p| s.inject(p)).await;
}

#[tokio::test]
async fn sqlite_store_keeps_the_contract() {
    let dir = std::env::temp_dir().join(format!("civis-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite:{}", dir.join("registry.db").display());
    let store = SqlStore::connect(&url).await.unwrap();
    contract(
        store,
        async || SqlStore::connect(&url).await.unwrap(),
        SqlStore::inject,
    )
    .await;
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn postgres_store_keeps_the_contract() {
    let admin = std::env::var("CIVIS_TEST_POSTGRES_URL")
        .expect("CIVIS_TEST_POSTGRES_URL: run ./scripts/test.sh, which starts PostgreSQL");
    // A fresh database per run.
    let name = format!("civis_store_{}", std::process::id());
    let admin_store = SqlStore::connect(&admin).await.unwrap();
    admin_store
        .execute_admin(&format!("DROP DATABASE IF EXISTS {name}"))
        .await
        .unwrap();
    admin_store
        .execute_admin(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let base = admin.rsplit_once('/').unwrap().0.to_owned();
    let url = format!("{base}/{name}");
    let store = SqlStore::connect(&url).await.unwrap();
    contract(
        store,
        async || SqlStore::connect(&url).await.unwrap(),
        SqlStore::inject,
    )
    .await;
}
