//! Hardening of issue #10 that lives in core: the CBOR item budget against a lying registry's
//! memory bomb, transaction ids that cannot be changed by re-encoding the signature, and COSE
//! `crit`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

use civis_core::cbor::{self, Limits};
use civis_core::chain::light::{MAX_BUNDLE_LEN, SyncBundle, SyncError};
use civis_core::chain::tx::{Op, SignedTx, Tx};
use civis_core::cose::{self, Domain};
use civis_core::crypto::SoftwareKey;
use civis_core::did::{Did, KeyCommitment};
use coset::{CborSerializable, HeaderBuilder, RegisteredLabelWithPrivate, iana};

/// The tests that read the process's peak memory run one at a time.
static MEASURING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Peak resident memory of this process, in KiB.
fn peak_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A lying registry sends a 64 MiB bundle that is one array of 64 Mi one-byte items. Every
/// item is in the input, so the length checks pass; decoded, each would cost tens of bytes
/// (2.2 GB measured before the item budget). The budget refuses it before allocating.
#[test]
fn a_bundle_of_one_byte_items_is_refused_without_the_memory() {
    let _one_at_a_time = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let n: u32 = (MAX_BUNDLE_LEN - 16) as u32;
    let mut bomb = vec![0x9a];
    bomb.extend_from_slice(&n.to_be_bytes());
    bomb.resize(5 + n as usize, 0x00);
    let before = peak_kib();
    let t = std::time::Instant::now();
    let err = cbor::decode("sync bundle", &bomb, Limits::new(MAX_BUNDLE_LEN)).unwrap_err();
    assert!(
        matches!(err, civis_core::Error::TooManyItems { .. }),
        "{err}"
    );
    assert!(matches!(
        SyncBundle::decode(&bomb),
        Err(SyncError::Malformed(_))
    ));
    let grew_mib = peak_kib().saturating_sub(before) / 1024;
    assert!(grew_mib < 64, "decoding grew the peak by {grew_mib} MiB");
    // Not a timing test: a refusal before allocation is instant; this only catches a decoder
    // that builds the items first.
    assert!(t.elapsed().as_secs() < 30);
    // Nested small arrays count too: 600k items in two levels.
    let mut nested = vec![0x99];
    nested.extend_from_slice(&600u16.to_be_bytes());
    for _ in 0..600 {
        nested.extend_from_slice(&[0x99, 0x03, 0xe8]);
        nested.resize(nested.len() + 1000, 0);
    }
    let budget = Limits::new(MAX_BUNDLE_LEN).with_items(100_000);
    assert!(matches!(
        cbor::decode("nested", &nested, budget),
        Err(civis_core::Error::TooManyItems { .. })
    ));
    assert!(cbor::decode("nested", &nested, Limits::new(MAX_BUNDLE_LEN)).is_ok());
}

fn create_did_tx() -> (SignedTx, SoftwareKey) {
    let key = SoftwareKey::from_scalar(&[7; 32]).unwrap();
    let next = KeyCommitment::to(SoftwareKey::from_scalar(&[8; 32]).unwrap().public_key());
    let did = Did::from_inception(key.public_key(), &next);
    let tx = SignedTx::sign(
        Tx {
            chain: "c".into(),
            seq: 0,
            op: Op::CreateDid {
                key: key.public_key().clone(),
                next,
            },
        },
        did.key_url(1),
        &key,
    )
    .unwrap();
    (tx, key)
}

/// ECDSA malleability: `(r, n − s)` verifies as well as `(r, s)`, so anyone relaying a
/// transaction could give it a new id. Chain transactions must be low-S; the high-S twin (a
/// valid signature) is refused at decode, as is anything in the unsigned unprotected header.
#[test]
fn a_transaction_has_one_encoding_and_one_id() {
    let (tx, key) = create_did_tx();
    let mut sign1 = coset::CoseSign1::from_slice(tx.bytes()).unwrap();
    assert!(civis_core::crypto::is_low_s(&sign1.signature));
    let sig = p256::ecdsa::Signature::from_slice(&sign1.signature).unwrap();
    let (r, s) = sig.split_scalars();
    let high = p256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
    sign1.signature = high.to_bytes().to_vec();
    // The twin is a valid signature ...
    cose::verify_sign1(&sign1, key.public_key(), Domain::RegistryTransaction, None).unwrap();
    // ... but not an acceptable transaction.
    let twin = sign1.clone().to_vec().unwrap();
    assert!(SignedTx::decode(&twin).is_err());
    // Unsigned extras in the unprotected header would change the bytes too.
    let mut extra = coset::CoseSign1::from_slice(tx.bytes()).unwrap();
    extra.unprotected = HeaderBuilder::new().key_id(b"x".to_vec()).build();
    assert!(SignedTx::decode(&extra.to_vec().unwrap()).is_err());
    // A signer whose signatures come out high-S (an HSM, a card) still gets a valid tx: it is
    // normalized when signed.
    struct HighS(SoftwareKey);
    impl cose::Signer for HighS {
        fn public_key(&self) -> civis_core::crypto::EcPublicKey {
            self.0.public_key().clone()
        }
        fn sign(&self, tbs: &[u8]) -> civis_core::Result<Vec<u8>> {
            let sig = p256::ecdsa::Signature::from_slice(&self.0.sign_es256(tbs)).unwrap();
            let (r, s) = sig.split_scalars();
            let s = if civis_core::crypto::is_low_s(&sig.to_bytes()) {
                -*s
            } else {
                *s
            };
            Ok(p256::ecdsa::Signature::from_scalars(r, s)
                .unwrap()
                .to_bytes()
                .to_vec())
        }
    }
    let (plain, _) = create_did_tx();
    let signed = SignedTx::sign(plain.tx.clone(), plain.signer.clone(), &HighS(key)).unwrap();
    let back = SignedTx::decode(signed.bytes()).unwrap();
    assert_eq!(back.tx, plain.tx);
}

