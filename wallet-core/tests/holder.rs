//! Phone-wallet presentation: consent, intent-to-retain, selective disclosure, device signature.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, missing_docs)]

use civis_core::cbor::Tagged;
use civis_core::crypto::SoftwareKey;
use civis_core::mdoc::citizen::{self, CitizenRecord};
use civis_core::mdoc::{
    self, DeviceEngagement, DeviceRequest, DocRequest, IssueParams, IssuerKeyId, ItemsRequest,
    SessionTranscript, TDate, TrustAnchor, ValidityInfo, VerifyContext,
};
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

#[test]
fn consent_and_retention_policy_decide_what_is_disclosed() {
    let issuer = SoftwareKey::generate(&mut OsRng);
    let device = SoftwareKey::generate(&mut OsRng);
    let record = CitizenRecord {
        family_name: "Jansen".into(),
        given_name: "Mira".into(),
        birth_date: "1990-04-12".into(),
        resident_city: "Civitas".into(),
        resident_district: "Harbour".into(),
        document_number: "CIV-000042".into(),
        issue_date: "2026-01-01".into(),
        expiry_date: "2031-01-01".into(),
        issuing_authority: "Civitas Civil Registry".into(),
        portrait: None,
    };
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
        &IssuerKeyId::Kid("did:civis:issuer#key-1".into()),
        &mut OsRng,
    )
    .unwrap();
    let stored = StoredCredential::from_bytes(&mdoc::issue::encode_issuer_signed(&signed)).unwrap();
    assert_eq!(stored.doc_type, citizen::DOC_TYPE);
    let wallet = Wallet {
        credentials: vec![stored],
        never_retain: vec![(citizen::NAMESPACE.into(), "document_number".into())],
    };
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
    let anchors = [TrustAnchor::DidKey {
        kid: "did:civis:issuer#key-1".into(),
        key: issuer.public_key().clone(),
    }];
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
