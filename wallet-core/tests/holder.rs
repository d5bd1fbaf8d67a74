//! Phone-wallet presentation: consent, intent-to-retain, selective disclosure, device signature.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

use civis_core::cbor::Tagged;
use civis_core::crypto::SoftwareKey;
use civis_core::mdoc::citizen::{self, CitizenRecord};
use civis_core::mdoc::{
    self, DeviceEngagement, DeviceRequest, DocRequest, IssueParams, IssuerKeyId, ItemsRequest,
    SessionTranscript, TDate, TrustAnchor, ValidityInfo, VerifyContext,
};
use civis_core::qr::{KioskEngagement, QrPresentation};
use civis_core::timestamp::Timestamp;
use civis_wallet_core::holder::{Consent, Release, Requested, StoredCredential, Wallet, codes};
use rand_core::OsRng;

const NOW: i64 = 1_790_000_000;

/// Declines the family name; records what it was asked.
struct Declines(Vec<(String, bool)>);

impl Consent for Declines {
    fn decide(&mut self, item: Requested<'_>, _purpose: Option<&str>) -> Release {
        self.0
            .push((item.element.to_owned(), item.intent_to_retain));
        if item.element == "family_name" {
            Release::Withhold(codes::DATA_NOT_RETURNED)
        } else {
            Release::Release
        }
    }
}

/// A wallet holding a citizen credential bound to a fresh device key; returns the wallet, the
/// device key and the issuer's key.
fn citizen_wallet() -> (Wallet, SoftwareKey, SoftwareKey) {
    let issuer = SoftwareKey::generate(&mut OsRng);
    let device = SoftwareKey::generate(&mut OsRng);
    let record = CitizenRecord::example();
    let ns = record.to_name_spaces("2026-09-01").unwrap();
    let now = Timestamp(NOW);
    let signed = mdoc::issue(
        &IssueParams {
            doc_type: citizen::DOC_TYPE,
            name_spaces: &ns,
            device_key: device.public_key(),
            validity: ValidityInfo {
                signed: TDate::new(now),
                valid_from: TDate::new(now),
                valid_until: TDate::new(now.plus_secs(86_400)),
                expected_update: None,
            },
            status: None,
            key_authorizations: None,
        },
        &issuer,
        &IssuerKeyId::Kid(issuer_kid(&issuer).to_string()),
        &mut OsRng,
    )
    .unwrap();
    let stored = StoredCredential::from_bytes(&mdoc::issue::encode_issuer_signed(&signed)).unwrap();
    assert_eq!(stored.doc_type, citizen::DOC_TYPE);
    let wallet = Wallet {
        credentials: vec![stored],
        never_retain: vec![(citizen::NAMESPACE.into(), "document_number".into())],
    };
    (wallet, device, issuer)
}

/// The issuer's DID URL (a DID incepted from its key).
fn issuer_kid(issuer: &SoftwareKey) -> civis_core::did::DidUrl {
    let next = civis_core::did::KeyCommitment::to(issuer.public_key());
    civis_core::did::Did::from_inception(issuer.public_key(), &next).key_url(1)
}

fn anchors(issuer: &SoftwareKey) -> [TrustAnchor; 1] {
    [TrustAnchor::DidKey {
        kid: issuer_kid(issuer),
        key: issuer.public_key().clone(),
    }]
}

#[test]
fn consent_and_retention_policy_decide_what_is_disclosed() {
    let (wallet, device, issuer) = citizen_wallet();
    let now = Timestamp(NOW);
    let e_device = SoftwareKey::generate(&mut OsRng);
    let de = civis_core::cbor::CborForm::to_vec(&DeviceEngagement::new(e_device.public_key()));
    let transcript = SessionTranscript::new(Some(&de), None, ciborium::Value::Null);
    let request = DeviceRequest {
        version: "1.0".into(),
        doc_requests: vec![DocRequest {
            items_request: Tagged::new(ItemsRequest {
                doc_type: citizen::DOC_TYPE.into(),
                name_spaces: vec![(
                    citizen::NAMESPACE.into(),
                    vec![
                        ("age_over_18".into(), false),
                        ("family_name".into(), false),
                        ("document_number".into(), true),
                        ("portrait".into(), false),
                    ],
                )],
                request_info: None,
            }),
            reader_auth: None,
        }],
    };
    let mut consent = Declines(Vec::new());
    let response = wallet
        .present(&request, &transcript, &device, None, &mut consent)
        .unwrap();
    // The retention policy answered for document_number before the user was asked.
    assert!(!consent.0.iter().any(|(e, _)| e == "document_number"));
    let anchors = anchors(&issuer);
    let docs = mdoc::verify(
        &response,
        &VerifyContext {
            transcript: &transcript,
            anchors: &anchors,
            at: now,
            reader_key: None,
            request: Some(&request),
        },
    )
    .unwrap();
    let disclosed: Vec<_> = docs[0].disclosed[0]
        .1
        .iter()
        .map(|(e, _)| e.as_str())
        .collect();
    assert_eq!(disclosed, ["age_over_18"]);
    let errors = &docs[0].errors.as_ref().unwrap()[0].1;
    let code = |e: &str| errors.iter().find(|(n, _)| n == e).map(|(_, c)| *c);
    assert_eq!(code("family_name"), Some(codes::DATA_NOT_RETURNED));
    assert_eq!(code("document_number"), Some(codes::RETENTION_REFUSED));
    assert_eq!(code("portrait"), Some(codes::DATA_NOT_RETURNED), "not held");
}

