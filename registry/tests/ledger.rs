//! The ledger without consensus: blocks proposed and finalized through the `Application` trait
//! on the in-memory store, certificates made by the validators' keys. Sync bundles served to a
//! kiosk stay the same size however many empty blocks pass.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use std::sync::Arc;

use civis_core::chain::light::KioskSnapshot;
use civis_core::chain::tx::Op;
use civis_core::status::StatusDelta;
use civis_registry::ledger::{Application, Ledger};
use civis_registry::mempool::{Limits, Outcome};
use civis_registry::store::MemoryStore;

use common::{Holder, certify, genesis, governance, validator};

const CHAIN: &str = "civis-ledger";
const T0: i64 = 1_780_000_000;

struct Harness {
    ledger: Ledger<Arc<MemoryStore>>,
    keys: Vec<civis_core::crypto::SoftwareKey>,
    time: i64,
}

impl Harness {
    async fn new() -> Self {
        let ledger = Ledger::open(genesis(CHAIN, 4, T0), Arc::default(), Limits::default())
            .await
            .unwrap();
        Self {
            ledger,
            keys: (0..4).map(validator).collect(),
            time: T0,
        }
    }

    /// Propose on the head and finalize; `certified` attaches a certificate by three of four.
    async fn block(&mut self, certified: bool) -> u64 {
        self.time += 1;
        let (head, _) = self.ledger.head();
        let b = self.ledger.propose(&head.digest(), &[], self.time).unwrap();
        let fin = certified.then(|| certify(CHAIN, &self.keys, &b.header, &[0, 1, 3]));
        let h = b.header.height;
        self.ledger.finalized(b, fin).await.unwrap();
        h
    }

    async fn bundle(&self, since: Option<u64>) -> Vec<u8> {
        self.ledger.sync_bundle(since).await.unwrap().encode()
    }
}

#[tokio::test]
async fn delta_bundles_do_not_grow_with_empty_blocks() {
    let mut h = Harness::new().await;
    let mut gov = governance();
    let mut issuer = Holder::new("issuer");
    h.ledger.submit(issuer.create(CHAIN).bytes()).unwrap();
    let accredit = gov.sign(
        CHAIN,
        Op::AccreditIssuer {
            issuer: issuer.did.clone(),
            doc_types: vec!["org.civis.citizen.1".into()],
            until: T0 + 10_000_000,
        },
    );
    h.ledger.submit(accredit.bytes()).unwrap();
    let list = issuer.sign(
        CHAIN,
        Op::CreateStatusList {
            list: "main".into(),
            bits: 1,
            size: 100_000,
        },
    );
    h.ledger.submit(list.bytes()).unwrap();
    h.block(true).await;
    assert!(h.ledger.head().1.did(&issuer.did).is_some());

    // The kiosk syncs cold, then the issuer revokes 20 entries.
    let genesis = genesis(CHAIN, 4, T0);
    let mut kiosk = KioskSnapshot::from_genesis(&genesis).unwrap();
    let cold = civis_core::chain::light::SyncBundle::decode(&h.bundle(None).await).unwrap();
    kiosk.apply(&cold).unwrap();
    let base = kiosk.header().height;
    let revoke = issuer.sign(
        CHAIN,
        Op::UpdateStatus {
            list: "main".into(),
            delta: StatusDelta::from_changes((0..20).map(|i| (i * 4_999, 1)).collect()),
        },
    );
    let id = h.ledger.submit(revoke.bytes()).unwrap();
    h.block(false).await;
    assert!(matches!(h.ledger.outcome(&id), Some(Outcome::Included(_))));

    // Ten empty blocks, then ten thousand: the bundle from `base` stays the same size.
    for _ in 0..9 {
        h.block(false).await;
    }
    h.block(true).await;
    let near = h.bundle(Some(base)).await;
    for _ in 0..9_999 {
        h.block(false).await;
    }
    let last = h.block(true).await;
    let far = h.bundle(Some(base)).await;
    assert!(
        far.len().abs_diff(near.len()) <= 16,
        "delta bundle grew from {} to {} bytes over 10,000 empty blocks",
        near.len(),
        far.len()
    );
    assert!(far.len() < 1024, "20 status changes: {} bytes", far.len());
    let bundle = civis_core::chain::light::SyncBundle::decode(&far).unwrap();
    kiosk.apply(&bundle).unwrap();
    assert_eq!(kiosk.header().height, last);
    let snapshot = kiosk.trust_snapshot();
    let uri = civis_core::chain::state::status_uri(&issuer.did, "main");
    let list = &snapshot.status_lists[&uri];
    assert_eq!(list.get(4_999), Some(1));
    assert_eq!(list.get(5_000), Some(0));
}