fn signed_with_crit(
    crit: Option<RegisteredLabelWithPrivate<iana::HeaderParameter>>,
) -> coset::CoseSign1 {
    let key = SoftwareKey::from_scalar(&[9; 32]).unwrap();
    let mut protected = HeaderBuilder::new();
    if let Some(c) = crit {
        protected = protected.add_critical_label(c);
    }
    cose::sign1(
        &key,
        Domain::KioskAccreditation,
        protected,
        coset::Header::default(),
        Some(b"payload".to_vec()),
        None,
    )
    .unwrap()
}

/// RFC 9052 §3.1: a critical header parameter the recipient does not understand makes the
/// message unacceptable, even with a valid signature.
#[test]
fn crit_is_enforced() {
    let key = SoftwareKey::from_scalar(&[9; 32]).unwrap();
    let verify = |s: &coset::CoseSign1| {
        cose::verify_sign1(s, key.public_key(), Domain::KioskAccreditation, None)
    };
    verify(&signed_with_crit(None)).unwrap();
    // x5chain is understood.
    verify(&signed_with_crit(Some(
        RegisteredLabelWithPrivate::Assigned(iana::HeaderParameter::X5Chain),
    )))
    .unwrap();
    // An unknown private parameter is not.
    let unknown = signed_with_crit(Some(RegisteredLabelWithPrivate::PrivateUse(-65_537)));
    assert!(matches!(
        verify(&unknown),
        Err(civis_core::Error::Unsupported(m)) if m.contains("critical")
    ));
    // RFC 9052's own parameters may not be marked critical.
    let own = signed_with_crit(Some(RegisteredLabelWithPrivate::Assigned(
        iana::HeaderParameter::Kid,
    )));
    assert!(verify(&own).is_err());
    // crit only in the unprotected header (unsigned) is refused.
    let mut loose = signed_with_crit(None);
    loose.unprotected.crit = vec![RegisteredLabelWithPrivate::PrivateUse(-65_537)];
    assert!(verify(&loose).is_err());
}

/// A lying registry's bundle of tens of millions of status changes (two bytes each on the wire)
/// made a kiosk hold sixteen bytes per change once decoded (631 MB for a 62 MB bundle). The
/// changes now stay in their wire form and are applied as they are read.
#[test]
fn millions_of_status_changes_cost_their_wire_size() {
    let _one_at_a_time = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    use civis_core::chain::light::StatusChanges;
    let n: u64 = 15_000_000;
    let mut raw = vec![0x00]; // list id 0
    let mut count = Vec::new();
    let mut c = n;
    loop {
        let b = (c & 0x7f) as u8;
        c >>= 7;
        if c == 0 {
            count.push(b);
            break;
        }
        count.push(b | 0x80);
    }
    raw.extend_from_slice(&count);
    raw.reserve(2 * n as usize);
    raw.push(0x00); // first index 0
    raw.push(0x01);
    for _ in 1..n {
        raw.extend_from_slice(&[0x01, 0x01]); // next index, value 1
    }
    let before = peak_kib();
    let changes = StatusChanges::decode(&raw).unwrap();
    assert_eq!(changes.count(), n as usize);
    let grew_mib = peak_kib().saturating_sub(before) / 1024;
    // The copy of the 30 MB wire form, not 240 MB of decoded pairs.
    assert!(grew_mib < 100, "decoding grew the peak by {grew_mib} MiB");
    let (id, mut first) = changes.lists().next().unwrap();
    assert_eq!(
        (id, first.next(), first.next()),
        (0, Some((0, 1)), Some((1, 1)))
    );
}
