//! A small world for card tests: a one-member governance, an accredited kiosk, an issuer, and a
//! citizen credential minted for a card's key.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use civis_core::card::TransportKey;
use civis_core::cbor::Tagged;
use civis_core::crypto::{EcPublicKey, SoftwareKey};
use civis_core::did::{Did, KeyCommitment};
use civis_core::kiosk::KioskAccreditation;
use civis_core::mdoc::citizen::{self, CitizenRecord};
use civis_core::mdoc::{
    self, DeviceRequest, DocRequest, IssueParams, IssuerKeyId, ItemsRequest, SessionTranscript,
    TDate, TrustAnchor, ValidityInfo, VerifiedDocument, VerifyContext,
};
use civis_core::timestamp::Timestamp;
use civis_firmware_bridge::CardTransport;
use civis_firmware_bridge::reader::{CardClient, MdocSession, Personalizer};
use civis_wallet_core::holder::codes;
use rand_core::OsRng;

pub const CHAIN: &str = "civis-test";
pub const NOW: i64 = 1_790_000_000;
pub const PIN: &str = "246810";
pub const PUK: &str = "1357913579";
pub const NS: &str = citizen::NAMESPACE;

pub struct World {
    pub governance: SoftwareKey,
    pub kiosk: SoftwareKey,
    pub statement: Vec<u8>,
    pub issuer: SoftwareKey,
    pub issuer_kid: String,
    pub transport: TransportKey,
}

/// The DID a key incepts (committing to itself: tests never rotate).
pub fn did_of(key: &SoftwareKey) -> Did {
    Did::from_inception(key.public_key(), &KeyCommitment::to(key.public_key()))
}

impl World {
    pub fn new() -> Self {
        Self::with_grants(&[
            "age_over_18",
            "resident_city",
            "family_name",
            "document_number",
        ])
    }

    /// A kiosk accredited for `elements` of the citizen namespace.
    pub fn with_grants(elements: &[&str]) -> Self {
        let governance = SoftwareKey::generate(&mut OsRng);
        let kiosk = SoftwareKey::generate(&mut OsRng);
        let statement = accreditation(&governance, &kiosk, elements);
        let issuer = SoftwareKey::generate(&mut OsRng);
        let issuer_kid = did_of(&issuer).key_url(1).to_string();
        Self {
            governance,
            kiosk,
            statement,
            issuer,
            issuer_kid,
            transport: TransportKey([0x42; 32]),
        }
    }

    /// The governance set cards are given: the one member, at inception.
    pub fn governance_set(&self) -> Vec<(EcPublicKey, KeyCommitment)> {
        vec![(
            self.governance.public_key().clone(),
            KeyCommitment::to(self.governance.public_key()),
        )]
    }

    /// A citizen credential bound to `device_key`.
    pub fn credential(&self, device_key: &EcPublicKey) -> Vec<u8> {
        let record = CitizenRecord::example();
        let name_spaces = record.to_name_spaces("2026-09-01").unwrap();
        let now = Timestamp(NOW);
        let params = IssueParams {
            doc_type: citizen::DOC_TYPE,
            name_spaces: &name_spaces,
            device_key,
            validity: ValidityInfo {
                signed: TDate::new(now.plus_secs(-60)),
                valid_from: TDate::new(now.plus_secs(-60)),
                valid_until: TDate::new(now.plus_secs(365 * 86_400)),
                expected_update: None,
            },
            status: None,
            key_authorizations: None,
        };
        let signed = mdoc::issue(
            &params,
            &self.issuer,
            &IssuerKeyId::Kid(self.issuer_kid.clone()),
            &mut OsRng,
        )
        .unwrap();
        mdoc::issue::encode_issuer_signed(&signed)
    }

    /// Personalize a blank card fully and lock it; returns the card key.
    pub fn personalize<T: CardTransport>(&self, client: &mut CardClient<T>) -> EcPublicKey {
        let mut p = Personalizer::start(client, self.transport.clone()).unwrap();
        let key = p.generate_key().unwrap();
        p.set_pin(PIN).unwrap();
        p.set_puk(PUK).unwrap();
        p.set_governance(CHAIN, &self.governance_set()).unwrap();
        p.set_pin_elements(&[(NS.into(), "document_number".into())])
            .unwrap();
        p.put_credential(0, &self.credential(&key)).unwrap();
        p.lock().unwrap();
        key
    }

