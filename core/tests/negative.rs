//! Adversarial inputs: every tampering is refused with the right reason, and the engine's
//! three-valued verdicts hold under stale state.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

#[path = "common/citizen.rs"]
mod citizen;
mod common;

use std::collections::BTreeMap;

use ciborium::Value;
use citizen::{Fixture, fixture, now};
use civis_core::cbor::{CborForm, Tagged};
use civis_core::crypto::SoftwareKey;
use civis_core::mdoc::{
    self, DeviceNameSpaces, DeviceResponse, IssuerSignedItem, TrustAnchor, VerifyContext,
};
use civis_core::status::Status;
use civis_core::verify::{
    Accreditation, Policy, Presentation, Refusal, RejectReason, TrustSnapshot, UndeterminedReason,
    Verdict, verify_presentation,
};

fn anchors(f: &Fixture) -> Vec<TrustAnchor> {
    f.anchors()
}

fn check(f: &Fixture, resp: &DeviceResponse) -> Result<Vec<mdoc::VerifiedDocument>, Refusal> {
    check_bytes(f, &resp.to_vec())
}

fn check_bytes(f: &Fixture, bytes: &[u8]) -> Result<Vec<mdoc::VerifiedDocument>, Refusal> {
    let a = anchors(f);
    let ctx = VerifyContext {
        transcript: &f.transcript,
        anchors: &a,
        at: now(),
        reader_key: None,
        request: Some(&f.request),
    };
    mdoc::verify_bytes(bytes, &ctx)
}

fn reject(r: Result<Vec<mdoc::VerifiedDocument>, Refusal>) -> RejectReason {
    match r {
        Err(Refusal::Reject(r)) => r,
        other => panic!("expected a reject, got {other:?}"),
    }
}

#[test]
fn untouched_fixture_accepts() {
    let f = fixture();
    assert_eq!(check(&f, &f.response).unwrap().len(), 1);
}

#[test]
fn tampered_issuer_signature() {
    let f = fixture();
    let mut resp = f.response.clone();
    let doc = &mut resp.documents.as_mut().unwrap()[0];
    let mut cose = doc.issuer_signed.issuer_auth.cose.clone();
    cose.signature[10] ^= 0x01;
    doc.issuer_signed.issuer_auth = mdoc::signed::Sign1::new(cose);
    assert_eq!(reject(check(&f, &resp)), RejectReason::IssuerSignature);
}

#[test]
fn signed_by_the_wrong_issuer_key() {
    let f = fixture();
    let impostor = SoftwareKey::from_scalar(&[0x42; 32]).unwrap();
    let mut resp = f.response.clone();
    let doc = &mut resp.documents.as_mut().unwrap()[0];
    let mut cose = doc.issuer_signed.issuer_auth.cose.clone();
    cose.signature = impostor.sign_es256(&cose.tbs_data(b"")).to_vec();
    doc.issuer_signed.issuer_auth = mdoc::signed::Sign1::new(cose);
    assert_eq!(reject(check(&f, &resp)), RejectReason::IssuerSignature);
}

fn replace_item(f: &Fixture, edit: impl Fn(&mut IssuerSignedItem)) -> DeviceResponse {
    let mut resp = f.response.clone();
    let doc = &mut resp.documents.as_mut().unwrap()[0];
    let items = &mut doc.issuer_signed.name_spaces.as_mut().unwrap()[0].1;
    let mut item = items[0].inner().clone();
    edit(&mut item);
    items[0] = Tagged::new(item);
    resp
}

#[test]
fn tampered_item_value() {
    let f = fixture();
    let resp = replace_item(&f, |i| i.element_value = Value::Text("Mallory".into()));
    assert!(
        matches!(reject(check(&f, &resp)), RejectReason::DigestMismatch { element, .. } if element == "family_name")
    );
}

#[test]
fn item_not_in_mso() {
    let f = fixture();
    let resp = replace_item(&f, |i| i.digest_id = 999);
    assert!(matches!(
        reject(check(&f, &resp)),
        RejectReason::ElementNotInMso { .. }
    ));
}

#[test]
fn item_moved_to_another_digest_id() {
    let f = fixture();
    // Claim family_name under another element's digest id: the digest does not match.
    let other = f.response.documents.as_ref().unwrap()[0]
        .issuer_signed
        .name_spaces
        .as_ref()
        .unwrap()[0]
        .1[1]
        .inner()
        .digest_id;
    let resp = replace_item(&f, |i| i.digest_id = other);
    assert!(matches!(
        reject(check(&f, &resp)),
        RejectReason::DigestMismatch { .. } | RejectReason::Malformed(_)
    ));
}

