//! E-voting on the card, in process: the VRF key made at personalization and bound by the
//! issuer, the election pseudonym released only after the PIN and only to a reader accredited
//! for it, device-signed, and checked against the bound key (specs/evote.md).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use ciborium::Value;
use civis_core::card::TransportKey;
use civis_core::cbor::Tagged;
use civis_core::crypto::SoftwareKey;
use civis_core::evote::{self, Pseudonym, PseudonymError};
use civis_core::mdoc::citizen;
use civis_core::mdoc::{
    DeviceRequest, DocRequest, ItemsRequest, SessionTranscript, VerifiedDocument,
};
use civis_core::vrf::VrfPublicKey;
use civis_firmware_bridge::reader::{CardClient, MdocSession, Personalizer};
use civis_firmware_bridge::transport::InProcess;
use civis_wallet_core::applet::CardState;
use civis_wallet_core::holder::codes;
use common::*;
use rand_core::OsRng;

/// A locked voter card; returns it with its VRF key.
fn voter_card(world: &World, serial: u8) -> (CardClient<InProcess>, VrfPublicKey) {
    let mut client = CardClient::new(InProcess::new(CardState::blank(
        [serial; 16],
        TransportKey([0x42; 32]),
    )));
    let vrf = personalize_voter(world, &mut client);
    let card_key = client.transport().state().public_key().unwrap().clone();
    assert_ne!(
        card_key.compressed(),
        vrf.to_bytes().to_vec(),
        "the VRF key is not the card key"
    );
    (client, vrf)
}

/// One tap (a new power-on) at a polling station for `election`, with `pin`.
fn tap(
    client: &mut CardClient<InProcess>,
    kiosk: &SoftwareKey,
    statement: &[u8],
    election: &str,
    pin: Option<&str>,
) -> (Vec<u8>, SessionTranscript, DeviceRequest) {
    client.transport().reset();
    evote_read(client, kiosk, statement, election, pin)
}

fn voter_doc(world: &World, r: &(Vec<u8>, SessionTranscript, DeviceRequest)) -> VerifiedDocument {
    world.verify(&r.0, &r.1, &r.2).unwrap().remove(0)
}

fn pseudonym_of(doc: &VerifiedDocument, election: &str) -> Result<Pseudonym, PseudonymError> {
    evote::pseudonym(doc, CHAIN, election)
}

#[test]
fn an_accredited_station_gets_a_device_signed_pseudonym_after_the_pin_and_nothing_identifying() {
    let world = World::new();
    let station = SoftwareKey::generate(&mut OsRng);
    let statement = evote_statement(&world, &station, true);
    let (mut card, vrf) = voter_card(&world, 1);

    let read = tap(&mut card, &station, &statement, "council-2027", Some(PIN));
    let doc = voter_doc(&world, &read);
    let p = pseudonym_of(&doc, "council-2027").unwrap();
    // Exactly the VRF output of the card's bound key over this chain and election.
    assert_eq!(doc.device_signed[0].0, evote::NAMESPACE);
    let mut names = disclosed(&doc);
    names.sort();
    assert_eq!(names, ["age_over_18", "resident_district", "vrf_key"]);
    // The same card and election give the same pseudonym; another election another one.
    let again = pseudonym_of(
        &voter_doc(
            &world,
            &tap(&mut card, &station, &statement, "council-2027", Some(PIN)),
        ),
        "council-2027",
    )
    .unwrap();
    assert_eq!(p, again);
    let other_doc = voter_doc(
        &world,
        &tap(
            &mut card,
            &station,
            &statement,
            "referendum-2027",
            Some(PIN),
        ),
    );
    let other = pseudonym_of(&other_doc, "referendum-2027").unwrap();
    assert_ne!(p, other);
    // A proof for one election is not a pseudonym of another, nor of another chain.
    assert_eq!(
        pseudonym_of(&other_doc, "council-2027"),
        Err(PseudonymError::BadProof)
    );
    assert_eq!(
        evote::pseudonym(&doc, "another-chain", "council-2027"),
        Err(PseudonymError::BadProof)
    );
    // The pseudonym is the RFC 9381 output under the key the issuer bound.
    let proof = match &doc.device_signed[0].1[0].1 {
        Value::Bytes(b) => civis_core::vrf::VrfProof::from_bytes(b).unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        civis_core::vrf::verify(&vrf, &evote::alpha(CHAIN, "council-2027"), &proof).unwrap(),
        p.0
    );
}

