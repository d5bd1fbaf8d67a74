//! The kiosk light client end to end: blocks executed by the registry rules, headers certified
//! by validator keys, bundles built from the state, applied by a kiosk that pinned the genesis,
//! and its trust snapshot driving the verification engine — plus every refusal of issue #3 §6.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use civis_core::cbor::CborForm;
use civis_core::chain::block::{self, Header};
use civis_core::chain::cert::{Finalization, Proposal, ValidatorSet};
use civis_core::chain::light::{EpochChange, KioskSnapshot, StatusChanges, SyncBundle, SyncError};
use civis_core::chain::state::{Genesis, State, Tree, chunk_key, status_uri};
use civis_core::chain::table::Table;
use civis_core::chain::tx::{self, Op, SignedTx, Tx};
use civis_core::crypto::{EcPublicKey, SoftwareKey};
use civis_core::did::{Did, KeyCommitment};
use civis_core::mdoc::{
    self, DeviceNameSpaces, DeviceResponse, Document, IssueParams, IssuerKeyId, SessionTranscript,
    StatusRef, TDate, ValidityInfo,
};
use civis_core::status::StatusDelta;
use civis_core::verify::{Policy, Presentation, RejectReason, Verdict, verify_presentation};
use civis_core::{Timestamp, mdoc::citizen};
use sha2::Digest;

const CHAIN: &str = "civis-light";
const T0: i64 = 1_780_000_000;

fn key(label: &str) -> SoftwareKey {
    SoftwareKey::from_scalar(&sha2::Sha256::digest(label.as_bytes())).unwrap()
}

struct Actor {
    did: Did,
    keys: [SoftwareKey; 2],
    seq: u64,
}

impl Actor {
    fn new(label: &str) -> Self {
        let keys = [key(&format!("{label}/0")), key(&format!("{label}/1"))];
        Self {
            did: Did::from_inception(
                keys[0].public_key(),
                &KeyCommitment::to(keys[1].public_key()),
            ),
            keys,
            seq: 0,
        }
    }
    fn tx(&mut self, op: Op) -> SignedTx {
        let t = SignedTx::sign(
            Tx {
                chain: CHAIN.into(),
                seq: self.seq,
                op,
            },
            self.did.key_url(1),
            &self.keys[0],
        )
        .unwrap();
        self.seq += 1;
        t
    }
    fn create(&self) -> SignedTx {
        SignedTx::sign(
            Tx {
                chain: CHAIN.into(),
                seq: 0,
                op: Op::CreateDid {
                    key: self.keys[0].public_key().clone(),
                    next: KeyCommitment::to(self.keys[1].public_key()),
                },
            },
            self.did.key_url(1),
            &self.keys[0],
        )
        .unwrap()
    }
}

/// The registry side of the test: state, head, validator keys.
struct Chain {
    genesis: Genesis,
    state: State,
    head: Header,
    validators: Vec<SoftwareKey>,
    gov: Vec<Actor>,
}

/// A finalization of `header` signed in `epoch` by the validators at `who` (sorted-set indexes).
fn certify(keys: &[SoftwareKey], epoch: u64, header: &Header, who: &[usize]) -> Vec<u8> {
    let set = ValidatorSet::new(
        CHAIN.as_bytes(),
        keys.iter().map(|k| k.public_key().clone()).collect(),
    )
    .unwrap();
    let signers: Vec<&SoftwareKey> = who
        .iter()
        .map(|&i| {
            keys.iter()
                .find(|k| k.public_key() == &set.keys()[i])
                .unwrap()
        })
        .collect();
    let proposal = Proposal {
        epoch,
        view: header.height + 1000,
        parent_view: header.height + 999,
        payload: header.digest(),
    };
    set.certify(proposal, &signers).unwrap().encode()
}

impl Chain {
    fn new(epoch_length: u64) -> Self {
        let validators: Vec<_> = (0..4).map(|i| key(&format!("validator/{i}"))).collect();
        let gov: Vec<Actor> = (0..2).map(|i| Actor::new(&format!("gov/{i}"))).collect();
        let genesis = Genesis {
            chain_id: CHAIN.into(),
            time: T0,
            validators: validators.iter().map(|k| k.public_key().clone()).collect(),
            governance: gov
                .iter()
                .map(|g| {
                    (
                        g.keys[0].public_key().clone(),
                        KeyCommitment::to(g.keys[1].public_key()),
                    )
                })
                .collect(),
            governance_threshold: 2,
            epoch_length,
        };
        let state = State::genesis(&genesis).unwrap();
        let head = Header::genesis(&state, T0);
        Self {
            genesis,
            state,
            head,
            validators,
            gov,
        }
    }