#[test]
fn wrong_doc_type() {
    let f = fixture();
    let mut resp = f.response.clone();
    resp.documents.as_mut().unwrap()[0].doc_type = "org.iso.18013.5.1.mDL".into();
    assert!(matches!(
        reject(check(&f, &resp)),
        RejectReason::DocTypeMismatch { .. }
    ));
}

#[test]
fn expired_and_not_yet_valid() {
    let f = fixture();
    let a = anchors(&f);
    for (t, want_expired) in [
        ("2031-01-02T00:00:00Z", true),
        ("2025-12-31T23:59:59Z", false),
    ] {
        let ctx = VerifyContext {
            transcript: &f.transcript,
            anchors: &a,
            at: citizen::at(t),
            reader_key: None,
            request: None,
        };
        match mdoc::verify(&f.response, &ctx).unwrap_err() {
            Refusal::Reject(RejectReason::Expired(_)) => assert!(want_expired),
            Refusal::Reject(RejectReason::NotYetValid(_)) => assert!(!want_expired),
            other => panic!("{t}: {other:?}"),
        }
    }
}

#[test]
fn wrong_device_key_and_other_transcript() {
    let f = fixture();
    // A clone: the credential presented with another card's key.
    let clone_key = SoftwareKey::from_scalar(&[0x17; 32]).unwrap();
    let mut resp = f.response.clone();
    resp.documents.as_mut().unwrap()[0].device_signed = mdoc::sign_device(
        &clone_key,
        &f.transcript,
        mdoc::citizen::DOC_TYPE,
        DeviceNameSpaces::default(),
    )
    .unwrap();
    assert!(matches!(
        reject(check(&f, &resp)),
        RejectReason::DeviceAuthentication(_)
    ));
    // A replay into another session: the transcript differs.
    let other = mdoc::SessionTranscript::new(
        None,
        None,
        Value::Array(vec![Value::Bytes(vec![1]), Value::Null]),
    );
    let a = anchors(&f);
    let ctx = VerifyContext {
        transcript: &other,
        anchors: &a,
        at: now(),
        reader_key: None,
        request: None,
    };
    assert!(matches!(
        mdoc::verify(&f.response, &ctx).unwrap_err(),
        Refusal::Reject(RejectReason::DeviceAuthentication(_))
    ));
}

#[test]
fn element_not_requested() {
    let f = fixture();
    let mut resp = f.response.clone();
    resp.documents.as_mut().unwrap()[0].issuer_signed = mdoc::select(&f.issuer_signed, |_, _| true);
    assert!(
        matches!(reject(check(&f, &resp)), RejectReason::NotRequested { element, .. } if element == "birth_date" || element == "document_number" || element == "issuing_authority")
    );
}

#[test]
fn unknown_issuer() {
    let f = fixture();
    let ctx = VerifyContext {
        transcript: &f.transcript,
        anchors: &[],
        at: now(),
        reader_key: None,
        request: None,
    };
    assert_eq!(
        mdoc::verify(&f.response, &ctx).unwrap_err(),
        Refusal::Reject(RejectReason::UntrustedIssuer)
    );
}

#[test]
fn truncated_oversized_and_nested_cbor() {
    let f = fixture();
    let bytes = f.response.to_vec();
    for cut in [0, 1, 10, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            matches!(
                reject(check_bytes(&f, &bytes[..cut])),
                RejectReason::Malformed(_)
            ),
            "cut at {cut}"
        );
    }
    let mut trailing = bytes.clone();
    trailing.push(0);
    assert!(matches!(
        reject(check_bytes(&f, &trailing)),
        RejectReason::Malformed(_)
    ));
    let huge = vec![0x40; mdoc::response::MAX_DEVICE_RESPONSE_LEN + 1];
    assert!(
        matches!(reject(check_bytes(&f, &huge)), RejectReason::Malformed(m) if m.contains("exceeds the limit"))
    );
    let mut nested = vec![0x81; 10_000];
    nested.push(0x00);
    assert!(
        matches!(reject(check_bytes(&f, &nested)), RejectReason::Malformed(m) if m.contains("nested deeper"))
    );
    // A map claiming 2^32 entries in a few bytes.
    assert!(matches!(
        reject(check_bytes(&f, &[0xba, 0xff, 0xff, 0xff, 0xff, 0x00])),
        RejectReason::Malformed(_)
    ));
}

