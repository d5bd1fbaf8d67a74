//! Registry transactions against the state rules: the happy paths, and every refusal leaving the
//! state root unchanged.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use civis_core::cbor::CborForm;
use civis_core::chain::state::{Genesis, Refused, State, status_uri};
use civis_core::chain::tx::{self, ElementGrants, Op, SignedTx, Tx};
use civis_core::crypto::SoftwareKey;
use civis_core::did::{Did, DidUrl, KeyCommitment};
use civis_core::kiosk::KioskAccreditation;
use civis_core::status::StatusDelta;

const CHAIN: &str = "civis-test";
const NOW: i64 = 1_780_000_000;

/// A DID holder: current key, the committed next key, and its sequence number.
struct Holder {
    did: Did,
    keys: Vec<SoftwareKey>,
    index: usize,
    seq: u64,
}

fn key(label: &str, n: usize) -> SoftwareKey {
    use sha2::Digest;
    SoftwareKey::from_scalar(&sha2::Sha256::digest(format!("{label}/{n}").as_bytes())).unwrap()
}

impl Holder {
    fn new(label: &str) -> Self {
        let keys: Vec<_> = (0..4).map(|n| key(label, n)).collect();
        let did = Did::from_inception(
            keys[0].public_key(),
            &KeyCommitment::to(keys[1].public_key()),
        );
        Self {
            did,
            keys,
            index: 0,
            seq: 0,
        }
    }
    fn url(&self) -> DidUrl {
        self.did.key_url(self.index as u32 + 1)
    }
    fn next_commitment(&self) -> KeyCommitment {
        KeyCommitment::to(self.keys[self.index + 1].public_key())
    }
    fn sign(&self, op: Op) -> SignedTx {
        SignedTx::sign(
            Tx {
                chain: CHAIN.into(),
                seq: self.seq,
                op,
            },
            self.url(),
            &self.keys[self.index],
        )
        .unwrap()
    }
    fn create(&self) -> SignedTx {
        self.sign(Op::CreateDid {
            key: self.keys[0].public_key().clone(),
            next: self.next_commitment(),
        })
    }
}

struct World {
    state: State,
    gov: Vec<Holder>,
}

fn replica_genesis() -> Genesis {
    let gov: Vec<Holder> = (0..3).map(|i| Holder::new(&format!("gov{i}"))).collect();
    Genesis {
        chain_id: CHAIN.into(),
        time: NOW - 1000,
        validators: (0..4)
            .map(|i| key("validator", i).public_key().clone())
            .collect(),
        governance: gov
            .iter()
            .map(|g| (g.keys[0].public_key().clone(), g.next_commitment()))
            .collect(),
        governance_threshold: 2,
        epoch_length: civis_core::chain::state::DEFAULT_EPOCH_LENGTH,
    }
}

fn world() -> World {
    let gov: Vec<Holder> = (0..3).map(|i| Holder::new(&format!("gov{i}"))).collect();
    World {
        state: State::genesis(&replica_genesis()).unwrap(),
        gov,
    }
}

impl World {
    fn ok(&mut self, who: &mut Holder, op: Op) {
        let tx = who.sign(op);
        self.state
            .apply(&tx, NOW)
            .unwrap_or_else(|e| panic!("{}: {e}", tx.tx.op.name()));
        who.seq += 1;
    }
    fn refused(&mut self, tx: &SignedTx) -> Refused {
        let before = self.state.root();
        let err = self.state.apply(tx, NOW).unwrap_err();
        assert_eq!(
            self.state.root(),
            before,
            "a refused {} changed the state",
            tx.tx.op.name()
        );
        err
    }
    fn create(&mut self, h: &Holder) {
        self.state.apply(&h.create(), NOW).unwrap();
    }
    fn gov_op(&mut self, op: Op) {
        let mut g = std::mem::replace(&mut self.gov[0], Holder::new("placeholder"));
        self.ok(&mut g, op);
        self.gov[0] = g;
    }
}

fn accredit(w: &mut World, issuer: &Holder) {
    w.gov_op(Op::AccreditIssuer {
        issuer: issuer.did.clone(),
        doc_types: vec!["org.civis.citizen.1".into()],
        until: NOW + 86_400,
    });
}

