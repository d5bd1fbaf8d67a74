//! A deterministic citizen credential and presentation: fixed keys, seeded salts, fixed times.
//! Shared by the golden-vector test, the negative tests and the benchmark.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use ciborium::Value;
use civis_core::Timestamp;
use civis_core::cbor::{CborForm, Tagged};
use civis_core::crypto::SoftwareKey;
use civis_core::did::{Did, KeyCommitment};
use civis_core::mdoc::citizen::{self, CitizenRecord};
use civis_core::mdoc::{
    self, DeviceEngagement, DeviceNameSpaces, DeviceRequest, DeviceResponse, DocRequest, Document,
    IssueParams, IssuerKeyId, ItemsRequest, SessionTranscript, StatusRef, TDate, ValidityInfo,
};
use civis_core::status::{Bits, StatusList};
use sha2::{Digest, Sha256};

/// Counter-mode SHA-256: reproducible "randomness" for golden vectors only.
pub struct SeededRng {
    seed: [u8; 32],
    counter: u64,
    buf: Vec<u8>,
}

impl SeededRng {
    pub fn new(label: &str) -> Self {
        Self {
            seed: Sha256::digest(label.as_bytes()).into(),
            counter: 0,
            buf: Vec::new(),
        }
    }
}

impl rand_core::RngCore for SeededRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for d in dest {
            if self.buf.is_empty() {
                let mut h = Sha256::new();
                h.update(self.seed);
                h.update(self.counter.to_be_bytes());
                self.counter += 1;
                self.buf = h.finalize().to_vec();
            }
            *d = self.buf.remove(0);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for SeededRng {}

/// A fixed key from a label.
pub fn key(label: &str) -> SoftwareKey {
    SoftwareKey::from_scalar(&Sha256::digest(
        format!("civis golden key: {label}").as_bytes(),
    ))
    .unwrap()
}

pub struct Fixture {
    pub issuer_key: SoftwareKey,
    pub issuer_kid: String,
    pub device_key: SoftwareKey,
    pub reader_key: SoftwareKey,
    pub transcript: SessionTranscript,
    pub request: DeviceRequest,
    pub issuer_signed: mdoc::IssuerSigned,
    pub response: DeviceResponse,
    pub status_list: StatusList,
    pub status_uri: String,
}

impl Fixture {
    /// Trust in the fixture's issuer key, named by its DID URL.
    pub fn anchors(&self) -> Vec<mdoc::TrustAnchor> {
        vec![mdoc::TrustAnchor::DidKey {
            kid: civis_core::did::DidUrl::parse(&self.issuer_kid).unwrap(),
            key: self.issuer_key.public_key().clone(),
        }]
    }
}

pub const DISCLOSED: &[&str] = &[
    "family_name",
    "given_name",
    "age_over_16",
    "age_over_18",
    "age_over_21",
    "age_over_65",
    "resident_city",
    "resident_district",
    "issue_date",
    "expiry_date",
];

pub fn record() -> CitizenRecord {
    CitizenRecord::example()
}

pub fn at(s: &str) -> Timestamp {
    Timestamp::parse_rfc3339(s).unwrap()
}

/// The time golden presentations are checked at.
pub fn now() -> Timestamp {
    at("2026-06-01T12:00:00Z")
}

pub fn fixture() -> Fixture {
    let issuer_key = key("issuer");
    let issuer_next = key("issuer next");
    let did = Did::from_inception(
        issuer_key.public_key(),
        &KeyCommitment::to(issuer_next.public_key()),
    );
    let issuer_kid = did.key_url(1).to_string();
    let device_key = key("card");
    let reader_key = key("reader ephemeral");
    let device_eph = key("device ephemeral");

    let status_uri = format!("{}/status/1", did);
    let name_spaces = record().to_name_spaces("2026-01-01").unwrap();
    let params = IssueParams {
        doc_type: citizen::DOC_TYPE,
        name_spaces: &name_spaces,
        device_key: device_key.public_key(),
        validity: ValidityInfo {
            signed: TDate::new(at("2026-01-01T00:00:00Z")),
            valid_from: TDate::new(at("2026-01-01T00:00:00Z")),
            valid_until: TDate::new(at("2031-01-01T00:00:00Z")),
            expected_update: None,
        },
        status: Some(StatusRef {
            idx: 42,
            uri: status_uri.clone(),
        }),
        key_authorizations: None,
    };
    let mut rng = SeededRng::new("citizen golden salts");
    let issuer_signed = mdoc::issue(
        &params,
        &issuer_key,
        &IssuerKeyId::Kid(issuer_kid.clone()),
        &mut rng,
    )
    .unwrap();

    let engagement = DeviceEngagement::new(device_eph.public_key());
    let reader_cose_key =
        civis_core::cbor::encode(&civis_core::cose::cose_key_value(reader_key.public_key()));
    let handover = Value::Array(vec![
        Value::Bytes(b"civis golden handover select".to_vec()),
        Value::Null,
    ]);
    let transcript =
        SessionTranscript::new(Some(&engagement.to_vec()), Some(&reader_cose_key), handover);

    let items = ItemsRequest {
        doc_type: citizen::DOC_TYPE.into(),
        name_spaces: vec![(
            citizen::NAMESPACE.into(),
            DISCLOSED.iter().map(|e| ((*e).to_owned(), false)).collect(),
        )],
        request_info: None,
    };
    let request = DeviceRequest {
        version: "1.0".into(),
        doc_requests: vec![DocRequest {
            items_request: Tagged::new(items),
            reader_auth: None,
        }],
    };

    let disclosed = mdoc::select(&issuer_signed, |_, e| DISCLOSED.contains(&e));
    let device_signed = mdoc::sign_device(
        &device_key,
        &transcript,
        citizen::DOC_TYPE,
        DeviceNameSpaces::default(),
    )
    .unwrap();
    let response = DeviceResponse {
        version: "1.0".into(),
        documents: Some(vec![Document {
            doc_type: citizen::DOC_TYPE.into(),
            issuer_signed: disclosed,
            device_signed,
            errors: None,
        }]),
        document_errors: None,
        status: 0,
    };
    let status_list = StatusList::new(Bits::new(2).unwrap(), 1024).unwrap();
    Fixture {
        issuer_key,
        issuer_kid,
        device_key,
        reader_key,
        transcript,
        request,
        issuer_signed,
        response,
        status_list,
        status_uri,
    }
}