#[tokio::test]
async fn a_sync_needs_a_certified_block_and_refuses_heights_above_it() {
    let mut h = Harness::new().await;
    assert!(
        h.ledger.sync_bundle(None).await.is_err(),
        "nothing certified yet"
    );
    h.block(false).await;
    assert!(h.ledger.sync_bundle(None).await.is_err());
    let c = h.block(true).await;
    h.block(false).await;
    let b = h.ledger.sync_bundle(None).await.unwrap();
    assert_eq!(
        b.header.height, c,
        "bundles carry the latest directly certified header"
    );
    assert!(h.ledger.sync_bundle(Some(c + 1)).await.is_err());
}

#[tokio::test]
async fn mempool_admission_refuses_replays_forgeries_and_conflicts() {
    let mut h = Harness::new().await;
    let mut issuer = Holder::new("issuer");
    let create = issuer.create(CHAIN);
    h.ledger.submit(create.bytes()).unwrap();
    // The same bytes again: the same id, no duplicate.
    assert_eq!(
        h.ledger.submit(create.bytes()).unwrap(),
        h.ledger.submit(create.bytes()).unwrap()
    );
    assert_eq!(h.ledger.mempool_size().0, 1);
    h.block(true).await;
    let err = h.ledger.submit(create.bytes()).unwrap_err();
    assert!(err.to_string().contains("exists"), "{err}");

    let a = issuer.sign(CHAIN, Op::Deactivate);
    issuer.seq -= 1;
    let b = issuer.sign(
        CHAIN,
        Op::CreateStatusList {
            list: "x".into(),
            bits: 1,
            size: 8,
        },
    );
    h.ledger.submit(a.bytes()).unwrap();
    let err = h.ledger.submit(b.bytes()).unwrap_err();
    assert!(err.to_string().contains("already has a pending"), "{err}");

    // A signature by another key under the issuer's kid.
    let mut forged = a.bytes().to_vec();
    let n = forged.len();
    forged[n - 5] ^= 0x40;
    let err = h.ledger.submit(&forged).unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");

    // Garbage and truncations never panic and say what is wrong.
    for cut in [0, 1, 7, a.bytes().len() / 2, a.bytes().len() - 1] {
        let err = h.ledger.submit(&a.bytes()[..cut]).unwrap_err();
        assert!(err.to_string().contains("malformed"), "{err}");
    }
    // A sequence number far ahead is refused rather than parked.
    issuer.seq = 5_000;
    let far = issuer.sign(CHAIN, Op::Deactivate);
    let err = h.ledger.submit(far.bytes()).unwrap_err();
    assert!(err.to_string().contains("sequence number"), "{err}");
}