    fn block(&mut self, txs: Vec<SignedTx>) -> Header {
        let time = self.head.time + 1;
        let block::Built {
            state,
            block: blk,
            refused,
            ..
        } = block::build(&self.state, &self.head, txs, time);
        assert!(refused.is_empty(), "{refused:?}");
        self.state = state;
        self.head = blk.header.clone();
        blk.header
    }

    fn cert(&self, header: &Header) -> Vec<u8> {
        certify(&self.validators, header.epoch, header, &[0, 1, 3])
    }

    fn full_bundle(&self) -> SyncBundle {
        let genesis = State::genesis(&self.genesis).unwrap();
        SyncBundle::build(
            self.head.clone(),
            self.cert(&self.head),
            vec![],
            None,
            genesis.kiosk_tree(),
            self.state.kiosk_tree(),
        )
    }

    fn delta_bundle(&self, since: &Header, since_state: &State) -> SyncBundle {
        SyncBundle::build(
            self.head.clone(),
            self.cert(&self.head),
            vec![],
            Some(since.height),
            since_state.kiosk_tree(),
            self.state.kiosk_tree(),
        )
    }
}

/// An issuer with a list, and a presentation of a credential at index 42 of that list.
struct Setup {
    chain: Chain,
    issuer: Actor,
    response: Vec<u8>,
    transcript: SessionTranscript,
}

fn setup() -> Setup {
    setup_with(civis_core::chain::state::DEFAULT_EPOCH_LENGTH)
}

fn setup_with(epoch_length: u64) -> Setup {
    let mut chain = Chain::new(epoch_length);
    let mut issuer = Actor::new("civil-registry");
    let accredit = Op::AccreditIssuer {
        issuer: issuer.did.clone(),
        doc_types: vec![citizen::DOC_TYPE.into()],
        until: T0 + 365 * 86_400,
    };
    let gov_tx = chain.gov[0].tx(accredit);
    let create = issuer.create();
    chain.block(vec![create, gov_tx]);
    let list = issuer.tx(Op::CreateStatusList {
        list: "batch-1".into(),
        bits: 2,
        size: 10_000,
    });
    chain.block(vec![list]);

    let card = key("card");
    let ns = citizen::CitizenRecord {
        family_name: "Jansen".into(),
        given_name: "Mira".into(),
        birth_date: "1990-04-12".into(),
        resident_city: "Civitas".into(),
        resident_district: "Harbour".into(),
        document_number: "CIV-1".into(),
        issue_date: "2026-01-01".into(),
        expiry_date: "2031-01-01".into(),
        issuing_authority: "Civitas".into(),
        portrait: None,
    }
    .to_name_spaces("2026-01-01")
    .unwrap();
    let params = IssueParams {
        doc_type: citizen::DOC_TYPE,
        name_spaces: &ns,
        device_key: card.public_key(),
        validity: ValidityInfo {
            signed: TDate::new(Timestamp(T0)),
            valid_from: TDate::new(Timestamp(T0)),
            valid_until: TDate::new(Timestamp(T0 + 86_400 * 365)),
            expected_update: None,
        },
        status: Some(StatusRef {
            idx: 42,
            uri: status_uri(&issuer.did, "batch-1"),
        }),
        key_authorizations: None,
    };
    let issued = mdoc::issue(
        &params,
        &issuer.keys[0],
        &IssuerKeyId::Kid(issuer.did.key_url(1).to_string()),
        &mut rand_core::OsRng,
    )
    .unwrap();
    let transcript = SessionTranscript::new(
        None,
        None,
        ciborium::Value::Array(vec![ciborium::Value::Bytes(vec![1]), ciborium::Value::Null]),
    );
    let device_signed = mdoc::sign_device(
        &card,
        &transcript,
        citizen::DOC_TYPE,
        DeviceNameSpaces::default(),
    )
    .unwrap();
    let response = DeviceResponse {
        version: "1.0".into(),
        documents: Some(vec![Document {
            doc_type: citizen::DOC_TYPE.into(),
            issuer_signed: mdoc::select(&issued, |_, e| e == "age_over_18"),
            device_signed,
            errors: None,
        }]),
        document_errors: None,
        status: 0,
    }
    .to_vec();
    Setup {
        chain,
        issuer,
        response,
        transcript,
    }
}