#[test]
fn no_pseudonym_without_the_right_pin_or_from_a_station_not_accredited_for_evoting() {
    let world = World::new();
    let station = SoftwareKey::generate(&mut OsRng);
    let evote_st = evote_statement(&world, &station, true);
    let (mut card, _) = voter_card(&world, 2);

    // No PIN: eligibility elements come, the pseudonym does not.
    let doc = voter_doc(&world, &tap(&mut card, &station, &evote_st, "e1", None));
    assert_eq!(withheld(&doc, evote::PSEUDONYM), Some(codes::PIN_REQUIRED));
    assert_eq!(pseudonym_of(&doc, "e1"), Err(PseudonymError::Missing));
    // A wrong PIN.
    let doc = voter_doc(
        &world,
        &tap(&mut card, &station, &evote_st, "e1", Some("000000")),
    );
    assert_eq!(withheld(&doc, evote::PSEUDONYM), Some(codes::PIN_WRONG));
    assert!(doc.device_signed.is_empty());

    // A kiosk accredited for the same citizen elements but not for e-voting, with the PIN.
    let counter = SoftwareKey::generate(&mut OsRng);
    let plain = evote_statement(&world, &counter, false);
    let doc = voter_doc(&world, &tap(&mut card, &counter, &plain, "e1", Some(PIN)));
    assert_eq!(
        withheld(&doc, evote::PSEUDONYM),
        Some(codes::NOT_ACCREDITED)
    );
    assert!(doc.device_signed.is_empty());

    // No ReaderAuth at all: no document, nothing stable.
    card.transport().reset();
    let engaged = card.read_engagement().unwrap();
    let (mut session, e_reader, e_bytes) = MdocSession::start(&engaged, &mut OsRng);
    let request = DeviceRequest {
        version: "1.0".into(),
        doc_requests: vec![DocRequest {
            items_request: Tagged::new(ItemsRequest {
                doc_type: citizen::DOC_TYPE.into(),
                name_spaces: vec![(
                    evote::NAMESPACE.into(),
                    vec![(evote::PSEUDONYM.into(), false)],
                )],
                request_info: None,
            }),
            reader_auth: None,
        }],
    };
    let response = session
        .establish(&mut card, e_reader.public_key(), e_bytes, &request)
        .unwrap();
    assert_eq!(
        document_error(&response, citizen::DOC_TYPE),
        Some(codes::READER_NOT_AUTHENTICATED)
    );
}

#[test]
fn a_credential_naming_another_vrf_key_is_refused_and_a_card_without_one_has_no_pseudonym() {
    let world = World::new();
    let mut client = CardClient::new(InProcess::new(CardState::blank(
        [3; 16],
        TransportKey([0x42; 32]),
    )));
    let mut p = Personalizer::start(&mut client, world.transport.clone()).unwrap();
    let (card_key, _) = p.generate_keys().unwrap();
    let foreign = civis_core::vrf::VrfSecretKey::generate(&mut OsRng);
    assert!(
        p.put_credential(
            0,
            &voter_credential(&world, &card_key, Some(foreign.public_key()))
        )
        .is_err(),
        "the issuer bound a VRF key that is not this card's"
    );
    // A credential without a VRF key: the station's check finds none.
    p.put_credential(0, &voter_credential(&world, &card_key, None))
        .unwrap();
    p.set_pin(PIN).unwrap();
    p.set_puk(PUK).unwrap();
    p.set_governance(CHAIN, &world.governance_set()).unwrap();
    p.lock().unwrap();
    let station = SoftwareKey::generate(&mut OsRng);
    let st = evote_statement(&world, &station, true);
    let doc = voter_doc(&world, &tap(&mut client, &station, &st, "e1", Some(PIN)));
    assert_eq!(pseudonym_of(&doc, "e1"), Err(PseudonymError::NoKey));
}

#[test]
fn the_vrf_key_is_kept_in_the_stored_state() {
    let world = World::new();
    let (mut card, vrf) = voter_card(&world, 4);
    let encoded = card.transport().state().encode();
    let back = CardState::decode(&encoded).unwrap();
    assert_eq!(back.vrf_public_key(), Some(&vrf));
    let info = card.transport().state().clone();
    assert_eq!(info.vrf_public_key(), Some(&vrf));
}

