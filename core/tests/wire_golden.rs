//! Golden vectors of Civis's own wire formats (specs/vectors/chain, specs/vectors/card,
//! specs/vectors/qr): a signed transaction per operation, a block header, cold and delta sync
//! bundles, the kiosk snapshot file, the kiosk accreditation statement, the NFC static handover,
//! and a QR engagement and presentation. Each is rebuilt from fixed keys, fixed times and seeded
//! randomness and compared byte for byte with its file; each file is also decoded and checked
//! on its own (so the files are usable as fuzz seeds and interop references).
//! `CIVIS_BLESS=1 cargo test -p civis-core --test wire_golden` rewrites them after a deliberate
//! format change.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "common/citizen.rs"]
mod citizen;
mod common;

use citizen::{SeededRng, key};
use civis_core::cbor::CborForm;
use civis_core::chain::block::{self, Header};
use civis_core::chain::cert::{Proposal, ValidatorSet};
use civis_core::chain::light::{KioskSnapshot, SyncBundle};
use civis_core::chain::state::{Genesis, State};
use civis_core::chain::tx::{Op, SignedTx, Tx};
use civis_core::crypto::SoftwareKey;
use civis_core::did::{Did, DidUrl, KeyCommitment};
use civis_core::kiosk::KioskAccreditation;
use civis_core::mdoc::{
    self, DeviceEngagement, DeviceNameSpaces, DeviceResponse, Document, ItemsRequest,
};
use civis_core::ndef::{self, NfcLimits};
use civis_core::qr::{KioskEngagement, QrPresentation};
use civis_core::status::StatusDelta;
use common::own;

const CHAIN: &str = "civis-golden";
const T0: i64 = 1_780_000_000;

fn pinned(name: &str, bytes: &[u8]) {
    let path = own(name);
    if std::env::var_os("CIVIS_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, bytes).unwrap();
    }
    let on_disk = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(on_disk, bytes, "{name} differs from its golden file");
}

/// A DID holder with fixed keys.
struct Holder {
    did: Did,
    key: SoftwareKey,
    next: SoftwareKey,
    seq: u64,
}

impl Holder {
    fn new(label: &str) -> Self {
        let (key, next) = (key(label), key(&format!("{label} next")));
        Self {
            did: Did::from_inception(key.public_key(), &KeyCommitment::to(next.public_key())),
            key,
            next,
            seq: 0,
        }
    }
    fn kid(&self) -> DidUrl {
        self.did.key_url(1)
    }
    fn create(&self) -> SignedTx {
        SignedTx::sign(
            Tx {
                chain: CHAIN.into(),
                seq: 0,
                op: Op::CreateDid {
                    key: self.key.public_key().clone(),
                    next: KeyCommitment::to(self.next.public_key()),
                },
            },
            self.kid(),
            &self.key,
        )
        .unwrap()
    }
    fn sign(&mut self, op: Op) -> SignedTx {
        let t = SignedTx::sign(
            Tx {
                chain: CHAIN.into(),
                seq: self.seq,
                op,
            },
            self.kid(),
            &self.key,
        )
        .unwrap();
        self.seq += 1;
        t
    }
}

fn validators() -> Vec<SoftwareKey> {
    (0..4).map(|i| key(&format!("validator {i}"))).collect()
}

fn genesis(gov: &Holder) -> Genesis {
    Genesis {
        chain_id: CHAIN.into(),
        time: T0,
        validators: validators()
            .iter()
            .map(|k| k.public_key().clone())
            .collect(),
        governance: vec![(
            gov.key.public_key().clone(),
            KeyCommitment::to(gov.next.public_key()),
        )],
        governance_threshold: 1,
        epoch_length: 1000,
    }
}

fn certify(header: &Header) -> Vec<u8> {
    let keys = validators();
    let set = ValidatorSet::new(
        CHAIN.as_bytes(),
        keys.iter().map(|k| k.public_key().clone()).collect(),
    )
    .unwrap();
    let signers: Vec<&SoftwareKey> = [0usize, 1, 3]
        .iter()
        .map(|&i| {
            keys.iter()
                .find(|k| k.public_key() == &set.keys()[i])
                .unwrap()
        })
        .collect();
    let proposal = Proposal {
        epoch: header.epoch,
        view: header.height + 10,
        parent_view: header.height + 9,
        payload: header.digest(),
    };
    set.certify(proposal, &signers).unwrap().encode()
}