fn verdict(s: &Setup, kiosk: &KioskSnapshot) -> Verdict {
    let p = Presentation {
        device_response: &s.response,
        transcript: &s.transcript,
        reader_key: None,
        request: None,
    };
    verify_presentation(
        &p,
        &kiosk.trust_snapshot(),
        &Policy::default(),
        Timestamp(kiosk.header().time + 60),
    )
}

#[test]
fn cold_sync_then_delta_drive_the_verdicts() {
    let mut s = setup();
    let mut kiosk = KioskSnapshot::from_genesis(&s.chain.genesis).unwrap();
    // Before any sync the kiosk knows no issuer: the credential is not accepted.
    assert!(!matches!(verdict(&s, &kiosk), Verdict::Accept(_)));
    kiosk.apply(&s.chain.full_bundle()).unwrap();
    assert_eq!(kiosk.header(), &s.chain.head);
    assert!(
        matches!(verdict(&s, &kiosk), Verdict::Accept(_)),
        "{:?}",
        verdict(&s, &kiosk)
    );

    // The issuer revokes entry 42; many blocks pass; one delta bundle carries it.
    let (base_header, base_state) = (s.chain.head.clone(), s.chain.state.clone());
    let revoke = s.issuer.tx(Op::UpdateStatus {
        list: "batch-1".into(),
        delta: StatusDelta::from_changes(vec![(42, 1)]),
    });
    s.chain.block(vec![revoke]);
    for _ in 0..50 {
        s.chain.block(vec![]);
    }
    let delta = s.chain.delta_bundle(&base_header, &base_state);
    assert!(delta.entries.is_empty(), "no entry but the status change");
    let status = delta.status.to_deltas();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].1.changes(), &[(42, 1)]);
    let wire = SyncBundle::decode(&delta.encode()).unwrap();
    // Seeds for the fuzzers (scripts/fuzz.sh), only when asked for.
    if let Some(dir) = std::env::var_os("CIVIS_FUZZ_SEEDS") {
        let dir = std::path::PathBuf::from(dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("sync_bundle.delta"), delta.encode()).unwrap();
        std::fs::write(dir.join("sync_bundle.full"), s.chain.full_bundle().encode()).unwrap();
        std::fs::write(
            dir.join("registry_tx.revoke"),
            s.issuer.tx(Op::Deactivate).bytes(),
        )
        .unwrap();
    }
    kiosk.apply(&wire).unwrap();
    assert_eq!(verdict(&s, &kiosk), Verdict::Reject(RejectReason::Revoked));
}

#[test]
fn delta_size_is_constant_across_10000_empty_blocks() {
    let mut s = setup();
    let (base_header, base_state) = (s.chain.head.clone(), s.chain.state.clone());
    s.chain.block(vec![]);
    let one = s
        .chain
        .delta_bundle(&base_header, &base_state)
        .encode()
        .len();
    for _ in 0..9_999 {
        s.chain.block(vec![]);
    }
    let many = s.chain.delta_bundle(&base_header, &base_state);
    assert!(many.entries.is_empty() && many.status.is_empty());
    let many = many.encode().len();
    // Only the height and view varints grow (a few bytes), never with the number of blocks.
    assert!(
        many <= one + 8,
        "one block: {one} bytes, 10,000 blocks: {many} bytes"
    );
    let mut kiosk = KioskSnapshot::from_genesis(&s.chain.genesis).unwrap();
    kiosk.apply(&s.chain.full_bundle()).unwrap();
    assert_eq!(kiosk.header().height, 10_002);
}