#[test]
fn did_lifecycle_and_replay() {
    let mut w = world();
    let mut alice = Holder::new("alice");
    let create = alice.create();
    w.state.apply(&create, NOW).unwrap();
    // Replaying creation, or creating it again.
    assert!(matches!(w.refused(&create), Refused::Invalid { .. }));
    // Rotation to the committed key.
    let rotate = alice.sign(Op::RotateKey {
        key: alice.keys[1].public_key().clone(),
        next: KeyCommitment::to(alice.keys[2].public_key()),
    });
    w.state.apply(&rotate, NOW).unwrap();
    // The same rotation again is a replay.
    assert!(matches!(
        w.refused(&rotate),
        Refused::StaleKey(_) | Refused::BadSequence { .. }
    ));
    alice.index = 1;
    alice.seq = 1;
    assert_eq!(w.state.did(&alice.did).unwrap().key_index, 2);
    // The old key can no longer sign.
    let mut stale = Holder::new("alice");
    stale.seq = 1;
    assert!(matches!(
        w.refused(&stale.sign(Op::Deactivate)),
        Refused::StaleKey(_)
    ));
    // A rotation to a key that was never committed.
    let rogue = key("rogue", 0);
    let bad = alice.sign(Op::RotateKey {
        key: rogue.public_key().clone(),
        next: KeyCommitment::to(rogue.public_key()),
    });
    assert!(matches!(w.refused(&bad), Refused::Invalid { .. }));
    // A sequence gap.
    alice.seq = 5;
    assert_eq!(
        w.refused(&alice.sign(Op::Deactivate)),
        Refused::BadSequence {
            got: 5,
            expected: 1
        }
    );
    alice.seq = 1;
    w.ok(&mut alice, Op::Deactivate);
    assert!(w.state.did(&alice.did).unwrap().deactivated);
    assert!(matches!(
        w.refused(&alice.sign(Op::Deactivate)),
        Refused::Deactivated(_)
    ));
}

#[test]
fn creation_refusals() {
    let mut w = world();
    let bob = Holder::new("bob");
    // Signed by a key other than the inception key.
    let mut forged = bob.create();
    let other = Holder::new("mallory");
    forged = SignedTx::sign(forged.tx.clone(), bob.url(), &other.keys[0]).unwrap();
    assert_eq!(w.refused(&forged), Refused::BadSignature);
    // Claiming a DID the key does not incept.
    let claim = SignedTx::sign(bob.create().tx, other.url(), &bob.keys[0]).unwrap();
    assert!(matches!(w.refused(&claim), Refused::Invalid { .. }));
    // Another chain.
    let foreign = SignedTx::sign(
        Tx {
            chain: "other".into(),
            ..bob.create().tx
        },
        bob.url(),
        &bob.keys[0],
    )
    .unwrap();
    assert_eq!(w.refused(&foreign), Refused::WrongChain("other".into()));
    // Nonzero sequence on creation.
    let seq = SignedTx::sign(
        Tx {
            seq: 1,
            ..bob.create().tx
        },
        bob.url(),
        &bob.keys[0],
    )
    .unwrap();
    assert!(matches!(
        w.refused(&seq),
        Refused::Invalid {
            op: "create-did",
            ..
        }
    ));
    // Forged bytes reach no other refusal: the signature is checked first.
    let mut forged = seq.bytes().to_vec();
    let n = forged.len();
    forged[n - 3] ^= 1;
    let forged = SignedTx::decode(&forged).unwrap();
    assert_eq!(w.refused(&forged), Refused::BadSignature);
    // An unknown signer for anything else.
    assert!(matches!(
        w.refused(&bob.sign(Op::Deactivate)),
        Refused::UnknownSigner(_)
    ));
}