/// Relayed transactions (gossip from another validator) are held without a signature check and
/// checked when a block is built: a forged one never reaches a block, never blocks a genuine
/// client transaction at its slot, and a relayed one for another chain is not held at all.
#[tokio::test]
async fn relayed_transactions_are_checked_when_proposed() {
    use civis_registry::store::Store as _;
    use sha2::Digest as _;
    let mut h = Harness::new().await;
    let mut issuer = Holder::new("issuer");
    h.ledger.submit(issuer.create(CHAIN).bytes()).unwrap();
    h.block(true).await;

    let genuine = issuer.sign(CHAIN, Op::Deactivate);
    let mut forged = genuine.bytes().to_vec();
    let n = forged.len();
    forged[n - 5] ^= 0x40;
    h.ledger.gossiped(&forged);
    assert_eq!(h.ledger.mempool_size().0, 1, "held unchecked");
    // The client's genuine transaction takes the slot of the unchecked relayed one.
    h.ledger.submit(genuine.bytes()).unwrap();
    assert_eq!(h.ledger.mempool_size().0, 1);
    let forged_id = civis_registry::mempool::TxId(sha2::Sha256::digest(&forged).into());
    assert!(matches!(
        h.ledger.outcome(&forged_id),
        Some(Outcome::Refused(why)) if why.contains("replaced")
    ));

    // A forged relayed transaction alone is refused by the proposer and never included.
    let mut other = Holder::new("other");
    h.ledger.submit(other.create(CHAIN).bytes()).unwrap();
    let real = other.sign(
        CHAIN,
        Op::CreateStatusList {
            list: "x".into(),
            bits: 1,
            size: 8,
        },
    );
    let mut bad = real.bytes().to_vec();
    let n = bad.len();
    bad[n - 5] ^= 0x40;
    let bad_id = civis_registry::mempool::TxId(sha2::Sha256::digest(&bad).into());
    let height = h.block(true).await;
    h.ledger.gossiped(&bad);
    let next = h.block(true).await;
    let (block, _) = h.ledger.store().block(next).await.unwrap().unwrap();
    assert!(block.txs.iter().all(|t| t.bytes() != bad.as_slice()));
    assert!(matches!(
        h.ledger.outcome(&bad_id),
        Some(Outcome::Refused(why)) if why.contains("signature")
    ));
    assert!(height < next);
    // Another chain's transaction is not held.
    let stranger = Holder::new("stranger");
    h.ledger.gossiped(stranger.create("another-chain").bytes());
    assert_eq!(h.ledger.mempool_size().0, 0);
}

/// The jam attack: free DIDs park transactions behind sequence gaps until the pool is full,
/// so that nothing is ever admitted again. Waiting transactions have their own small bounds,
/// so the pool keeps room: an honest new DID and a governance transaction are admitted and
/// final in the next block; the parked ones never make a proposer think something is ready,
/// and they are dropped after the wait limit.
#[tokio::test]
async fn transactions_parked_behind_gaps_cannot_jam_the_pool() {
    let mut h = Harness::new().await;
    let limits = Limits::default();
    let mut spammers: Vec<Holder> = (0..40).map(|i| Holder::new(&format!("spam{i}"))).collect();
    for s in &spammers {
        h.ledger.submit(s.create(CHAIN).bytes()).unwrap();
    }
    h.block(true).await;
    let (mut parked, mut busy) = (0usize, 0usize);
    for s in &mut spammers {
        // Sequence number 0 never comes: everything from 1 on waits behind the gap.
        for seq in 1..1_000 {
            s.seq = seq;
            match h.ledger.submit(s.sign(CHAIN, Op::Deactivate).bytes()) {
                Ok(_) => parked += 1,
                Err(civis_registry::Error::Busy(_)) => busy += 1,
                Err(e) => panic!("unexpected refusal: {e}"),
            }
        }
    }
    assert_eq!(parked, 40 * limits.max_waiting_per_signer);
    assert!(parked <= limits.max_waiting);
    assert_eq!(busy, 40 * 999 - parked);
    assert!(
        !h.ledger.has_pending(&h.ledger.head().0.digest()),
        "parked transactions count as ready"
    );

    let honest = Holder::new("honest");
    let mut gov = governance();
    let created = h.ledger.submit(honest.create(CHAIN).bytes()).unwrap();
    let election = h
        .ledger
        .submit(
            gov.sign(
                CHAIN,
                Op::RegisterElection {
                    id: "council-2026".into(),
                    eligibility: vec![("age_over_18".into(), ciborium::Value::Bool(true))],
                    opens: T0,
                    closes: T0 + 86_400,
                    reauth: civis_core::evote::Reauth::Refuse,
                },
            )
            .bytes(),
        )
        .unwrap();
    assert!(h.ledger.has_pending(&h.ledger.head().0.digest()));
    let height = h.block(true).await;
    assert_eq!(h.ledger.outcome(&created), Some(Outcome::Included(height)));
    assert_eq!(h.ledger.outcome(&election), Some(Outcome::Included(height)));

    // After the wait limit the parked transactions are gone, each with its reason.
    for _ in 0..limits.max_wait_blocks {
        h.block(false).await;
    }
    assert_eq!(h.ledger.mempool_size().0, 0);
    spammers[0].seq = 1;
    let first = spammers[0].sign(CHAIN, Op::Deactivate);
    let id = civis_registry::mempool::TxId::of(&first);
    assert!(matches!(
        h.ledger.outcome(&id),
        Some(Outcome::Refused(why)) if why.contains("waited too long")
    ));
}