#[test]
fn certificate_refusals_leave_the_kiosk_unchanged() {
    let s = setup();
    let good = s.chain.full_bundle();
    let fresh = || KioskSnapshot::from_genesis(&s.chain.genesis).unwrap();
    let check = |b: &SyncBundle| {
        let mut k = fresh();
        let before = k.header().clone();
        let err = k.apply(b).unwrap_err();
        assert_eq!(k.header(), &before, "refused bundle changed the kiosk");
        err
    };
    // Forged signature.
    let mut forged = good.clone();
    let n = forged.finalization.len();
    forged.finalization[n - 5] ^= 1;
    assert!(matches!(check(&forged), SyncError::Certificate(_)));
    // Below quorum.
    let mut few = good.clone();
    few.finalization = certify(&s.chain.validators, 0, &good.header, &[0, 2]);
    assert!(matches!(check(&few), SyncError::Certificate(_)));
    // A signer counted twice (encoded with three signatures over a two-bit bitmap).
    let mut twice = good.clone();
    let mut fin = Finalization::decode(&good.finalization).unwrap();
    fin.signers = vec![0, 0, 1];
    twice.finalization = fin.encode();
    assert!(matches!(check(&twice), SyncError::Certificate(_)));
    // Signers outside the set.
    let outsiders: Vec<_> = (10..14).map(|i| key(&format!("validator/{i}"))).collect();
    let mut outside = good.clone();
    outside.finalization = certify(&outsiders, 0, &good.header, &[0, 1, 2]);
    assert!(matches!(check(&outside), SyncError::Certificate(_)));
    // A valid certificate of another block.
    let mut other = good.clone();
    other.finalization = certify(
        &s.chain.validators,
        0,
        &Header {
            height: 99,
            ..good.header.clone()
        },
        &[0, 1, 2],
    );
    assert_eq!(check(&other), SyncError::CertificateMismatch);
    // Sub-root mismatch: one entry altered, or a status change slipped in.
    let mut tampered = good.clone();
    let e = tampered
        .entries
        .iter_mut()
        .find(|e| e.table == Table::Issuer)
        .unwrap();
    let last = e.value.len() - 1;
    e.value[last] ^= 1;
    assert_eq!(check(&tampered), SyncError::SubRootMismatch);
    let mut revoked = good.clone();
    revoked.status = StatusChanges::from_deltas(&[(0, StatusDelta::from_changes(vec![(42, 1)]))]);
    assert_eq!(check(&revoked), SyncError::SubRootMismatch);
    let mut unknown = good.clone();
    unknown.status = StatusChanges::from_deltas(&[(77, StatusDelta::from_changes(vec![(1, 1)]))]);
    assert!(matches!(check(&unknown), SyncError::Malformed(_)));
    let mut outside = good.clone();
    outside.status =
        StatusChanges::from_deltas(&[(0, StatusDelta::from_changes(vec![(10_000, 1)]))]);
    assert!(matches!(check(&outside), SyncError::Malformed(_)));
    // Forged list metadata asking the kiosk to synthesize a huge list before the root check.
    let mut huge = good.clone();
    let info = civis_core::chain::state::ListInfo {
        id: 9_999,
        bits: civis_core::status::Bits::new(8).unwrap(),
        size: civis_core::chain::state::MAX_STATUS_ENTRIES + 1,
    };
    huge.entries.push(civis_core::chain::state::Entry {
        table: Table::StatusMeta,
        key: b"forged".to_vec(),
        value: info.encode(),
    });
    assert!(matches!(check(&huge), SyncError::Malformed(_)));
    // A missing entry.
    let mut short = good.clone();
    short.entries.pop();
    assert_eq!(check(&short), SyncError::SubRootMismatch);
    // Malformed and truncated bytes.
    let bytes = good.encode();
    assert!(matches!(
        SyncBundle::decode(&bytes[..bytes.len() / 2]),
        Err(SyncError::Malformed(_))
    ));
}

/// Put `group` (`[table, [[key, value]...]]`) into an encoded bundle's entries.
fn with_entry_group(bundle: &SyncBundle, group: ciborium::Value) -> Vec<u8> {
    let mut v: ciborium::Value = ciborium::from_reader(bundle.encode().as_slice()).unwrap();
    let entries = v
        .as_map_mut()
        .unwrap()
        .iter_mut()
        .find(|(k, _)| k.as_text() == Some("entries"))
        .unwrap();
    entries.1.as_array_mut().unwrap().push(group);
    let mut out = Vec::new();
    ciborium::into_writer(&v, &mut out).unwrap();
    out
}