    /// A request for `elements`, with ReaderAuth and the kiosk's accreditation (or without).
    pub fn request(
        &self,
        transcript: &SessionTranscript,
        elements: &[&str],
        pin: Option<&str>,
        reader_auth: bool,
    ) -> DeviceRequest {
        let items = ItemsRequest {
            doc_type: citizen::DOC_TYPE.into(),
            name_spaces: vec![(
                NS.into(),
                elements.iter().map(|e| ((*e).to_owned(), false)).collect(),
            )],
            request_info: pin.map(|p| {
                ciborium::Value::Map(vec![(
                    ciborium::Value::Text(civis_core::card::REQUEST_INFO_PIN.into()),
                    ciborium::Value::Text(p.into()),
                )])
            }),
        };
        let doc = if reader_auth {
            mdoc::reader_auth::sign_with_accreditation(
                items,
                transcript,
                &self.kiosk,
                &self.statement,
            )
            .unwrap()
        } else {
            DocRequest {
                items_request: Tagged::new(items),
                reader_auth: None,
            }
        };
        DeviceRequest {
            version: "1.0".into(),
            doc_requests: vec![doc],
        }
    }

    /// Verify a DeviceResponse with core, as a kiosk would.
    pub fn verify(
        &self,
        response: &[u8],
        transcript: &SessionTranscript,
        request: &DeviceRequest,
    ) -> Result<Vec<VerifiedDocument>, civis_core::verify::Refusal> {
        let anchors = [TrustAnchor::DidKey {
            kid: civis_core::did::DidUrl::parse(&self.issuer_kid).unwrap(),
            key: self.issuer.public_key().clone(),
        }];
        mdoc::verify_bytes(
            response,
            &VerifyContext {
                transcript,
                anchors: &anchors,
                at: Timestamp(NOW),
                reader_key: None,
                request: Some(request),
            },
        )
    }
}

/// A governance-signed accreditation of `kiosk` for `elements`.
pub fn accreditation(governance: &SoftwareKey, kiosk: &SoftwareKey, elements: &[&str]) -> Vec<u8> {
    accreditation_window(
        governance,
        kiosk,
        elements,
        NOW - 86_400,
        NOW + 365 * 86_400,
    )
}

/// The same with an explicit validity window.
pub fn accreditation_window(
    governance: &SoftwareKey,
    kiosk: &SoftwareKey,
    elements: &[&str],
    not_before: i64,
    not_after: i64,
) -> Vec<u8> {
    KioskAccreditation {
        chain: CHAIN.into(),
        kiosk: did_of(kiosk),
        key: kiosk.public_key().clone(),
        grants: vec![(
            citizen::DOC_TYPE.into(),
            vec![(
                NS.into(),
                elements.iter().map(|e| (*e).to_owned()).collect(),
            )],
        )],
        purpose: "counter service".into(),
        not_before,
        not_after,
    }
    .sign(&did_of(governance).key_url(1), governance)
    .unwrap()
}

/// Disclosed element names of a verified document.
pub fn disclosed(doc: &VerifiedDocument) -> Vec<String> {
    let mut names: Vec<String> = doc
        .disclosed
        .iter()
        .flat_map(|(_, els)| els.iter().map(|(e, _)| e.clone()))
        .collect();
    names.sort();
    names
}

/// The error code the card gave for `element`, if it withheld it.
pub fn withheld(doc: &VerifiedDocument, element: &str) -> Option<i64> {
    doc.errors
        .iter()
        .flatten()
        .flat_map(|(_, els)| els.iter())
        .find(|(e, _)| e == element)
        .map(|(_, c)| *c)
}