#[test]
fn every_single_byte_flip_is_refused_or_harmless() {
    // No byte of a presentation can change without the verdict noticing, and nothing panics.
    let f = fixture();
    let bytes = f.response.to_vec();
    let mut accepted_changes = 0;
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        if let Ok(docs) = check_bytes(&f, &b) {
            // Only an encoding detail (e.g. the response "status" integer 0→1 fails, so nothing) may pass.
            accepted_changes += 1;
            assert_eq!(docs.len(), 1);
            eprintln!(
                "accepted flip at {i}: {}",
                hex::encode(&bytes[i.saturating_sub(8)..(i + 8).min(bytes.len())])
            );
        }
    }
    assert_eq!(accepted_changes, 0, "a flipped bit was accepted");
}

fn snapshot(f: &Fixture, as_of: &str) -> TrustSnapshot {
    let mut lists = BTreeMap::new();
    lists.insert(f.status_uri.clone(), f.status_list.clone());
    TrustSnapshot {
        anchors: anchors(f),
        accreditations: Some(vec![Accreditation {
            issuer: civis_core::did::DidUrl::parse(&f.issuer_kid).unwrap().did,
            doc_types: vec![mdoc::citizen::DOC_TYPE.into()],
            valid_until: citizen::at("2030-01-01T00:00:00Z"),
        }]),
        status_lists: lists,
        as_of: Some(citizen::at(as_of)),
        retired_keys: BTreeMap::new(),
    }
}

fn engine(f: &Fixture, snap: &TrustSnapshot) -> Verdict {
    let bytes = f.response.to_vec();
    let p = Presentation {
        device_response: &bytes,
        transcript: &f.transcript,
        reader_key: None,
        request: Some(&f.request),
    };
    verify_presentation(&p, snap, &Policy::default(), now())
}

const FRESH: &str = "2026-06-01T08:00:00Z";
const STALE: &str = "2026-05-20T08:00:00Z";

#[test]
fn engine_fresh_state() {
    let f = fixture();
    let snap = snapshot(&f, FRESH);
    assert!(matches!(engine(&f, &snap), Verdict::Accept(_)));
    let mut revoked = snap.clone();
    revoked
        .status_lists
        .get_mut(&f.status_uri)
        .unwrap()
        .set(42, Status::Invalid.value())
        .unwrap();
    assert_eq!(engine(&f, &revoked), Verdict::Reject(RejectReason::Revoked));
    let mut suspended = snap.clone();
    suspended
        .status_lists
        .get_mut(&f.status_uri)
        .unwrap()
        .set(42, Status::Suspended.value())
        .unwrap();
    assert_eq!(
        engine(&f, &suspended),
        Verdict::Reject(RejectReason::Suspended)
    );
    let mut no_list = snap.clone();
    no_list.status_lists.clear();
    assert!(matches!(
        engine(&f, &no_list),
        Verdict::Undetermined(UndeterminedReason::StatusListUnavailable(_))
    ));
    let mut not_accredited = snap.clone();
    not_accredited.accreditations = Some(vec![]);
    assert!(matches!(
        engine(&f, &not_accredited),
        Verdict::Reject(RejectReason::IssuerNotAccredited(_))
    ));
    let mut unknown = snap.clone();
    unknown.anchors.clear();
    assert_eq!(
        engine(&f, &unknown),
        Verdict::Reject(RejectReason::UntrustedIssuer)
    );
    // The issuer rotated its key away before the credential says it was signed: the old key
    // (stolen, or a lagging signer) cannot issue after its retirement. Retired after
    // signing, the credential stands.
    let signed = match engine(&f, &snap) {
        Verdict::Accept(docs) => docs[0].validity.signed.at,
        v => panic!("{v:?}"),
    };
    let mut retired_before = snap.clone();
    retired_before
        .retired_keys
        .insert(f.issuer_kid.clone(), signed.plus_secs(-1));
    assert!(matches!(
        engine(&f, &retired_before),
        Verdict::Reject(RejectReason::IssuerKeyRetired { .. })
    ));
    let mut retired_after = snap.clone();
    retired_after
        .retired_keys
        .insert(f.issuer_kid.clone(), signed);
    assert!(matches!(engine(&f, &retired_after), Verdict::Accept(_)));
}