/// Review item 1. A status-list chunk's path used to be SHA-256(tag ‖ 00 ‖ uri ‖ 00 ‖ n), the
/// same as tag `status-chunk\0<uri>` with key n: a lying registry re-sent certified chunk 0 under
/// that other split in a delta, the sub-root still matched, the kiosk dropped chunk 0 and every
/// index of the list shifted by 4,096 — a revoked credential read VALID. Every variant of the
/// attack is refused now, and the kiosk keeps reading the revocation.
#[test]
fn a_lying_registry_cannot_refile_a_status_chunk() {
    let mut s = setup();
    let mut kiosk = KioskSnapshot::from_genesis(&s.chain.genesis).unwrap();
    kiosk.apply(&s.chain.full_bundle()).unwrap();
    let (base_header, base_state) = (s.chain.head.clone(), s.chain.state.clone());
    let revoke = s.issuer.tx(Op::UpdateStatus {
        list: "batch-1".into(),
        delta: StatusDelta::from_changes(vec![(42, 1)]),
    });
    s.chain.block(vec![revoke]);
    let delta = s.chain.delta_bundle(&base_header, &base_state);
    let uri = status_uri(&s.issuer.did, "batch-1");
    let chunk0 = s
        .chain
        .state
        .kiosk_tree()
        .get(Table::StatusChunk, &chunk_key(&uri, 0))
        .unwrap()
        .to_vec();
    let bytes = ciborium::Value::Bytes;
    // The old split, as bytes: a table that is no code at all.
    let old_split = ciborium::Value::Array(vec![
        bytes([b"status-chunk\0".as_slice(), uri.as_bytes()].concat()),
        ciborium::Value::Array(vec![ciborium::Value::Array(vec![
            bytes(0u64.to_be_bytes().to_vec()),
            bytes(chunk0.clone()),
        ])]),
    ]);
    assert!(matches!(
        SyncBundle::decode(&with_entry_group(&delta, old_split)),
        Err(SyncError::Malformed(_))
    ));
    // An unknown table code, and a public-tree table, are refused at decode.
    for code in [99u8, Table::Did.code()] {
        let group = ciborium::Value::Array(vec![
            ciborium::Value::Integer(code.into()),
            ciborium::Value::Array(vec![ciborium::Value::Array(vec![
                bytes(chunk_key(&uri, 0)),
                bytes(chunk0.clone()),
            ])]),
        ]);
        assert!(
            matches!(
                SyncBundle::decode(&with_entry_group(&delta, group)),
                Err(SyncError::Malformed(_))
            ),
            "table {code} accepted"
        );
    }
    // Chunk 0 re-filed under another kiosk table: another path, so the root no longer matches.
    let mut refiled = delta.clone();
    refiled.entries.push(civis_core::chain::state::Entry {
        table: Table::StatusMeta,
        key: chunk_key(&uri, 0),
        value: chunk0,
    });
    let before = kiosk.header().clone();
    assert_eq!(kiosk.apply(&refiled), Err(SyncError::SubRootMismatch));
    assert_eq!(kiosk.header(), &before);
    // The honest delta still applies, and the credential at index 42 reads revoked.
    kiosk.apply(&delta).unwrap();
    assert_eq!(verdict(&s, &kiosk), Verdict::Reject(RejectReason::Revoked));
}