#[test]
fn accreditation_needs_governance() {
    let mut w = world();
    let mut issuer = Holder::new("registry-office");
    let mut kiosk = Holder::new("kiosk-7");
    w.create(&issuer);
    w.create(&kiosk);
    let op = Op::AccreditIssuer {
        issuer: issuer.did.clone(),
        doc_types: vec!["org.civis.citizen.1".into()],
        until: NOW + 10,
    };
    assert!(matches!(
        w.refused(&issuer.sign(op.clone())),
        Refused::Unauthorized { .. }
    ));
    let unknown = Op::AccreditIssuer {
        issuer: Holder::new("ghost").did,
        doc_types: vec!["x".into()],
        until: NOW + 10,
    };
    assert!(matches!(
        w.refused(&w.gov[0].sign(unknown)),
        Refused::Invalid { .. }
    ));
    let past = Op::AccreditIssuer {
        issuer: issuer.did.clone(),
        doc_types: vec!["x".into()],
        until: NOW - 1,
    };
    assert!(matches!(
        w.refused(&w.gov[0].sign(past)),
        Refused::Invalid { .. }
    ));
    let kiosk_root = w.state.kiosk_root();
    w.gov_op(op);
    assert_ne!(
        w.state.kiosk_root(),
        kiosk_root,
        "accreditations live in the kiosk tree"
    );
    let grants = vec![(
        "org.civis.citizen.1".to_owned(),
        vec![(
            "org.civis.citizen.1".to_owned(),
            vec!["age_over_18".to_owned()],
        )],
    )];
    let statement = |grants: ElementGrants, signer: &Holder, key: &SoftwareKey| {
        KioskAccreditation {
            chain: CHAIN.into(),
            kiosk: kiosk.did.clone(),
            key: key.public_key().clone(),
            grants,
            purpose: "age check".into(),
            not_before: NOW,
            not_after: NOW + 100,
        }
        .sign(&signer.url(), &signer.keys[signer.index])
        .unwrap()
    };
    let kop = |statement: Vec<u8>| Op::AccreditKiosk {
        kiosk: kiosk.did.clone(),
        grants: grants.clone(),
        purpose: "age check".into(),
        not_before: NOW,
        not_after: NOW + 100,
        statement,
    };
    let good = statement(grants.clone(), &w.gov[0], &kiosk.keys[0]);
    assert!(matches!(
        w.refused(&kiosk.sign(kop(good.clone()))),
        Refused::Unauthorized { .. }
    ));
    // The statement cards check must match the transaction, name the kiosk's current key and be
    // signed by the transaction's signer.
    let wider = vec![(
        "org.civis.citizen.1".to_owned(),
        vec![(
            "org.civis.citizen.1".to_owned(),
            vec!["age_over_18".to_owned(), "birth_date".to_owned()],
        )],
    )];
    for (bad, why) in [
        (statement(wider, &w.gov[0], &kiosk.keys[0]), "wider grants"),
        (
            statement(grants.clone(), &w.gov[0], &kiosk.keys[1]),
            "another key",
        ),
        (
            statement(grants.clone(), &w.gov[1], &kiosk.keys[0]),
            "another signer",
        ),
        (good[..good.len() - 1].to_vec(), "truncated"),
    ] {
        let tx = w.gov[0].sign(kop(bad));
        assert!(
            matches!(w.refused(&tx), Refused::Invalid { .. }),
            "statement with {why} accepted"
        );
    }
    let kop = kop(good);
    w.gov_op(kop);
    w.gov_op(Op::RevokeIssuer {
        issuer: issuer.did.clone(),
    });
    // A revoked issuer cannot create lists.
    let list = Op::CreateStatusList {
        list: "batch-1".into(),
        bits: 2,
        size: 1000,
    };
    assert!(matches!(
        w.refused(&issuer.sign(list)),
        Refused::Unauthorized { .. }
    ));
    let _ = (&mut issuer, &mut kiosk);
}