/// What the library kiosk may read.
fn library_grants() -> civis_core::kiosk::ElementGrants {
    vec![(
        mdoc::citizen::DOC_TYPE.into(),
        vec![(
            mdoc::citizen::NAMESPACE.into(),
            vec!["age_over_18".into(), "resident_district".into()],
        )],
    )]
}

fn statement(gov: &Holder, kiosk: &Holder) -> Vec<u8> {
    KioskAccreditation {
        chain: CHAIN.into(),
        kiosk: kiosk.did.clone(),
        key: kiosk.key.public_key().clone(),
        grants: library_grants(),
        purpose: "library membership".into(),
        not_before: T0,
        not_after: T0 + 365 * 86_400,
    }
    .sign(&gov.kid(), &gov.key)
    .unwrap()
}

/// One signed transaction of every operation, in an order a chain accepts.
fn every_operation(gov: &mut Holder, issuer: &mut Holder, kiosk: &Holder) -> Vec<SignedTx> {
    let validator = key("validator 4");
    let set = Op::SetValidators {
        validators: validators()
            .iter()
            .skip(1)
            .map(|k| k.public_key().clone())
            .chain([validator.public_key().clone()])
            .collect(),
        approvals: Vec::new(),
    };
    let mut rotating = Holder::new("rotating");
    let mut leaving = Holder::new("leaving");
    let leave = [leaving.create(), leaving.sign(Op::Deactivate)];
    let after = key("rotating after");
    let rotate = {
        let op = Op::RotateKey {
            key: rotating.next.public_key().clone(),
            next: KeyCommitment::to(after.public_key()),
        };
        rotating.sign(op)
    };
    vec![
        issuer.create(),
        kiosk.create(),
        rotating.create(),
        gov.sign(Op::AccreditIssuer {
            issuer: issuer.did.clone(),
            doc_types: vec![mdoc::citizen::DOC_TYPE.into()],
            until: T0 + 365 * 86_400,
        }),
        issuer.sign(Op::CreateStatusList {
            list: "batch-1".into(),
            bits: 2,
            size: 4_096,
        }),
        issuer.sign(Op::UpdateStatus {
            list: "batch-1".into(),
            delta: StatusDelta::from_changes(vec![(7, 2), (42, 1)]),
        }),
        gov.sign(Op::AccreditKiosk {
            kiosk: kiosk.did.clone(),
            grants: library_grants(),
            purpose: "library membership".into(),
            not_before: T0,
            not_after: T0 + 365 * 86_400,
            statement: statement(gov, kiosk),
        }),
        gov.sign(Op::RegisterElection {
            id: "council-2026".into(),
            eligibility: vec![("age_over_18".into(), ciborium::Value::Bool(true))],
            opens: T0 + 86_400,
            closes: T0 + 2 * 86_400,
            reauth: civis_core::evote::Reauth::Refuse,
        }),
        rotate,
        gov.sign(set),
        leave[0].clone(),
        leave[1].clone(),
        gov.sign(Op::RevokeIssuer {
            issuer: issuer.did.clone(),
        }),
    ]
}