/// Defense in depth against a certified lie (a faulty validator quorum): a delta that adds a
/// chunk past a list's size, or re-sizes a known list, reproduces its (certified) root and is
/// still refused, because the lists it touches are checked whole.
#[test]
fn a_certified_delta_that_breaks_a_list_is_refused() {
    let mut s = setup();
    let mut kiosk = KioskSnapshot::from_genesis(&s.chain.genesis).unwrap();
    kiosk.apply(&s.chain.full_bundle()).unwrap();
    let (base_header, base_state) = (s.chain.head.clone(), s.chain.state.clone());
    s.chain.block(vec![]);
    let uri = status_uri(&s.issuer.did, "batch-1");
    let lie = |extra: civis_core::chain::state::Entry| {
        let mut bundle = s.chain.delta_bundle(&base_header, &base_state);
        let mut entries: Vec<_> = s.chain.state.kiosk_tree().entries().cloned().collect();
        entries.retain(|e| e.path() != extra.path());
        entries.push(extra.clone());
        bundle.header.kiosk_root = Tree::from_entries(entries).root();
        bundle.finalization = s.chain.cert(&bundle.header);
        bundle.entries.push(extra);
        bundle
    };
    let past_the_end = lie(civis_core::chain::state::Entry {
        table: Table::StatusChunk,
        key: chunk_key(&uri, 99),
        value: vec![0; 16],
    });
    let mut k = kiosk.clone();
    assert!(matches!(k.apply(&past_the_end), Err(SyncError::Lists(_))));
    assert_eq!(k.header(), kiosk.header());
    let info = civis_core::chain::state::ListInfo {
        id: 0,
        bits: civis_core::status::Bits::new(2).unwrap(),
        size: 100,
    };
    let resized = lie(civis_core::chain::state::Entry {
        table: Table::StatusMeta,
        key: uri.as_bytes().to_vec(),
        value: info.encode(),
    });
    assert!(matches!(k.apply(&resized), Err(SyncError::Lists(_))));
    // The honest delta still applies.
    k.apply(&s.chain.delta_bundle(&base_header, &base_state))
        .unwrap();
}

/// A root proves each entry is the chain's, not that the entries add up: a tampered snapshot
/// file without chunk 0 of a list, its header's sub-root recomputed to match, is refused on
/// load because the list's chunks are not 0..n-1.
#[test]
fn a_snapshot_missing_a_chunk_is_refused_even_with_a_matching_root() {
    let s = setup();
    let mut kiosk = KioskSnapshot::from_genesis(&s.chain.genesis).unwrap();
    kiosk.apply(&s.chain.full_bundle()).unwrap();
    let uri = status_uri(&s.issuer.did, "batch-1");
    let missing = Table::StatusChunk.path(&chunk_key(&uri, 0));
    let kept: Vec<_> = kiosk
        .tree()
        .entries()
        .filter(|e| e.path() != missing)
        .cloned()
        .collect();
    let root = Tree::from_entries(kept).root();
    // Rewrite the file: same everything, the chunk gone, the header's kiosk root recomputed.
    let mut v: ciborium::Value = ciborium::from_reader(kiosk.encode().as_slice()).unwrap();
    for (k, val) in v.as_map_mut().unwrap().iter_mut() {
        match k.as_text() {
            Some("header") => {
                let h = Header {
                    kiosk_root: root,
                    ..kiosk.header().clone()
                };
                *val = h.to_value();
            }
            Some("entries") => {
                let groups = val.as_array_mut().unwrap();
                for g in groups.iter_mut() {
                    let items = g.as_array_mut().unwrap();
                    if items[0] == ciborium::Value::Integer(Table::StatusChunk.code().into()) {
                        let kvs = items[1].as_array_mut().unwrap();
                        kvs.retain(|kv| {
                            kv.as_array().unwrap()[0].as_bytes().unwrap() != &chunk_key(&uri, 0)
                        });
                    }
                }
            }
            _ => {}
        }
    }
    let mut file = Vec::new();
    ciborium::into_writer(&v, &mut file).unwrap();
    assert!(matches!(
        KioskSnapshot::decode(&s.chain.genesis, &file),
        Err(SyncError::Lists(_))
    ));
    // The untampered file loads.
    KioskSnapshot::decode(&s.chain.genesis, &kiosk.encode()).unwrap();
}