#[test]
fn status_lists_only_by_their_issuer_and_revocation_is_final() {
    let mut w = world();
    let mut issuer = Holder::new("registry-office");
    let mut other = Holder::new("other-office");
    w.create(&issuer);
    w.create(&other);
    accredit(&mut w, &issuer);
    accredit(&mut w, &other);
    for (bits, size, name) in [(3u8, 10u64, "a"), (2, 0, "b"), (2, 20_000_000, "c")] {
        let op = Op::CreateStatusList {
            list: name.into(),
            bits,
            size,
        };
        assert!(
            matches!(w.refused(&issuer.sign(op)), Refused::Invalid { .. }),
            "{bits}/{size}"
        );
    }
    assert!(matches!(
        w.refused(&issuer.sign(Op::CreateStatusList {
            list: "a/b".into(),
            bits: 2,
            size: 10
        })),
        Refused::Invalid { .. }
    ));
    w.ok(
        &mut issuer,
        Op::CreateStatusList {
            list: "batch-1".into(),
            bits: 2,
            size: 100_000,
        },
    );
    assert!(matches!(
        w.refused(&issuer.sign(Op::CreateStatusList {
            list: "batch-1".into(),
            bits: 2,
            size: 10
        })),
        Refused::Invalid { .. }
    ));
    let uri = status_uri(&issuer.did, "batch-1");
    let root = w.state.kiosk_root();
    w.ok(
        &mut issuer,
        Op::UpdateStatus {
            list: "batch-1".into(),
            delta: StatusDelta::from_changes(vec![(7, 1), (90_000, 2)]),
        },
    );
    assert_ne!(w.state.kiosk_root(), root);
    assert_eq!(w.state.status_list(&uri).unwrap().get(7), Some(1));
    assert_eq!(w.state.status_list(&uri).unwrap().get(90_000), Some(2));
    // Another issuer cannot touch this list: the list name resolves under its own DID.
    let foreign = Op::UpdateStatus {
        list: "batch-1".into(),
        delta: StatusDelta::from_changes(vec![(7, 0)]),
    };
    assert!(matches!(
        w.refused(&other.sign(foreign)),
        Refused::Invalid { .. }
    ));
    // Un-revoking, out of range, undefined values, empty deltas.
    for changes in [vec![(7u64, 0u8)], vec![(100_000, 1)], vec![(8, 3)], vec![]] {
        // (8, 3): 3 is not a status Civis defines, at any width.
        let op = Op::UpdateStatus {
            list: "batch-1".into(),
            delta: StatusDelta::from_changes(changes.clone()),
        };
        assert!(
            matches!(w.refused(&issuer.sign(op)), Refused::Invalid { .. }),
            "{changes:?}"
        );
    }
    // Suspension can be lifted.
    w.ok(
        &mut issuer,
        Op::UpdateStatus {
            list: "batch-1".into(),
            delta: StatusDelta::from_changes(vec![(90_000, 0)]),
        },
    );
    assert_eq!(w.state.status_list(&uri).unwrap().get(90_000), Some(0));
    let _ = &mut other;
}