/// A full pool still admits governance: its members have reserved room.
#[tokio::test]
async fn a_full_pool_keeps_room_for_governance() {
    let limits = Limits {
        max_txs: 20,
        ..Limits::default()
    };
    let ledger: Ledger<Arc<MemoryStore>> =
        Ledger::open(genesis(CHAIN, 4, T0), Arc::default(), limits)
            .await
            .unwrap();
    for i in 0..20 {
        ledger
            .submit(Holder::new(&format!("fill{i}")).create(CHAIN).bytes())
            .unwrap();
    }
    let late = Holder::new("late");
    assert!(matches!(
        ledger.submit(late.create(CHAIN).bytes()),
        Err(civis_registry::Error::Busy(_))
    ));
    let mut gov = governance();
    ledger
        .submit(
            gov.sign(
                CHAIN,
                Op::RegisterElection {
                    id: "e".into(),
                    eligibility: Vec::new(),
                    opens: T0,
                    closes: T0 + 10,
                    reauth: civis_core::evote::Reauth::Refuse,
                },
            )
            .bytes(),
        )
        .unwrap();
}

/// Free DIDs cost every kiosk nothing: a burst of them leaves the kiosk sub-root, and so the
/// cold bundle's entries and size, as they were; only the public tree grows.
#[tokio::test]
async fn a_burst_of_free_dids_does_not_grow_what_kiosks_sync() {
    let mut h = Harness::new().await;
    h.block(true).await;
    let before = h.ledger.sync_bundle(None).await.unwrap();
    let (head, _) = h.ledger.head();
    for round in 0..5 {
        for i in 0..200 {
            h.ledger
                .submit(
                    Holder::new(&format!("spam-{round}-{i}"))
                        .create(CHAIN)
                        .bytes(),
                )
                .unwrap();
        }
        h.block(false).await;
    }
    h.block(true).await;
    let (after_head, state) = h.ledger.head();
    let genesis_state = civis_core::chain::state::State::genesis(&genesis(CHAIN, 4, T0)).unwrap();
    // Each DID's record and first key, in the public tree only.
    assert_eq!(
        state.public_tree().len(),
        genesis_state.public_tree().len() + 2_000
    );
    assert_eq!(after_head.kiosk_root, head.kiosk_root);
    let after = h.ledger.sync_bundle(None).await.unwrap();
    assert_eq!(after.entries, before.entries);
    assert_eq!(after.status, before.status);
    let (a, b) = (before.encode().len(), after.encode().len());
    assert!(
        a.abs_diff(b) <= 8,
        "cold bundle went from {a} to {b} bytes after 1,000 free DIDs"
    );
}