/// The `documentErrors` code for `doc_type` in a DeviceResponse, if the card refused it whole.
pub fn document_error(response: &[u8], doc_type: &str) -> Option<i64> {
    let resp =
        <civis_core::mdoc::DeviceResponse as civis_core::cbor::CborForm>::from_slice(response)
            .unwrap();
    let errors = resp.document_errors?;
    errors.as_map()?.iter().find_map(|(k, v)| {
        (k.as_text() == Some(doc_type))
            .then(|| v.as_integer().and_then(|i| i64::try_from(i).ok()))
            .flatten()
    })
}

/// One read: the NDEF handover, a session, one request for `elements` (with the PIN in
/// requestInfo, with or without ReaderAuth). Returns the open session, the DeviceResponse bytes
/// and what to verify them with.
pub fn read<T: CardTransport>(
    client: &mut CardClient<T>,
    world: &World,
    elements: &[&str],
    pin: Option<&str>,
    reader_auth: bool,
) -> (MdocSession, Vec<u8>, SessionTranscript, DeviceRequest) {
    let engaged = client.read_engagement().unwrap();
    let (mut session, e_reader, e_reader_bytes) = MdocSession::start(&engaged, &mut OsRng);
    let transcript = session.transcript().clone();
    let request = world.request(&transcript, elements, pin, reader_auth);
    let response = session
        .establish(client, e_reader.public_key(), e_reader_bytes, &request)
        .unwrap();
    (session, response, transcript, request)
}

/// The read every transport must get right, on a fresh tap: ReaderAuth for four elements, of
/// which the kiosk may read three, one behind the PIN; then, in the same session, the PIN
/// (inside the encrypted request) releases that one. Ends the session.
pub fn check_accredited_read_then_pin<T: CardTransport>(client: &mut CardClient<T>, world: &World) {
    let wanted = [
        "age_over_18",
        "resident_city",
        "given_name",
        "document_number",
    ];
    let (mut session, response, transcript, request) = read(client, world, &wanted, None, true);
    let docs = world.verify(&response, &transcript, &request).unwrap();
    assert_eq!(disclosed(&docs[0]), ["age_over_18", "resident_city"]);
    assert_eq!(
        withheld(&docs[0], "given_name"),
        Some(codes::NOT_ACCREDITED)
    );
    assert_eq!(
        withheld(&docs[0], "document_number"),
        Some(codes::PIN_REQUIRED)
    );
    let request = world.request(&transcript, &wanted, Some(PIN), true);
    let response = session
        .send(client, &civis_core::cbor::CborForm::to_vec(&request))
        .unwrap();
    let docs = world.verify(&response, &transcript, &request).unwrap();
    assert_eq!(
        disclosed(&docs[0]),
        ["age_over_18", "document_number", "resident_city"]
    );
    session.end(client).unwrap();
}

// E-voting helpers (tests/card_evote.rs, benches/evote_tap.rs).

/// The eligibility elements the e-voting tests ask for.
pub const ELIGIBILITY: [&str; 2] = ["age_over_18", "resident_district"];

/// A statement for `kiosk`: the eligibility elements and the VRF key, and — when `evote` — the
/// pseudonym.
pub fn evote_statement(world: &World, kiosk: &SoftwareKey, evote: bool) -> Vec<u8> {
    let mut citizen_els: Vec<String> = ELIGIBILITY.iter().map(|e| (*e).to_owned()).collect();
    citizen_els.push(civis_core::evote::VRF_KEY.into());
    let mut namespaces = vec![(NS.to_owned(), citizen_els)];
    if evote {
        namespaces.push((
            civis_core::evote::NAMESPACE.into(),
            vec![civis_core::evote::PSEUDONYM.into()],
        ));
    }
    KioskAccreditation {
        chain: CHAIN.into(),
        kiosk: did_of(kiosk),
        key: kiosk.public_key().clone(),
        grants: vec![(citizen::DOC_TYPE.into(), namespaces)],
        purpose: "polling station".into(),
        not_before: NOW - 86_400,
        not_after: NOW + 86_400,
    }
    .sign(&did_of(&world.governance).key_url(1), &world.governance)
    .unwrap()
}