#[test]
fn validator_change_needs_a_governance_quorum() {
    let mut w = world();
    let new_set: Vec<_> = (10..14)
        .map(|i| key("validator", i).public_key().clone())
        .collect();
    let bare = Op::SetValidators {
        validators: new_set.clone(),
        approvals: vec![],
    };
    // One member of three, threshold two.
    assert!(matches!(
        w.refused(&w.gov[0].sign(bare.clone())),
        Refused::Invalid { .. }
    ));
    // Approved by an outsider.
    let outsider = Holder::new("outsider");
    w.create(&outsider);
    let by_outsider = tx::approve(&bare, CHAIN, 0, outsider.url(), &outsider.keys[0]).unwrap();
    let op = Op::SetValidators {
        validators: new_set.clone(),
        approvals: vec![by_outsider],
    };
    assert!(matches!(
        w.refused(&w.gov[0].sign(op)),
        Refused::Unauthorized { .. }
    ));
    // The signer approving itself again.
    let self_approval = tx::approve(&bare, CHAIN, 0, w.gov[0].url(), &w.gov[0].keys[0]).unwrap();
    let op = Op::SetValidators {
        validators: new_set.clone(),
        approvals: vec![self_approval],
    };
    assert!(matches!(
        w.refused(&w.gov[0].sign(op)),
        Refused::Invalid { .. }
    ));
    // An approval of a different validator set.
    let other = Op::SetValidators {
        validators: new_set[..3].to_vec(),
        approvals: vec![],
    };
    let wrong = tx::approve(&other, CHAIN, 0, w.gov[1].url(), &w.gov[1].keys[0]).unwrap();
    let op = Op::SetValidators {
        validators: new_set.clone(),
        approvals: vec![wrong],
    };
    assert!(matches!(
        w.refused(&w.gov[0].sign(op)),
        Refused::Invalid { .. }
    ));
    // A proper second approval: the set waits for the end of the epoch.
    assert_eq!(w.state.set_epoch(), 0);
    let good = tx::approve(&bare, CHAIN, 0, w.gov[1].url(), &w.gov[1].keys[0]).unwrap();
    w.gov_op(Op::SetValidators {
        validators: new_set.clone(),
        approvals: vec![good],
    });
    assert_eq!(w.state.set_epoch(), 0);
    assert_eq!(w.state.pending_validators(), Some(new_set.clone()));
    let length = w.state.epoch_length();
    w.state.end_block(length - 2);
    assert_eq!(
        w.state.set_epoch(),
        0,
        "only the last block of an epoch hands over"
    );
    w.state.end_block(length - 1);
    let record = w.state.chain_record().unwrap();
    assert_eq!((record.epoch, record.validators), (1, new_set));
    assert_eq!(w.state.pending_validators(), None);
    // Approvals name the set they were given under: one made for epoch 0's set is refused
    // now that epoch 1's set is in force; the same approval for epoch 1 passes.
    let next = Op::SetValidators {
        validators: vec![key("validator", 20).public_key().clone()],
        approvals: vec![],
    };
    let stale = tx::approve(&next, CHAIN, 0, w.gov[1].url(), &w.gov[1].keys[0]).unwrap();
    assert!(matches!(
        w.refused(&w.gov[0].sign(Op::SetValidators {
            validators: vec![key("validator", 20).public_key().clone()],
            approvals: vec![stale],
        })),
        Refused::Invalid { .. }
    ));
    let fresh = tx::approve(&next, CHAIN, 1, w.gov[1].url(), &w.gov[1].keys[0]).unwrap();
    w.gov_op(Op::SetValidators {
        validators: vec![key("validator", 20).public_key().clone()],
        approvals: vec![fresh],
    });
}

#[test]
fn elections_and_governance_limits() {
    let mut w = world();
    let mut citizen = Holder::new("someone");
    w.create(&citizen);
    let op = Op::RegisterElection {
        id: "council-2027".into(),
        eligibility: vec![("age_over_18".into(), ciborium::Value::Bool(true))],
        opens: NOW,
        closes: NOW + 3600,
        reauth: civis_core::evote::Reauth::Refuse,
    };
    assert!(matches!(
        w.refused(&citizen.sign(op.clone())),
        Refused::Unauthorized { .. }
    ));
    w.gov_op(op.clone());
    assert!(matches!(
        w.refused(&w.gov[0].sign(op)),
        Refused::Invalid { .. }
    ));
    assert!(matches!(
        w.refused(&w.gov[1].sign(Op::Deactivate)),
        Refused::Invalid { .. }
    ));
    let _ = &mut citizen;
}

#[test]
fn wire_form_round_trips_and_hostile_bytes_are_refused() {
    let w = world();
    let tx = w.gov[0].sign(Op::RegisterElection {
        id: "e".into(),
        eligibility: vec![],
        opens: 1,
        closes: 2,
        reauth: civis_core::evote::Reauth::Refuse,
    });
    let back = SignedTx::decode(tx.bytes()).unwrap();
    assert_eq!(back.tx, tx.tx);
    assert_eq!(back.signer, tx.signer);
    assert_eq!(Tx::from_slice(&tx.tx.to_vec()).unwrap(), tx.tx);
    for cut in [0, 1, 10, tx.bytes().len() - 1] {
        assert!(SignedTx::decode(&tx.bytes()[..cut]).is_err());
    }
    assert!(SignedTx::decode(&vec![0x40; tx::MAX_TX_LEN + 1]).is_err());
    // Unknown operation and unknown keys.
    let mut v = tx.tx.to_value();
    if let ciborium::Value::Map(m) = &mut v {
        m.push((ciborium::Value::Text("extra".into()), ciborium::Value::Null));
    }
    assert!(Tx::from_value(&v).is_err());
}