/// Review of issue #10: a transaction already in a proposed, unfinalized block is not pending
/// on top of that block, so a leader building on it waits for new work instead of proposing an
/// empty block at once (with commits lagging, that was ~50 empty blocks a second).
#[tokio::test]
async fn in_flight_transactions_do_not_make_a_leader_hurry() {
    let mut h = Harness::new().await;
    let alice = Holder::new("alice");
    h.ledger.submit(alice.create(CHAIN).bytes()).unwrap();
    let (head, _) = h.ledger.head();
    assert!(h.ledger.has_pending(&head.digest()));
    let proposed = h.ledger.propose(&head.digest(), &[], T0 + 1).unwrap();
    assert_eq!(proposed.txs.len(), 1);
    // On top of the proposal, nothing is left to do; on the head, the transaction still is.
    assert!(!h.ledger.has_pending(&proposed.header.digest()));
    assert!(h.ledger.has_pending(&head.digest()));
    h.ledger.finalized(proposed, None).await.unwrap();
    let (head, _) = h.ledger.head();
    assert!(!h.ledger.has_pending(&head.digest()));
    h.time += 1;
    h.block(true).await;
}

/// Review of issue #10: a signer queues a run whose head a proposer will refuse (a status list
/// by an issuer that is not accredited) and 150 transactions behind it. They were ready at
/// admission, so no waiting limit applied; once the head is refused they wait behind a gap.
/// The waiting limits now hold then too: all but 16 leave, each with its reason.
#[tokio::test]
async fn a_refused_head_leaves_no_more_waiting_transactions_than_the_limit() {
    let mut h = Harness::new().await;
    let limits = Limits::default();
    let mut mallory = Holder::new("mallory");
    h.ledger.submit(mallory.create(CHAIN).bytes()).unwrap();
    h.block(true).await;
    let head = mallory.sign(
        CHAIN,
        Op::CreateStatusList {
            list: "x".into(),
            bits: 1,
            size: 8,
        },
    );
    h.ledger.submit(head.bytes()).unwrap();
    let mut last = None;
    for _ in 0..150 {
        let tx = mallory.sign(CHAIN, Op::Deactivate);
        last = Some(h.ledger.submit(tx.bytes()).unwrap());
    }
    assert_eq!(h.ledger.mempool_size().0, 151);
    h.block(true).await;
    assert_eq!(h.ledger.mempool_size().0, limits.max_waiting_per_signer);
    assert!(matches!(
        h.ledger.outcome(&last.unwrap()),
        Some(Outcome::Refused(why)) if why.contains("too many transactions waiting")
    ));
    assert!(!h.ledger.has_pending(&h.ledger.head().0.digest()));
}

/// Review of issue #10: waiting transactions are bounded in bytes too. Sixteen gap
/// transactions of half a megabyte each from a few free DIDs filled the 64 MiB pool and locked
/// out honest DIDs for the 600-block wait; the waiting bytes (counted as memory: encoded bytes
/// twice, plus 16 bytes per status change) now stop at 4 MiB, and an honest DID gets in.
#[tokio::test]
async fn big_gap_transactions_cannot_fill_the_pool_by_bytes() {
    let mut h = Harness::new().await;
    let mut spammers: Vec<Holder> = (0..9).map(|i| Holder::new(&format!("big{i}"))).collect();
    for s in &spammers {
        h.ledger.submit(s.create(CHAIN).bytes()).unwrap();
    }
    h.block(true).await;
    let (mut parked, mut busy) = (0usize, 0usize);
    for s in &mut spammers {
        for seq in 1..=16 {
            s.seq = seq;
            let tx = s.sign(
                CHAIN,
                Op::CreateStatusList {
                    list: "l".repeat(500 * 1024),
                    bits: 1,
                    size: 8,
                },
            );
            match h.ledger.submit(tx.bytes()) {
                Ok(_) => parked += 1,
                Err(civis_registry::Error::Busy(_)) => busy += 1,
                Err(e) => panic!("unexpected refusal: {e}"),
            }
        }
    }
    assert!(parked <= 4, "{parked} half-megabyte transactions parked");
    assert_eq!(parked + busy, 9 * 16);
    assert!(h.ledger.mempool_size().1 <= 4 * 1024 * 1024);
    let honest = Holder::new("honest-after-bytes");
    h.ledger.submit(honest.create(CHAIN).bytes()).unwrap();
}