#[test]
fn rollback_equivocation_base_and_foreign_genesis() {
    let mut s = setup();
    let mut kiosk = KioskSnapshot::from_genesis(&s.chain.genesis).unwrap();
    let early = s.chain.full_bundle();
    let (base, base_state) = (s.chain.head.clone(), s.chain.state.clone());
    s.chain.block(vec![]);
    let late = s.chain.full_bundle();
    kiosk.apply(&late).unwrap();
    assert_eq!(
        kiosk.apply(&early).unwrap_err(),
        SyncError::Rollback {
            have: late.header.height,
            got: early.header.height
        }
    );
    // Two certified headers at one height: a fork the validators signed. Evidence is kept.
    let mut fork = late.clone();
    fork.header.time += 5;
    fork.finalization = s.chain.cert(&fork.header);
    assert_eq!(
        kiosk.apply(&fork).unwrap_err(),
        SyncError::Equivocation(late.header.height)
    );
    assert_eq!(kiosk.evidence().len(), 1);
    assert_eq!(kiosk.header(), &late.header);
    // A delta relative to a height the kiosk is not at.
    s.chain.block(vec![]);
    let wrong_base = s.chain.delta_bundle(&base, &base_state);
    assert!(matches!(
        kiosk.apply(&wrong_base).unwrap_err(),
        SyncError::WrongBase { .. }
    ));
    // Another genesis: another chain id, or the same id with other validators.
    let mut other = s.chain.genesis.clone();
    other.chain_id = "elsewhere".into();
    let mut stranger = KioskSnapshot::from_genesis(&other).unwrap();
    assert!(matches!(
        stranger.apply(&late).unwrap_err(),
        SyncError::ForeignChain(_)
    ));
    let mut other = s.chain.genesis.clone();
    other.validators = (20..24)
        .map(|i| key(&format!("validator/{i}")).public_key().clone())
        .collect();
    let mut stranger = KioskSnapshot::from_genesis(&other).unwrap();
    assert!(matches!(
        stranger.apply(&late).unwrap_err(),
        SyncError::Certificate(_)
    ));
}