mod blocks {
    use super::*;
    use civis_core::chain::block::{self, Block, BlockError, Header};

    #[test]
    fn build_then_execute_on_another_replica_agrees() {
        let w = world();
        let genesis = Header::genesis(&w.state, NOW - 1000);
        let mut issuer = Holder::new("registry-office");
        let mut pending = vec![issuer.create()];
        issuer.seq = 0;
        // A refused one in the middle: an unknown signer.
        pending.push(Holder::new("ghost").sign(Op::Deactivate));
        pending.push(w.gov[0].sign(Op::AccreditIssuer {
            issuer: issuer.did.clone(),
            doc_types: vec!["org.civis.citizen.1".into()],
            until: NOW + 9999,
        }));
        let block::Built {
            state,
            block: blk,
            refused,
            ..
        } = block::build(&w.state, &genesis, pending, NOW);
        assert_eq!(blk.txs.len(), 2);
        assert_eq!(refused.len(), 1);
        // A second replica from the same genesis re-executes to the same state.
        let replica = world();
        let executed = block::execute(&replica.state, &genesis, &blk).unwrap();
        assert_eq!(executed.root(), state.root());
        // A restart rebuilds the same state from its persisted entries.
        let kiosk = state.kiosk_tree().entries().cloned().collect();
        let public = state.public_tree().entries().cloned().collect();
        let g = civis_core::chain::state::Genesis {
            ..replica_genesis()
        };
        let restored = State::restore(&g, kiosk, public).unwrap();
        assert_eq!(restored.root(), state.root());
        assert_eq!(restored.set_epoch(), state.set_epoch());
        assert_eq!(blk.header.state_root(), state.root());
        // Wire round trip.
        let back = Block::decode(&blk.encode()).unwrap();
        assert_eq!(back.header, blk.header);
        assert_eq!(back.txs.len(), 2);
        assert_eq!(
            block::execute(&replica.state, &genesis, &back)
                .unwrap()
                .root(),
            state.root()
        );
        // The same transactions again in the next block are replays.
        let block::Built {
            block: next,
            refused,
            ..
        } = block::build(&state, &blk.header, blk.txs.clone(), NOW + 1);
        assert!(next.txs.is_empty());
        assert_eq!(refused.len(), 2);
        let _ = &mut issuer;
    }

    #[test]
    fn a_full_block_defers_the_rest() {
        let w = world();
        let genesis = Header::genesis(&w.state, NOW - 1000);
        let pending: Vec<SignedTx> = (0..block::MAX_BLOCK_TXS + 5)
            .map(|i| Holder::new(&format!("h{i}")).create())
            .collect();
        let built = block::build(&w.state, &genesis, pending, NOW);
        assert_eq!(built.block.txs.len(), block::MAX_BLOCK_TXS);
        assert_eq!(built.deferred.len(), 5, "nothing is dropped");
        assert!(built.refused.is_empty());
        assert!(built.block.encode().len() <= block::MAX_BLOCK_LEN);
    }