#[test]
fn engine_stale_state_is_never_accept_and_never_a_false_reject() {
    let f = fixture();
    let snap = snapshot(&f, STALE);
    assert!(matches!(
        engine(&f, &snap),
        Verdict::Undetermined(UndeterminedReason::StaleTrustState { .. })
    ));
    // Revocation is final: a stale snapshot still proves it.
    let mut revoked = snap.clone();
    revoked
        .status_lists
        .get_mut(&f.status_uri)
        .unwrap()
        .set(42, Status::Invalid.value())
        .unwrap();
    assert_eq!(engine(&f, &revoked), Verdict::Reject(RejectReason::Revoked));
    // A suspension may have been lifted since.
    let mut suspended = snap.clone();
    suspended
        .status_lists
        .get_mut(&f.status_uri)
        .unwrap()
        .set(42, Status::Suspended.value())
        .unwrap();
    assert!(matches!(
        engine(&f, &suspended),
        Verdict::Undetermined(UndeterminedReason::StaleTrustState { .. })
    ));
    // An issuer unknown to an old snapshot may have been registered since.
    let mut unknown = snap.clone();
    unknown.anchors.clear();
    assert!(matches!(
        engine(&f, &unknown),
        Verdict::Undetermined(UndeterminedReason::StaleTrustState { .. })
    ));
    // A broken signature is proven bad whatever the state's age.
    let mut resp = f.response.clone();
    let doc = &mut resp.documents.as_mut().unwrap()[0];
    let mut cose = doc.issuer_signed.issuer_auth.cose.clone();
    cose.signature[0] ^= 0x80;
    doc.issuer_signed.issuer_auth = mdoc::signed::Sign1::new(cose);
    let bytes = resp.to_vec();
    let p = Presentation {
        device_response: &bytes,
        transcript: &f.transcript,
        reader_key: None,
        request: Some(&f.request),
    };
    assert_eq!(
        verify_presentation(&p, &snap, &Policy::default(), now()),
        Verdict::Reject(RejectReason::IssuerSignature)
    );
}

#[test]
fn engine_refuses_a_snapshot_from_the_future() {
    let f = fixture();
    let snap = snapshot(&f, "2026-06-02T12:00:00Z");
    assert!(matches!(
        engine(&f, &snap),
        Verdict::Undetermined(UndeterminedReason::SnapshotFromTheFuture { .. })
    ));
}

#[test]
fn kid_in_the_unprotected_header_is_not_trusted() {
    // Move the kid out of the protected header (re-signing so the signature itself is good).
    let f = fixture();
    let mut resp = f.response.clone();
    let doc = &mut resp.documents.as_mut().unwrap()[0];
    let mut cose = doc.issuer_signed.issuer_auth.cose.clone();
    cose.unprotected.key_id = cose.protected.header.key_id.clone();
    cose.protected = coset::ProtectedHeader {
        original_data: None,
        header: coset::HeaderBuilder::new()
            .algorithm(coset::iana::Algorithm::ES256)
            .build(),
    };
    cose.signature = f.issuer_key.sign_es256(&cose.tbs_data(b"")).to_vec();
    doc.issuer_signed.issuer_auth = mdoc::signed::Sign1::new(cose);
    assert_eq!(reject(check(&f, &resp)), RejectReason::UntrustedIssuer);
}

#[test]
fn citizen_element_of_the_wrong_type_is_refused_at_issue_and_verify() {
    let f = fixture();
    let resp = replace_item(&f, |i| {
        if i.element_identifier == "family_name" {
            i.element_value = Value::Integer(7.into());
        }
    });
    // Digest fails first; the type rule is checked at issue time too.
    assert!(matches!(
        reject(check(&f, &resp)),
        RejectReason::DigestMismatch { .. }
    ));
    let ns = vec![(
        mdoc::citizen::NAMESPACE.to_owned(),
        vec![("age_over_18".to_owned(), Value::Text("yes".into()))],
    )];
    let params = mdoc::IssueParams {
        doc_type: mdoc::citizen::DOC_TYPE,
        name_spaces: &ns,
        device_key: f.device_key.public_key(),
        validity: mdoc::ValidityInfo {
            signed: mdoc::TDate::new(now()),
            valid_from: mdoc::TDate::new(now()),
            valid_until: mdoc::TDate::new(now().plus_secs(10)),
            expected_update: None,
        },
        status: None,
        key_authorizations: None,
    };
    let mut rng = citizen::SeededRng::new("x");
    assert!(
        mdoc::issue(
            &params,
            &f.issuer_key,
            &mdoc::IssuerKeyId::Kid(f.issuer_kid.clone()),
            &mut rng
        )
        .is_err()
    );
}