/// A voter's credential: the example citizen, the card's VRF key as an issuer-signed element,
/// and the keyAuthorizations that let the card device-sign its pseudonym.
pub fn voter_credential(
    world: &World,
    card_key: &EcPublicKey,
    vrf: Option<&civis_core::vrf::VrfPublicKey>,
) -> Vec<u8> {
    let mut name_spaces = CitizenRecord::example()
        .to_name_spaces("2026-09-01")
        .unwrap();
    if let (Some(vrf), Some((_, els))) = (vrf, name_spaces.first_mut()) {
        els.push((
            civis_core::evote::VRF_KEY.into(),
            ciborium::Value::Bytes(vrf.to_bytes().to_vec()),
        ));
    }
    let now = Timestamp(NOW);
    let params = IssueParams {
        doc_type: citizen::DOC_TYPE,
        name_spaces: &name_spaces,
        device_key: card_key,
        validity: ValidityInfo {
            signed: TDate::new(now.plus_secs(-60)),
            valid_from: TDate::new(now.plus_secs(-60)),
            valid_until: TDate::new(now.plus_secs(365 * 86_400)),
            expected_update: None,
        },
        status: None,
        key_authorizations: Some(civis_core::evote::key_authorizations()),
    };
    let signed = mdoc::issue(
        &params,
        &world.issuer,
        &IssuerKeyId::Kid(world.issuer_kid.clone()),
        &mut OsRng,
    )
    .unwrap();
    mdoc::issue::encode_issuer_signed(&signed)
}

/// Personalize a blank card as a voter's and lock it; returns its VRF key.
pub fn personalize_voter<T: CardTransport>(
    world: &World,
    client: &mut CardClient<T>,
) -> civis_core::vrf::VrfPublicKey {
    let mut p = Personalizer::start(client, world.transport.clone()).unwrap();
    let (card_key, vrf) = p.generate_keys().unwrap();
    p.set_pin(PIN).unwrap();
    p.set_puk(PUK).unwrap();
    p.set_governance(CHAIN, &world.governance_set()).unwrap();
    p.put_credential(0, &voter_credential(world, &card_key, Some(&vrf)))
        .unwrap();
    p.lock().unwrap();
    vrf
}

/// One polling-station read for `election`, with `pin` (the caller powers the card up): the
/// eligibility elements, the VRF key and the pseudonym under the station's ReaderAuth. The
/// session is ended before returning.
pub fn evote_read<T: CardTransport>(
    client: &mut CardClient<T>,
    kiosk: &SoftwareKey,
    statement: &[u8],
    election: &str,
    pin: Option<&str>,
) -> (Vec<u8>, SessionTranscript, DeviceRequest) {
    use ciborium::Value;
    use civis_core::evote;
    let engaged = client.read_engagement().unwrap();
    let (mut session, e_reader, e_bytes) = MdocSession::start(&engaged, &mut OsRng);
    let transcript = session.transcript().clone();
    let mut info = vec![(
        Value::Text(evote::REQUEST_INFO_ELECTION.into()),
        Value::Text(election.into()),
    )];
    if let Some(pin) = pin {
        info.push((
            Value::Text(civis_core::card::REQUEST_INFO_PIN.into()),
            Value::Text(pin.into()),
        ));
    }
    let mut citizen_els: Vec<(String, bool)> = ELIGIBILITY
        .iter()
        .map(|e| ((*e).to_owned(), false))
        .collect();
    citizen_els.push((evote::VRF_KEY.into(), false));
    let items = ItemsRequest {
        doc_type: citizen::DOC_TYPE.into(),
        name_spaces: vec![
            (NS.into(), citizen_els),
            (
                evote::NAMESPACE.into(),
                vec![(evote::PSEUDONYM.into(), false)],
            ),
        ],
        request_info: Some(Value::Map(info)),
    };
    let doc =
        mdoc::reader_auth::sign_with_accreditation(items, &transcript, kiosk, statement).unwrap();
    let request = DeviceRequest {
        version: "1.0".into(),
        doc_requests: vec![doc],
    };
    let response = session
        .establish(client, e_reader.public_key(), e_bytes, &request)
        .unwrap();
    session.end(client).unwrap();
    (response, transcript, request)
}