    #[test]
    fn tampered_blocks_are_invalid() {
        let w = world();
        let genesis = Header::genesis(&w.state, NOW - 1000);
        let alice = Holder::new("alice");
        let blk = block::build(&w.state, &genesis, vec![alice.create()], NOW).block;
        let mut bad = blk.clone();
        bad.header.kiosk_root[0] ^= 1;
        assert_eq!(
            block::execute(&w.state, &genesis, &bad).unwrap_err(),
            BlockError::Mismatch("kiosk_root")
        );
        let mut bad = blk.clone();
        bad.header.public_root[0] ^= 1;
        assert_eq!(
            block::execute(&w.state, &genesis, &bad).unwrap_err(),
            BlockError::Mismatch("public_root")
        );
        let mut bad = blk.clone();
        bad.header.parent[0] ^= 1;
        assert!(matches!(
            block::execute(&w.state, &genesis, &bad).unwrap_err(),
            BlockError::Lineage(_)
        ));
        let mut bad = blk.clone();
        bad.header.height = 5;
        assert!(matches!(
            block::execute(&w.state, &genesis, &bad).unwrap_err(),
            BlockError::Lineage(_)
        ));
        let mut bad = blk.clone();
        bad.header.time = genesis.time - 1;
        assert!(matches!(
            block::execute(&w.state, &genesis, &bad).unwrap_err(),
            BlockError::Lineage(_)
        ));
        // A transaction swapped for another: tx_root no longer matches.
        let mut bad = blk.clone();
        bad.txs = vec![Holder::new("bob").create()];
        assert_eq!(
            block::execute(&w.state, &genesis, &bad).unwrap_err(),
            BlockError::Mismatch("tx_root")
        );
        // A proposer that includes a refused transaction (with a consistent tx_root).
        let mut bad = blk.clone();
        bad.txs.push(alice.create());
        bad.header.tx_root = block::tx_root(&bad.txs);
        assert!(matches!(
            block::execute(&w.state, &genesis, &bad).unwrap_err(),
            BlockError::Transaction { index: 1, .. }
        ));
        // Truncated encodings.
        let bytes = blk.encode();
        assert!(Block::decode(&bytes[..bytes.len() - 3]).is_err());
    }
}

/// Kiosks hold the keys of the parties they must know, and only those: a free DID's keys are in
/// the public tree alone; accrediting it copies its whole key history into the kiosk tree
/// (credentials signed before a rotation still verify); later rotations follow it there.
#[test]
fn only_accredited_dids_reach_the_kiosk_tree_with_their_whole_history() {
    use civis_core::chain::table::Table;
    let mut w = world();
    let mut issuer = Holder::new("history");
    w.create(&issuer);
    let kiosk_root = w.state.kiosk_root();
    let url1 = issuer.did.key_url(1).to_string();
    assert!(
        w.state
            .public_tree()
            .get(Table::Key, url1.as_bytes())
            .is_some()
    );
    assert!(
        w.state
            .kiosk_tree()
            .get(Table::Key, url1.as_bytes())
            .is_none()
    );
    // A rotation before accreditation: still nothing for kiosks.
    let rotate = Op::RotateKey {
        key: issuer.keys[1].public_key().clone(),
        next: KeyCommitment::to(issuer.keys[2].public_key()),
    };
    w.ok(&mut issuer, rotate);
    issuer.index = 1;
    assert_eq!(
        w.state.kiosk_root(),
        kiosk_root,
        "a free DID changed the kiosk tree"
    );
    // Accredited: both keys, as they were — the first marked retired at the rotation.
    accredit(&mut w, &issuer);
    let url2 = issuer.did.key_url(2).to_string();
    let key_entry = |w: &World, url: &str| {
        civis_core::chain::state::records::decode_key_value(
            w.state
                .kiosk_tree()
                .get(Table::Key, url.as_bytes())
                .unwrap(),
        )
        .unwrap()
    };
    let (k1, retired1) = key_entry(&w, &url1);
    assert_eq!(&k1, issuer.keys[0].public_key());
    assert!(retired1.is_some());
    assert_eq!(
        key_entry(&w, &url2),
        (issuer.keys[1].public_key().clone(), None)
    );
    // A rotation after accreditation reaches kiosks.
    let rotate = Op::RotateKey {
        key: issuer.keys[2].public_key().clone(),
        next: KeyCommitment::to(issuer.keys[3].public_key()),
    };
    w.ok(&mut issuer, rotate);
    let url3 = issuer.did.key_url(3).to_string();
    assert_eq!(
        key_entry(&w, &url3),
        (issuer.keys[2].public_key().clone(), None)
    );
    assert!(key_entry(&w, &url2).1.is_some(), "key 2 retired");
    // Governance keys are there from genesis.
    let gov1 = w.gov[0].did.key_url(1).to_string();
    assert!(
        w.state
            .kiosk_tree()
            .get(Table::Key, gov1.as_bytes())
            .is_some()
    );
}