/// Says yes to everything.
struct Yes;

impl Consent for Yes {
    fn decide(&mut self, _: Requested<'_>, _: Option<&str>) -> Release {
        Release::Release
    }
}

fn engagement() -> (KioskEngagement, SoftwareKey) {
    KioskEngagement::new(
        ItemsRequest {
            doc_type: citizen::DOC_TYPE.into(),
            name_spaces: vec![(
                citizen::NAMESPACE.into(),
                vec![("age_over_18".into(), false), ("given_name".into(), false)],
            )],
            request_info: None,
        },
        &mut OsRng,
    )
}

fn verify_qr(
    response: &[u8],
    engagement: &KioskEngagement,
    issuer: &SoftwareKey,
) -> Result<Vec<mdoc::VerifiedDocument>, civis_core::verify::Refusal> {
    let request = DeviceRequest {
        version: "1.0".into(),
        doc_requests: vec![DocRequest {
            items_request: Tagged::new(engagement.request.clone()),
            reader_auth: None,
        }],
    };
    mdoc::verify_bytes(
        response,
        &VerifyContext {
            transcript: &engagement.transcript(),
            anchors: &anchors(issuer),
            at: Timestamp(NOW),
            reader_key: None,
            request: Some(&request),
        },
    )
}

#[test]
fn a_qr_presentation_is_sealed_for_one_kiosk_engagement() {
    let (wallet, device, issuer) = citizen_wallet();
    // The kiosk's screen, as text, read by the phone.
    let (shown, kiosk_key) = engagement();
    let text = shown.to_text();
    assert!(text.starts_with("CVE1:"));
    assert!(
        text.chars()
            .all(|c| "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ $%*+-./:".contains(c))
    );
    let read = KioskEngagement::from_text(&text).unwrap();
    assert_eq!(read, shown);
    // The phone's answer, as text, read by the kiosk.
    let qr = wallet
        .present_qr(&read, &device, &mut Yes, &mut OsRng)
        .unwrap();
    let answer = qr.to_text();
    eprintln!(
        "kiosk engagement {} chars; QR presentation {} bytes CBOR, {} chars",
        text.len(),
        qr.encode().len(),
        answer.len()
    );
    assert!(answer.len() <= 4_296, "does not fit a QR code");
    let received = QrPresentation::from_text(&answer).unwrap();
    let response = received.open(&shown, &kiosk_key).unwrap();
    let docs = verify_qr(&response, &shown, &issuer).unwrap();
    let names: Vec<_> = docs[0].disclosed[0]
        .1
        .iter()
        .map(|(e, _)| e.as_str())
        .collect();
    assert_eq!(names, ["given_name", "age_over_18"]);

    // Shown to another engagement (a replay): it does not open.
    let (other, other_key) = engagement();
    assert!(received.open(&other, &other_key).is_err());
    // The right engagement with another private key: it does not open.
    assert!(received.open(&shown, &other_key).is_err());
    // Any flipped byte of the ciphertext: it does not open.
    let mut tampered = received.clone();
    let last = tampered.data.len() - 1;
    tampered.data[last] ^= 1;
    assert!(tampered.open(&shown, &kiosk_key).is_err());
    // Truncated, foreign, oversized or non-base45 text is refused.
    assert!(QrPresentation::from_text(&answer[..answer.len() - 3]).is_err());
    assert!(QrPresentation::from_text(&answer.replacen("CVP1:", "CVE1:", 1)).is_err());
    assert!(QrPresentation::from_text(&format!("CVP1:{}", "A".repeat(10_000))).is_err());
    assert!(QrPresentation::from_text("CVP1:abc").is_err());
    assert!(KioskEngagement::from_text("CVE1:").is_err());

    // A phone with another device key holding a copy of the credential: sealed and opened
    // fine, refused by device authentication.
    let clone_key = SoftwareKey::generate(&mut OsRng);
    let qr = wallet
        .present_qr(&shown, &clone_key, &mut Yes, &mut OsRng)
        .unwrap();
    let response = qr.open(&shown, &kiosk_key).unwrap();
    assert!(verify_qr(&response, &shown, &issuer).is_err());
}

#[test]
fn a_decompression_bomb_is_refused() {
    let (shown, kiosk_key) = engagement();
    let bomb = vec![0u8; 2 * 1024 * 1024];
    let qr = QrPresentation::seal(&shown, &bomb, &mut OsRng).unwrap();
    assert!(qr.encode().len() < 4_096, "compresses small");
    assert!(matches!(
        qr.open(&shown, &kiosk_key),
        Err(civis_core::Error::TooLarge { .. })
    ));
}