#[test]
fn chain_formats_are_reproduced_byte_for_byte() {
    let mut gov = Holder::new("governance");
    let mut issuer = Holder::new("issuer");
    let kiosk = Holder::new("kiosk");
    let genesis = genesis(&gov);
    let mut state = State::genesis(&genesis).unwrap();
    let mut head = Header::genesis(&state, T0);
    let txs = every_operation(&mut gov, &mut issuer, &kiosk);

    // One file per operation (the revoke-issuer one last, after a block, so the cold bundle
    // still has an accredited issuer).
    let mut seen = std::collections::BTreeSet::new();
    for t in &txs {
        let name = t.tx.op.name();
        if seen.insert(name) {
            pinned(&format!("chain/tx-{name}.cbor"), t.bytes());
        }
        let back = SignedTx::decode(t.bytes()).unwrap();
        assert_eq!((back.bytes(), &back.tx), (t.bytes(), &t.tx));
    }
    assert_eq!(seen.len(), 10, "one transaction of every operation");

    let (first, rest) = txs.split_at(txs.len() - 1);
    let built = block::build(&state, &head, first.to_vec(), T0 + 1);
    assert!(built.refused.is_empty(), "{:?}", built.refused);
    let base_state = state.clone();
    let base_header = head.clone();
    state = built.state;
    head = built.block.header.clone();
    pinned("chain/header.cbor", &head.to_vec());
    pinned("chain/block.cbor", &built.block.encode());
    let cold = SyncBundle::build(
        head.clone(),
        certify(&head),
        Vec::new(),
        None,
        base_state.kiosk_tree(),
        state.kiosk_tree(),
    );
    pinned("chain/bundle-cold.cbor", &cold.encode());

    let built = block::build(&state, &head, rest.to_vec(), T0 + 2);
    assert!(built.refused.is_empty(), "{:?}", built.refused);
    let (at, at_state) = (head.clone(), state.clone());
    state = built.state;
    head = built.block.header.clone();
    let delta = SyncBundle::build(
        head.clone(),
        certify(&head),
        Vec::new(),
        Some(at.height),
        at_state.kiosk_tree(),
        state.kiosk_tree(),
    );
    pinned("chain/bundle-delta.cbor", &delta.encode());

    // The files decode and a kiosk pinned to the genesis accepts them in order.
    let mut kiosk_snapshot = KioskSnapshot::from_genesis(&genesis).unwrap();
    assert_eq!(kiosk_snapshot.header(), &base_header);
    let read = |name: &str| std::fs::read(own(name)).unwrap();
    kiosk_snapshot
        .apply(&SyncBundle::decode(&read("chain/bundle-cold.cbor")).unwrap())
        .unwrap();
    kiosk_snapshot
        .apply(&SyncBundle::decode(&read("chain/bundle-delta.cbor")).unwrap())
        .unwrap();
    assert_eq!(kiosk_snapshot.header(), &head);
    pinned("chain/snapshot.cbor", &kiosk_snapshot.encode());
    let loaded = KioskSnapshot::decode(&genesis, &read("chain/snapshot.cbor")).unwrap();
    assert_eq!(loaded.header(), &head);
    assert_eq!(Header::from_slice(&read("chain/header.cbor")).unwrap(), at);
    let b = block::Block::decode(&read("chain/block.cbor")).unwrap();
    assert_eq!(b.txs.len(), txs.len() - 1);
}

#[test]
fn card_and_qr_formats_are_reproduced_byte_for_byte() {
    let gov = Holder::new("governance");
    let kiosk = Holder::new("kiosk");
    let statement = statement(&gov, &kiosk);
    pinned("card/kiosk-accreditation.cbor", &statement);
    let acc = KioskAccreditation::verify(
        &std::fs::read(own("card/kiosk-accreditation.cbor")).unwrap(),
        gov.key.public_key(),
    )
    .unwrap();
    assert_eq!(acc.kiosk, kiosk.did);

    // The NDEF file content a card serves: a Handover Select with the DeviceEngagement.
    let engagement = DeviceEngagement::new(key("card ephemeral").public_key()).to_vec();
    let handover = ndef::static_handover(&engagement, NfcLimits::EXTENDED).unwrap();
    pinned("card/ndef-handover.bin", &handover);
    let parsed =
        ndef::parse_static_handover(&std::fs::read(own("card/ndef-handover.bin")).unwrap())
            .unwrap();
    assert_eq!(parsed.device_engagement, engagement);

    // A kiosk engagement QR for age-over-18 and a phone's answer to it.
    let mut rng = SeededRng::new("qr golden");
    let request = ItemsRequest {
        doc_type: mdoc::citizen::DOC_TYPE.into(),
        name_spaces: vec![(
            mdoc::citizen::NAMESPACE.into(),
            vec![("age_over_18".into(), false)],
        )],
        request_info: None,
    };
    let (qr, e_reader) = KioskEngagement::new(request, &mut rng);
    pinned("qr/engagement.txt", qr.to_text().as_bytes());
    let f = citizen::fixture();
    let device_signed = mdoc::sign_device(
        &f.device_key,
        &qr.transcript(),
        mdoc::citizen::DOC_TYPE,
        DeviceNameSpaces::default(),
    )
    .unwrap();
    let response = DeviceResponse {
        version: "1.0".into(),
        documents: Some(vec![Document {
            doc_type: mdoc::citizen::DOC_TYPE.into(),
            issuer_signed: mdoc::select(&f.issuer_signed, |_, e| e == "age_over_18"),
            device_signed,
            errors: None,
        }]),
        document_errors: None,
        status: 0,
    }
    .to_vec();
    let answer = QrPresentation::seal(&qr, &response, &mut rng).unwrap();
    pinned("qr/presentation.txt", answer.to_text().as_bytes());
    let text = std::fs::read_to_string(own("qr/presentation.txt")).unwrap();
    let engagement =
        KioskEngagement::from_text(&std::fs::read_to_string(own("qr/engagement.txt")).unwrap())
            .unwrap();
    let opened = QrPresentation::from_text(&text)
        .unwrap()
        .open(&engagement, &e_reader)
        .unwrap();
    assert_eq!(opened, response);
}