#[test]
fn governance_rotations_are_recorded_for_cards_and_a_card_follows_them() {
    use civis_core::card::governance::{GovernanceSet, Rotated};
    use civis_core::chain::table::Table;
    let mut w = world();
    let g = replica_genesis();
    let mut card = GovernanceSet::from_inception(CHAIN, &g.governance).unwrap();
    // An issuer's rotation is not a governance rotation: nothing for cards.
    let mut issuer = Holder::new("not-governance");
    w.create(&issuer);
    accredit(&mut w, &issuer);
    let op = Op::RotateKey {
        key: issuer.keys[1].public_key().clone(),
        next: KeyCommitment::to(issuer.keys[2].public_key()),
    };
    w.ok(&mut issuer, op);
    let recorded = |w: &World| -> Vec<(String, Vec<u8>)> {
        w.state
            .kiosk_tree()
            .entries()
            .filter(|e| e.table == Table::Rotation)
            .map(|e| (String::from_utf8(e.key.clone()).unwrap(), e.value.clone()))
            .collect()
    };
    assert!(recorded(&w).is_empty());
    // Member 1 rotates twice, member 2 once.
    for (m, times) in [(1usize, 2usize), (2, 1)] {
        for _ in 0..times {
            let mut h = std::mem::replace(&mut w.gov[m], Holder::new("placeholder"));
            let i = h.index;
            let op = Op::RotateKey {
                key: h.keys[i + 1].public_key().clone(),
                next: KeyCommitment::to(h.keys[i + 2].public_key()),
            };
            w.ok(&mut h, op);
            h.index += 1;
            w.gov[m] = h;
        }
    }
    let txs = recorded(&w);
    assert_eq!(txs.len(), 3);
    for (url, tx) in &txs {
        assert_eq!(&SignedTx::decode(tx).unwrap().bytes().to_vec(), tx);
        assert!(url.ends_with("#key-2") || url.ends_with("#key-3"), "{url}");
    }
    // Pushed in tree order, a card takes what it can and catches up on a second round.
    let mut applied = 0;
    for _ in 0..2 {
        for (_, tx) in &txs {
            if card.rotate(tx) == Ok(Rotated::Applied) {
                applied += 1;
            }
        }
    }
    assert_eq!(applied, 3);
    for (m, h) in w.gov.iter().enumerate() {
        assert_eq!(card.members[m].did, h.did);
        assert_eq!(card.members[m].key, *h.keys[h.index].public_key());
        assert_eq!(card.members[m].index as usize, h.index + 1);
    }
    // An accreditation the chain accepts from the rotated member is one the card accepts.
    let kiosk = Holder::new("kiosk");
    w.create(&kiosk);
    let statement = KioskAccreditation {
        chain: CHAIN.into(),
        kiosk: kiosk.did.clone(),
        key: kiosk.keys[0].public_key().clone(),
        grants: vec![(
            "org.civis.citizen.1".into(),
            vec![("org.civis.citizen.1".into(), vec!["age_over_18".into()])],
        )],
        purpose: "counter".into(),
        not_before: NOW - 10,
        not_after: NOW + 86_400,
    };
    let signed = statement.sign(&w.gov[1].url(), &w.gov[1].keys[2]).unwrap();
    let mut member = std::mem::replace(&mut w.gov[1], Holder::new("placeholder"));
    w.ok(
        &mut member,
        Op::AccreditKiosk {
            kiosk: kiosk.did.clone(),
            grants: statement.grants.clone(),
            purpose: statement.purpose.clone(),
            not_before: statement.not_before,
            not_after: statement.not_after,
            statement: signed.clone(),
        },
    );
    w.gov[1] = member;
    let sign1 = civis_core::cose::decode_sign1(&signed).unwrap();
    assert_eq!(card.verify_accreditation(&sign1).unwrap(), statement);
    // The same statement under the member's rotated-out first key: the card refuses it (the
    // chain checks a statement under the signer's current key, so it never records one).
    let old = statement
        .sign(&w.gov[1].did.key_url(1), &w.gov[1].keys[0])
        .unwrap();
    assert!(
        card.verify_accreditation(&civis_core::cose::decode_sign1(&old).unwrap())
            .is_err()
    );
}