#[test]
fn kiosk_follows_a_validator_set_change_certified_by_the_old_set() {
    const LENGTH: u64 = 8;
    let mut s = setup_with(LENGTH);
    let mut kiosk = KioskSnapshot::from_genesis(&s.chain.genesis).unwrap();
    kiosk.apply(&s.chain.full_bundle()).unwrap();
    let (base, base_state) = (s.chain.head.clone(), s.chain.state.clone());
    let new_keys: Vec<SoftwareKey> = (30..34).map(|i| key(&format!("validator/{i}"))).collect();
    let new_set: Vec<EcPublicKey> = new_keys.iter().map(|k| k.public_key().clone()).collect();
    let bare = Op::SetValidators {
        validators: new_set.clone(),
        approvals: vec![],
    };
    let approval = tx::approve(
        &bare,
        CHAIN,
        0,
        s.chain.gov[1].did.key_url(1),
        &s.chain.gov[1].keys[0],
    )
    .unwrap();
    let change_tx = s.chain.gov[0].tx(Op::SetValidators {
        validators: new_set.clone(),
        approvals: vec![approval],
    });
    // Approved mid-epoch: the set changes only at the end of the epoch.
    let mid = s.chain.block(vec![change_tx]);
    assert_eq!(s.chain.state.set_epoch(), 0);
    assert_eq!(s.chain.state.pending_validators(), Some(new_set.clone()));
    while s.chain.head.height < LENGTH - 1 {
        s.chain.block(vec![]);
    }
    let boundary = s.chain.head.clone();
    let boundary_tree = s.chain.state.kiosk_tree().clone();
    assert_eq!(boundary.epoch, 0);
    assert_eq!(s.chain.state.set_epoch(), 1);
    assert_eq!(s.chain.state.pending_validators(), None);
    let change = EpochChange {
        finalization: certify(&s.chain.validators, 0, &boundary, &[0, 1, 2]),
        record: s
            .chain
            .state
            .kiosk_tree()
            .get(Table::Chain, b"validators")
            .unwrap()
            .to_vec(),
        proof: s
            .chain
            .state
            .kiosk_tree()
            .prove(Table::Chain, b"validators"),
        header: boundary.clone(),
    };
    // From now on the new set certifies.
    let old_keys = std::mem::replace(&mut s.chain.validators, new_keys.clone());
    // The newest certified block may be the boundary itself: the kiosk follows the change and
    // takes the boundary header, certified by the old set; syncing again before a newer block
    // is certified changes nothing.
    let at_boundary = SyncBundle::build(
        boundary.clone(),
        certify(&old_keys, 0, &boundary, &[0, 1, 2]),
        vec![change.clone()],
        Some(base.height),
        base_state.kiosk_tree(),
        &boundary_tree,
    );
    let mut k3 = kiosk.clone();
    k3.apply(&at_boundary).unwrap();
    assert_eq!((k3.epoch(), k3.header()), (1, &boundary));
    let again = SyncBundle::build(
        boundary.clone(),
        certify(&old_keys, 0, &boundary, &[0, 1, 2]),
        vec![],
        Some(boundary.height),
        &boundary_tree,
        &boundary_tree,
    );
    k3.apply(&again).unwrap();
    assert_eq!(k3.header(), &boundary);
    s.chain.block(vec![]);
    assert_eq!(s.chain.head.epoch, 1);
    let onward = SyncBundle::build(
        s.chain.head.clone(),
        s.chain.cert(&s.chain.head),
        vec![],
        Some(boundary.height),
        &boundary_tree,
        s.chain.state.kiosk_tree(),
    );
    k3.apply(&onward).unwrap();
    assert_eq!(k3.header(), &s.chain.head);
    let mut bundle = s.chain.delta_bundle(&base, &base_state);
    // Without the change the kiosk cannot check the new set's certificate, and keeps its state.
    let mut k = kiosk.clone();
    assert!(matches!(
        k.apply(&bundle).unwrap_err(),
        SyncError::Certificate(_)
    ));
    assert_eq!(k.header(), kiosk.header());
    bundle.epochs = vec![change.clone()];
    let mut k2 = kiosk.clone();
    k2.apply(&bundle).unwrap();
    assert_eq!(k2.epoch(), 1);
    assert_eq!(
        k2.validators().keys(),
        ValidatorSet::new(CHAIN.as_bytes(), new_set.clone())
            .unwrap()
            .keys()
    );
    // The stored form round-trips the change.
    assert_eq!(EpochChange::decode(&change.encode()).unwrap(), change);
    // A forged change (record not in the boundary header's tree) is refused.
    let mut forged = change.clone();
    let last = forged.record.len() - 1;
    forged.record[last] ^= 1;
    bundle.epochs = vec![forged];
    assert!(matches!(
        kiosk.clone().apply(&bundle).unwrap_err(),
        SyncError::EpochChange(_)
    ));
    // A change certified on a block that does not end its epoch is refused.
    let mut early = change.clone();
    early.finalization = certify(&old_keys, 0, &mid, &[0, 1, 2]);
    early.header = mid.clone();
    bundle.epochs = vec![early];
    assert!(matches!(
        kiosk.clone().apply(&bundle).unwrap_err(),
        SyncError::EpochChange(_)
    ));
    // A change signed by the new set itself (not the old) is refused.
    let mut self_signed = change.clone();
    self_signed.finalization = certify(&new_keys, 0, &boundary, &[0, 1, 2]);
    bundle.epochs = vec![self_signed];
    assert!(matches!(
        kiosk.clone().apply(&bundle).unwrap_err(),
        SyncError::Certificate(_)
    ));
    // The old set can no longer certify epoch-1 headers for a kiosk that moved on.
    let mut old_signed = s.chain.full_bundle();
    old_signed.finalization = certify(&old_keys, 1, &old_signed.header, &[0, 1, 2]);
    assert!(matches!(
        k2.apply(&old_signed).unwrap_err(),
        SyncError::Certificate(_)
    ));
    // The certificate's round must carry the header's epoch.
    let (prev, prev_state) = (s.chain.head.clone(), s.chain.state.clone());
    s.chain.block(vec![]);
    let mut wrong_round = s.chain.delta_bundle(&prev, &prev_state);
    wrong_round.finalization = certify(&new_keys, 0, &wrong_round.header, &[0, 1, 2]);
    assert!(matches!(
        k2.clone().apply(&wrong_round).unwrap_err(),
        SyncError::Certificate(_)
    ));
    // A bundle that leaves the change out while the old set still signs the new state is
    // refused: the certified state names a different set.
    let sneaky = SyncBundle::build(
        boundary.clone(),
        certify(&old_keys, 0, &boundary, &[0, 1, 2]),
        vec![],
        Some(base.height),
        base_state.kiosk_tree(),
        &boundary_tree,
    );
    let mut unchanged = kiosk.clone();
    assert!(matches!(
        unchanged.apply(&sneaky).unwrap_err(),
        SyncError::EpochChange(_)
    ));
    assert_eq!(unchanged.header(), kiosk.header());
}