/// Everything a reader without an accreditation can get from a card in one power-on: the
/// answers to SELECT, the NDEF handover, GET DATA, INTERNAL AUTHENTICATE, a session's answer to
/// a request for every element without ReaderAuth, and to a card-management message.
fn stranger_reads(client: &mut CardClient<InProcess>) -> Vec<Vec<u8>> {
    use civis_core::apdu::Command;
    use civis_core::card::{AID_CIVIS, AID_MDOC, AID_NDEF, CLA_PROPRIETARY, ins};
    use civis_firmware_bridge::CardTransport;
    client.transport().reset();
    let mut out = Vec::new();
    let mut send = |client: &mut CardClient<InProcess>, c: Command| {
        out.push(client.transport().transmit(&c.encode().unwrap()).unwrap());
    };
    for aid in [AID_NDEF, AID_MDOC, AID_CIVIS] {
        send(
            client,
            Command::new(0x00, 0xA4, 0x04, 0x00).with_data(aid.to_vec()),
        );
    }
    send(
        client,
        Command::new(CLA_PROPRIETARY, ins::GET_DATA, 0, 0).with_le(256),
    );
    send(
        client,
        Command::new(0x00, ins::INTERNAL_AUTHENTICATE, 0, 0).with_data(vec![7; 16]),
    );
    let engaged = client.read_engagement().unwrap();
    let mut reads = vec![engaged.handover.clone()];
    let (mut session, e_reader, e_bytes) = MdocSession::start(&engaged, &mut OsRng);
    let every: Vec<(String, bool)> = civis_core::mdoc::citizen::ELEMENTS
        .iter()
        .map(|(e, _, _)| ((*e).to_owned(), false))
        .collect();
    let request = DeviceRequest {
        version: "1.0".into(),
        doc_requests: vec![DocRequest {
            items_request: Tagged::new(ItemsRequest {
                doc_type: citizen::DOC_TYPE.into(),
                name_spaces: vec![
                    (NS.into(), every),
                    (
                        evote::NAMESPACE.into(),
                        vec![(evote::PSEUDONYM.into(), false)],
                    ),
                ],
                request_info: None,
            }),
            reader_auth: None,
        }],
    };
    reads.push(
        session
            .establish(client, e_reader.public_key(), e_bytes, &request)
            .unwrap(),
    );
    let (result, _) = session
        .manage(client, "change-pin", ("pin", PIN), "1111")
        .unwrap();
    reads.push(result.into_bytes());
    assert!(
        session
            .authenticate_card(client, &[7; 16])
            .unwrap()
            .is_err(),
        "a stranger got a card signature in the session"
    );
    out.extend(reads);
    out
}

#[test]
fn a_stranger_reading_a_card_twice_gets_nothing_that_stays_the_same() {
    let world = World::new();
    let (mut a, _) = voter_card(&world, 7);
    let (mut b, _) = voter_card(&world, 8);
    let a1 = stranger_reads(&mut a);
    let b1 = stranger_reads(&mut b);
    let a2 = stranger_reads(&mut a);
    assert_eq!(a1.len(), a2.len());
    for (i, (x, y)) in a1.iter().zip(&a2).enumerate() {
        // Whatever is equal across two power-ons of card A is the same for card B: nothing in
        // it tells the cards apart.
        if x == y {
            assert_eq!(
                x, &b1[i],
                "answer {i} is stable for card A and differs for B"
            );
        }
    }
    // GET DATA is sealed afresh at every read; the handover is fresh per power-on; INTERNAL
    // AUTHENTICATE is refused outside an accredited session.
    assert_ne!(a1[3], a2[3]);
    assert_eq!(&a1[4], &[0x69, 0x82]);
    assert_ne!(a1[5], a2[5]);
    // The session answered the stranger with documentErrors 1001 only, and refused management.
    assert_eq!(
        document_error(&a1[6], citizen::DOC_TYPE),
        Some(codes::READER_NOT_AUTHENTICATED)
    );
    assert_eq!(a1[7], b"reader-not-authenticated");
    // The transport-key holder (the issuer) opens the sealed facts; another key does not.
    let sealed = civis_core::card::GetData::decode(&a1[3][..a1[3].len() - 2]).unwrap();
    let info = sealed.clone().open(Some(&world.transport)).unwrap();
    assert_eq!(info.serial, [7; 16]);
    assert!(
        sealed
            .open(Some(&civis_core::card::TransportKey([1; 32])))
            .is_err()
    );
}

#[test]
fn two_elections_logs_share_nothing_that_links_a_voter() {
    // Two voters, two elections, one station: what the two elections' logs hold is one
    // pseudonym per voter per election. No pseudonym of the first log, nor any 8-byte piece of
    // one, is in the second; only a party holding a card's VRF key (or its presentation) can
    // tell which pseudonyms belong together (specs/evote.md §6).
    let world = World::new();
    let station = SoftwareKey::generate(&mut OsRng);
    let st = evote_statement(&world, &station, true);
    let mut logs: Vec<Vec<Pseudonym>> = vec![Vec::new(), Vec::new()];
    for serial in [11, 12] {
        let (mut card, _) = voter_card(&world, serial);
        for (i, election) in ["council-2027", "referendum-2027"].iter().enumerate() {
            let doc = voter_doc(&world, &tap(&mut card, &station, &st, election, Some(PIN)));
            logs[i].push(pseudonym_of(&doc, election).unwrap());
        }
    }
    for a in &logs[0] {
        for b in &logs[1] {
            assert_ne!(a, b);
            for w in a.0.windows(8) {
                assert!(
                    !b.0.windows(8).any(|x| x == w),
                    "a piece of a pseudonym repeats across elections"
                );
            }
        }
    }
    assert_ne!(logs[0][0], logs[0][1], "two voters, one pseudonym");
}
