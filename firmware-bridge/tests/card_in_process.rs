//! The card applet through the reader-side protocol, in process: personalization, reading with
//! ReaderAuth, the PIN, INTERNAL AUTHENTICATE, clones, replays and torn writes.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use civis_core::apdu::{Command, Response, StatusWord};
use civis_core::card::{self, TransportKey};
use civis_core::mdoc::engagement::{STATUS_DECODING_ERROR, STATUS_ENCRYPTION_ERROR};
use civis_firmware_bridge::reader::{CardClient, MdocSession, Personalizer};
use civis_firmware_bridge::transport::InProcess;
use civis_firmware_bridge::{CardTransport, Error};
use civis_wallet_core::applet::{Card, CardState, MemoryNvm};
use civis_wallet_core::holder::codes;
use common::*;
use rand_core::{OsRng, RngCore};

/// The tests' batch transport key: a locked card's GET DATA opens only with it.
const BATCH: TransportKey = TransportKey([0x42; 32]);

fn blank() -> CardClient<InProcess> {
    CardClient::new(InProcess::new(CardState::blank(
        [9; 16],
        TransportKey([0x42; 32]),
    )))
}

/// One tap: a new power-on, then [`read`].
fn tap(
    client: &mut CardClient<InProcess>,
    world: &World,
    elements: &[&str],
    pin: Option<&str>,
    reader_auth: bool,
) -> (
    MdocSession,
    Vec<u8>,
    civis_core::mdoc::SessionTranscript,
    civis_core::mdoc::DeviceRequest,
) {
    client.transport().reset();
    read(client, world, elements, pin, reader_auth)
}

#[test]
fn releases_only_accredited_elements_and_pin_protected_ones_after_the_pin() {
    let world = World::new();
    let mut client = blank();
    world.personalize(&mut client);
    client.transport().reset();
    check_accredited_read_then_pin(&mut client, &world);
}

#[test]
fn without_reader_auth_nothing_is_released() {
    let world = World::new();
    let mut client = blank();
    world.personalize(&mut client);
    let (mut session, response, _, _) = tap(&mut client, &world, &["age_over_18"], None, false);
    // No document at all: no MSO, no device signature, nothing that identifies the card.
    let resp =
        <civis_core::mdoc::DeviceResponse as civis_core::cbor::CborForm>::from_slice(&response)
            .unwrap();
    assert!(resp.documents.is_none(), "a document was returned");
    assert_eq!(
        document_error(&response, civis_core::mdoc::citizen::DOC_TYPE),
        Some(codes::READER_NOT_AUTHENTICATED)
    );
    // An unauthenticated reader cannot spend PIN or PUK tries either.
    let (r, _) = session
        .manage(&mut client, "unblock-pin", ("puk", "0000000000"), "1111")
        .unwrap();
    assert_eq!(r, "reader-not-authenticated");
    tap(
        &mut client,
        &world,
        &["document_number"],
        Some("000000"),
        false,
    );
    let info = client.info_with(&BATCH).unwrap();
    assert_eq!((info.pin_tries, info.puk_tries), (Some(3), Some(10)));
}

#[test]
fn an_accreditation_from_another_root_or_expired_is_not_honoured() {
    let world = World::new();
    let mut client = blank();
    world.personalize(&mut client);
    let refused = |response: &[u8]| {
        assert_eq!(
            document_error(response, civis_core::mdoc::citizen::DOC_TYPE),
            Some(codes::READER_NOT_AUTHENTICATED)
        );
    };
    // Signed by a key outside the card's governance set.
    let rogue = civis_core::crypto::SoftwareKey::generate(&mut OsRng);
    let mut forged = World::new();
    forged.kiosk = world.kiosk.clone();
    forged.statement = accreditation(&rogue, &world.kiosk, &["age_over_18"]);
    refused(&tap(&mut client, &forged, &["age_over_18"], None, true).1);
    // A genuine accreditation of another kiosk key than the one signing ReaderAuth.
    let mut other_key = World::new();
    other_key.governance = world.governance.clone();
    other_key.statement = accreditation(
        &world.governance,
        &civis_core::crypto::SoftwareKey::generate(&mut OsRng),
        &["age_over_18"],
    );
    refused(&tap(&mut client, &other_key, &["age_over_18"], None, true).1);

    // The genuine kiosk read once, so the card's time floor is at its accreditation's
    // notBefore; an accreditation that ended before that is refused.
    let (_, response, transcript, request) = tap(&mut client, &world, &["age_over_18"], None, true);
    assert_eq!(
        disclosed(&world.verify(&response, &transcript, &request).unwrap()[0]),
        ["age_over_18"]
    );
    assert_eq!(client.info_with(&BATCH).unwrap().time_floor, NOW - 86_400);
    let mut stale = World::new();
    stale.governance = world.governance.clone();
    stale.kiosk = world.kiosk.clone();
    stale.statement = accreditation_window(
        &world.governance,
        &world.kiosk,
        &["age_over_18"],
        NOW - 10 * 86_400,
        NOW - 2 * 86_400,
    );
    refused(&tap(&mut client, &stale, &["age_over_18"], None, true).1);
}

/// One PIN attempt on a fresh tap with the power cut at the `cut`-th write of the card from the
/// request on; returns whether the card answered and the PIN tries left after the next tap.
fn torn_pin_attempt(
    client: &mut CardClient<InProcess>,
    world: &World,
    pin: &str,
    cut: u64,
) -> (bool, Option<u8>) {
    client.transport().reset();
    let engaged = client.read_engagement().unwrap();
    let (mut session, e_reader, e_bytes) = MdocSession::start(&engaged, &mut OsRng);
    let request = world.request(
        &session.transcript().clone(),
        &["document_number"],
        Some(pin),
        true,
    );
    client.transport().memory().cut_at(cut);
    let answered = session
        .establish(client, e_reader.public_key(), e_bytes, &request)
        .is_ok();
    client.transport().memory().heal();
    client.transport().reset();
    (answered, client.info_with(&BATCH).unwrap().pin_tries)
}

/// A thief with the card cuts the power as soon as the card starts writing, hoping a wrong guess
/// shows itself by a write that a right one would not make. Both make the same first write, the
/// spent try, before comparing: cut there, neither answers and nothing changed. Cut right after
/// it, the try is gone whatever the guess (both then make one more write: a right PIN's try
/// given back and the read log entry, a wrong one's log entry): no guess is ever judged without
/// costing a try.
#[test]
fn cutting_the_power_during_a_pin_check_saves_no_try() {
    let world = World::new();
    let mut client = blank();
    world.personalize(&mut client);
    // The right PIN, not torn: the try it spent first is given back, in memory too (a new
    // power-on reads 3).
    let (_, response, transcript, request) =
        tap(&mut client, &world, &["document_number"], Some(PIN), true);
    let docs = world.verify(&response, &transcript, &request).unwrap();
    assert_eq!(disclosed(&docs[0]), ["document_number"]);
    client.transport().reset();
    assert_eq!(client.info_with(&BATCH).unwrap().pin_tries, Some(3));
    assert_eq!(
        torn_pin_attempt(&mut client, &world, PIN, 0),
        (false, Some(3))
    );
    assert_eq!(
        torn_pin_attempt(&mut client, &world, "000000", 0),
        (false, Some(3))
    );
    assert_eq!(
        torn_pin_attempt(&mut client, &world, PIN, 1),
        (false, Some(2))
    );
    // A wrong guess, like a right one, now makes a second write (the read log entry, card-
    // applet.md §5.5): cut there, neither is answered, and the try is spent either way.
    assert_eq!(
        torn_pin_attempt(&mut client, &world, "000000", 1),
        (false, Some(1))
    );
    assert_eq!(
        torn_pin_attempt(&mut client, &world, "000000", 2),
        (true, Some(0))
    );
    // Three torn attempts blocked the PIN: the right one no longer releases anything.
    let (_, response, transcript, request) =
        tap(&mut client, &world, &["document_number"], Some(PIN), true);
    let docs = world.verify(&response, &transcript, &request).unwrap();
    assert_eq!(
        withheld(&docs[0], "document_number"),
        Some(codes::PIN_BLOCKED)
    );
}

#[test]
fn three_wrong_pins_block_and_the_puk_unblocks() {
    let world = World::new();
    let mut client = blank();
    world.personalize(&mut client);
    for tries_left in [2u8, 1, 0] {
        let (_, response, transcript, request) = tap(
            &mut client,
            &world,
            &["document_number"],
            Some("000000"),
            true,
        );
        let docs = world.verify(&response, &transcript, &request).unwrap();
        let expected = if tries_left == 0 {
            codes::PIN_BLOCKED
        } else {
            codes::PIN_WRONG
        };
        assert_eq!(withheld(&docs[0], "document_number"), Some(expected));
        assert_eq!(
            client.info_with(&BATCH).unwrap().pin_tries,
            Some(tries_left)
        );
    }
    // Blocked: even the right PIN no longer works.
    let (mut session, response, transcript, request) =
        tap(&mut client, &world, &["document_number"], Some(PIN), true);
    let docs = world.verify(&response, &transcript, &request).unwrap();
    assert_eq!(
        withheld(&docs[0], "document_number"),
        Some(codes::PIN_BLOCKED)
    );
    // A wrong PUK costs a PUK try; the right one sets a new PIN.
    let (r, tries) = session
        .manage(&mut client, "unblock-pin", ("puk", "0000000000"), "1111")
        .unwrap();
    assert_eq!((r.as_str(), tries), ("wrong", Some(9)));
    let (r, tries) = session
        .manage(&mut client, "unblock-pin", ("puk", PUK), "1111")
        .unwrap();
    assert_eq!((r.as_str(), tries), ("ok", Some(3)));
    let (_, response, transcript, request) = tap(
        &mut client,
        &world,
        &["document_number"],
        Some("1111"),
        true,
    );
    let docs = world.verify(&response, &transcript, &request).unwrap();
    assert_eq!(disclosed(&docs[0]), ["document_number"]);
}

#[test]
fn personalization_needs_the_transport_key_and_ends_with_lock() {
    let world = World::new();
    // Without the batch transport key nothing is accepted.
    let mut client = blank();
    let mut wrong = Personalizer::start(&mut client, TransportKey([0x43; 32])).unwrap();
    assert!(matches!(
        wrong.generate_key(),
        Err(Error::Status {
            status: StatusWord::SecurityStatusNotSatisfied,
            ..
        })
    ));
    // A recorded command cannot be replayed: the counter has moved on.
    let mut client = blank();
    let info = client.info_with(&BATCH).unwrap();
    let mac = world.transport.mac(
        &info.serial,
        info.perso_counter,
        [card::CLA_PERSO, card::ins::PUT_DATA, 1, 1],
        b"1234",
    );
    let cmd = Command::new(card::CLA_PERSO, card::ins::PUT_DATA, 1, 1)
        .with_data([b"1234".as_slice(), &mac].concat());
    assert_eq!(client.send(&cmd).unwrap().sw, StatusWord::Ok);
    assert_eq!(
        client.send(&cmd).unwrap().sw,
        StatusWord::SecurityStatusNotSatisfied
    );
    // After LOCK, even correctly MAC'd personalization is refused.
    let mut client = blank();
    let key = world.personalize(&mut client);
    let mut p = Personalizer::start(&mut client, world.transport.clone()).unwrap();
    assert!(matches!(
        p.put_credential(1, &world.credential(&key)),
        Err(Error::Status {
            status: StatusWord::ConditionsNotSatisfied,
            ..
        })
    ));
    assert!(client.info_with(&BATCH).unwrap().locked);
}

#[test]
fn a_credential_for_another_key_is_refused_and_a_clone_fails_device_authentication() {
    let world = World::new();
    let mut genuine = blank();
    let key = world.personalize(&mut genuine);
    // The card only stores credentials bound to its own key.
    let mut other = blank();
    let mut p = Personalizer::start(&mut other, world.transport.clone()).unwrap();
    p.generate_key().unwrap();
    assert!(matches!(
        p.put_credential(0, &world.credential(&key)),
        Err(Error::Status {
            status: StatusWord::IncorrectData,
            ..
        })
    ));
    // A cloner who writes the copied credential into a card of their own (its memory set
    // directly) still cannot sign with the genuine key.
    let mut state = genuine.transport().state().clone();
    let mut clone_source = CardState::blank([8; 16], TransportKey([1; 32]));
    let mut tmp = CardClient::new(InProcess::new(clone_source.clone()));
    let mut p = Personalizer::start(&mut tmp, TransportKey([1; 32])).unwrap();
    p.generate_key().unwrap();
    clone_source = tmp.transport().state().clone();
    clone_source.credentials = state.credentials.clone();
    clone_source.governance = state.governance.take();
    clone_source.locked = true;
    let mut clone = CardClient::new(InProcess::new(clone_source));
    let (_, response, transcript, request) = tap(&mut clone, &world, &["age_over_18"], None, true);
    assert!(
        world.verify(&response, &transcript, &request).is_err(),
        "a clone passed device authentication"
    );
    // INTERNAL AUTHENTICATE tells the two apart as well.
    let mut challenge = [0u8; 32];
    OsRng.fill_bytes(&mut challenge);
    // A locked card answers it only to an accredited reader, inside the session.
    assert!(genuine.internal_authenticate(&challenge).is_err());
    let card_signature = |card: &mut CardClient<InProcess>| {
        let (mut session, ..) = tap(card, &world, &["age_over_18"], None, true);
        let sig = session
            .authenticate_card(card, &challenge)
            .unwrap()
            .unwrap();
        session.end(card).unwrap();
        sig
    };
    let sig = card_signature(&mut genuine);
    card::verify_internal_authenticate(&key, &challenge, &sig).unwrap();
    let sig = card_signature(&mut clone);
    assert!(card::verify_internal_authenticate(&key, &challenge, &sig).is_err());
    // Without an accreditation the session refuses it.
    let (mut session, ..) = tap(&mut genuine, &world, &["age_over_18"], None, false);
    assert_eq!(
        session.authenticate_card(&mut genuine, &challenge).unwrap(),
        Err("reader-not-authenticated".to_owned())
    );
    // The card never signs a caller-chosen message: the signature is over the tagged hash.
    assert!(key.verify_es256(&challenge, &sig).is_err());
}

/// Records every command it passes on.
struct Recorder<'a> {
    inner: &'a mut InProcess,
    log: Vec<Vec<u8>>,
}

impl CardTransport for Recorder<'_> {
    fn transmit(&mut self, command: &[u8]) -> civis_firmware_bridge::Result<Vec<u8>> {
        self.log.push(command.to_vec());
        self.inner.transmit(command)
    }
}

#[test]
fn an_old_sessions_envelope_is_refused() {
    let world = World::new();
    let mut client = blank();
    world.personalize(&mut client);
    client.transport().reset();
    let engaged = client.read_engagement().unwrap();
    let (mut session, e_reader, e_reader_bytes) = MdocSession::start(&engaged, &mut OsRng);
    let request = world.request(session.transcript(), &["age_over_18"], None, true);
    let log = {
        let mut rec = CardClient::new(Recorder {
            inner: client.transport(),
            log: Vec::new(),
        });
        session
            .establish(&mut rec, e_reader.public_key(), e_reader_bytes, &request)
            .unwrap();
        std::mem::take(&mut rec.transport().log)
    };
    let envelopes: Vec<_> = log.iter().filter(|c| c[1] == 0xC3).cloned().collect();
    let status_of = |r: Response| {
        let sd = <civis_core::mdoc::SessionData as civis_core::cbor::CborForm>::from_slice(
            civis_core::apdu::do53_unwrap(&r.data).unwrap(),
        )
        .unwrap();
        sd.status
    };
    // Replayed in the same session: a session is never re-established, and the old
    // ciphertext does not decrypt under the advanced counter.
    let mut last = None;
    for e in &envelopes {
        last = Some(Response::parse(&client.transport().transmit(e).unwrap()).unwrap());
    }
    assert_eq!(status_of(last.unwrap()), Some(STATUS_ENCRYPTION_ERROR));
    // The session is over; replayed again in the same power-on, the establishment is not run
    // a second time (one session per engagement).
    let mut last = None;
    for e in &envelopes {
        last = Some(Response::parse(&client.transport().transmit(e).unwrap()).unwrap());
    }
    assert_eq!(status_of(last.unwrap()), Some(STATUS_ENCRYPTION_ERROR));
    // Garbage as the first message of a fresh engagement is a decoding error.
    client.transport().reset();
    client.read_engagement().unwrap();
    client.select(card::AID_MDOC).unwrap();
    let junk = civis_core::apdu::do53_wrap(&[0xFF, 0x00]).unwrap();
    let r = client
        .send(&Command::new(0, 0xC3, 0, 0).with_data(junk).with_le(256))
        .unwrap();
    assert_eq!(status_of(r), Some(STATUS_DECODING_ERROR));
    // Replayed on the next tap: new engagement keys, so it does not decrypt.
    client.transport().reset();
    client.read_engagement().unwrap();
    client.select(card::AID_MDOC).unwrap();
    let mut last = None;
    for e in &envelopes {
        last = Some(Response::parse(&client.transport().transmit(e).unwrap()).unwrap());
    }
    assert_eq!(status_of(last.unwrap()), Some(STATUS_ENCRYPTION_ERROR));
}

#[test]
fn a_torn_credential_write_leaves_the_old_credential() {
    let world = World::new();
    let mut client = blank();
    let mut p = Personalizer::start(&mut client, world.transport.clone()).unwrap();
    let key = p.generate_key().unwrap();
    let old = world.credential(&key);
    p.put_credential(0, &old).unwrap();
    let new = world.credential(&key);
    assert_ne!(old, new);
    // Build the chained PUT CREDENTIAL by hand and cut the link after each APDU.
    let info = client.info_with(&BATCH).unwrap();
    let mac = world.transport.mac(
        &info.serial,
        info.perso_counter,
        [card::CLA_PERSO, card::ins::PUT_CREDENTIAL, 0, 0],
        &new,
    );
    let data = [new.as_slice(), &mac].concat();
    let chain = civis_core::apdu::chain(
        card::CLA_PERSO,
        card::ins::PUT_CREDENTIAL,
        0,
        0,
        &data,
        255,
        Some(256),
    );
    assert!(chain.len() > 5, "the credential spans several APDUs");
    for cut in 0..chain.len() - 1 {
        client.transport().reset();
        client.select(card::AID_CIVIS).unwrap();
        for cmd in &chain[..=cut] {
            assert!(cmd.encode().unwrap().len() <= 5 + 255 + 1);
            assert_eq!(client.send(cmd).unwrap().sw, StatusWord::Ok);
        }
        assert_eq!(
            client.transport().state().credentials[0].as_deref(),
            Some(old.as_slice()),
            "cut after APDU {cut} changed the credential"
        );
    }
    client.transport().reset();
    client.select(card::AID_CIVIS).unwrap();
    for cmd in &chain {
        assert_eq!(client.send(cmd).unwrap().sw, StatusWord::Ok);
    }
    assert_eq!(
        client.transport().state().credentials[0].as_deref(),
        Some(new.as_slice())
    );
}

#[test]
fn random_apdus_never_panic_and_state_always_decodes() {
    let world = World::new();
    let mut client = blank();
    world.personalize(&mut client);
    let mut card = Card::new(client.transport().state().clone());
    let mut memory = MemoryNvm::new(card.state().clone());
    let mut rng = OsRng;
    for i in 0..5_000u32 {
        let len = (rng.next_u32() % 300) as usize;
        let mut apdu = vec![0u8; len];
        rng.fill_bytes(&mut apdu);
        // Steer some towards real classes and instructions.
        if let Some(b) = apdu.get_mut(0) {
            *b = [0x00, 0x10, 0x80, 0x84, 0x94, *b][(i % 6) as usize];
        }
        if let Some(b) = apdu.get_mut(1) {
            *b = [0xA4, 0xB0, 0xC3, 0xC0, 0xCA, 0x88, 0xDB, *b][(i % 8) as usize];
        }
        let reply = card.process(&apdu, &mut rng, &mut memory).unwrap();
        assert!(reply.len() >= 2);
        assert_eq!(memory.state(), card.state(), "answered before committing");
        let bytes = card.state().encode();
        assert_eq!(&CardState::decode(&bytes).unwrap(), card.state());
        if i % 97 == 0 {
            card.reset();
        }
    }
    // Random bytes never unlocked or re-personalized the card.
    assert!(card.state().locked);
    assert_eq!(
        card.state().credentials,
        client.transport().state().credentials
    );
}

/// RENEW CREDENTIAL with the card's current counter, built by hand: the APDUs to send.
fn renew_chain(
    world: &World,
    client: &mut CardClient<InProcess>,
    sealed_to: &civis_core::crypto::EcPublicKey,
    credential: &[u8],
) -> (Vec<Command>, u32) {
    let info = client.info_with(&BATCH).unwrap();
    let body = card::renewal::seal(
        sealed_to,
        &info.serial,
        info.perso_counter,
        0,
        credential,
        &mut OsRng,
    )
    .unwrap();
    let chain = world.transport.command(
        &info.serial,
        info.perso_counter,
        [card::ins::RENEW_CREDENTIAL, 0, 0],
        &body,
        255,
    );
    (chain, info.perso_counter)
}

fn send_all(client: &mut CardClient<InProcess>, chain: &[Command]) -> Response {
    let mut last = None;
    for cmd in chain {
        let r = client.send(cmd).unwrap();
        if r.sw != StatusWord::Ok {
            return r;
        }
        last = Some(r);
    }
    last.unwrap()
}

#[test]
fn a_locked_cards_credential_is_renewed_sealed_to_it_and_a_tear_keeps_the_old_one() {
    let world = World::new();
    let mut client = blank();
    let key = world.personalize(&mut client);
    let old = client.transport().state().credentials[0].clone().unwrap();
    let new = world.credential(&key);
    let (chain, counter) = renew_chain(&world, &mut client, &key, &new);
    assert!(chain.len() > 5, "the sealed credential spans several APDUs");
    // The credential does not travel in the clear.
    let wire: Vec<u8> = chain.iter().flat_map(|c| c.encode().unwrap()).collect();
    assert!(!wire.windows(32).any(|w| new.windows(32).any(|n| n == w)));

    // The link cut after any APDU of the chain, or the power cut at the card's one write:
    // the old credential stays, whole, and the counter has not moved.
    for cut in 0..chain.len() - 1 {
        client.transport().reset();
        client.select(card::AID_CIVIS).unwrap();
        send_all(&mut client, &chain[..=cut]);
        assert_eq!(client.transport().state().credentials[0], Some(old.clone()));
    }
    client.transport().reset();
    client.select(card::AID_CIVIS).unwrap();
    client.transport().memory().cut_at(0);
    let torn = chain.iter().map(|c| client.send(c)).last().unwrap();
    assert!(torn.is_err(), "a torn write is never answered");
    client.transport().memory().heal();
    client.transport().reset();
    assert_eq!(client.transport().state().credentials[0], Some(old.clone()));
    assert_eq!(client.info_with(&BATCH).unwrap().perso_counter, counter);

    // Whole: the new credential replaces the old and the card signs a receipt for it.
    client.select(card::AID_CIVIS).unwrap();
    let r = send_all(&mut client, &chain);
    assert_eq!(r.sw, StatusWord::Ok);
    card::renewal::verify_receipt(&key, &[9; 16], counter, 0, &new, &r.data).unwrap();
    assert!(card::renewal::verify_receipt(&key, &[9; 16], counter, 0, &old, &r.data).is_err());
    assert_eq!(client.transport().state().credentials[0], Some(new.clone()));
    assert_eq!(client.info_with(&BATCH).unwrap().perso_counter, counter + 1);
    // …and is presented.
    client.transport().reset();
    check_accredited_read_then_pin(&mut client, &world);

    // Replayed: the counter has moved on.
    client.transport().reset();
    client.select(card::AID_CIVIS).unwrap();
    assert_eq!(
        send_all(&mut client, &chain).sw,
        StatusWord::SecurityStatusNotSatisfied
    );
}

#[test]
fn a_renewal_needs_a_locked_card_the_transport_key_and_a_credential_sealed_to_and_bound_to_its_key()
{
    let world = World::new();
    // Before LOCK, RENEW CREDENTIAL is refused (PUT CREDENTIAL is the way).
    let mut client = blank();
    let mut p = Personalizer::start(&mut client, world.transport.clone()).unwrap();
    let key = p.generate_key().unwrap();
    let cred = world.credential(&key);
    assert!(matches!(
        p.renew_credential(0, &key, &cred, &mut OsRng),
        Err(Error::Status {
            status: StatusWord::ConditionsNotSatisfied,
            ..
        })
    ));

    let mut client = blank();
    let key = world.personalize(&mut client);
    let old = client.transport().state().credentials[0].clone().unwrap();
    let stranger = civis_core::crypto::SoftwareKey::generate(&mut OsRng);
    // Under another transport key: the locked card's sealed facts do not even open (no serial,
    // no counter to MAC with), and nothing changes.
    assert!(matches!(
        Personalizer::start(&mut client, TransportKey([0x43; 32])),
        Err(Error::Core(civis_core::Error::Decrypt))
    ));
    let counter = client.info_with(&BATCH).unwrap().perso_counter;
    // Sealed to another card's key, or a credential bound to another key, or another slot
    // than the one sealed for: refused and the counter value used up.
    for (sealed_to, bound_to) in [(stranger.public_key(), &key), (&key, stranger.public_key())] {
        let (chain, _) = renew_chain(&world, &mut client, sealed_to, &world.credential(bound_to));
        assert_eq!(send_all(&mut client, &chain).sw, StatusWord::IncorrectData);
    }
    let info = client.info_with(&BATCH).unwrap();
    let body = card::renewal::seal(
        &key,
        &info.serial,
        info.perso_counter,
        1,
        &world.credential(&key),
        &mut OsRng,
    )
    .unwrap();
    let chain = world.transport.command(
        &info.serial,
        info.perso_counter,
        [card::ins::RENEW_CREDENTIAL, 0, 0],
        &body,
        255,
    );
    assert_eq!(send_all(&mut client, &chain).sw, StatusWord::IncorrectData);
    // A slot past the last, even correctly sealed.
    let mut p = Personalizer::start(&mut client, world.transport.clone()).unwrap();
    assert!(matches!(
        p.renew_credential(4, &key, &world.credential(&key), &mut OsRng),
        Err(Error::Status {
            status: StatusWord::IncorrectP1P2,
            ..
        })
    ));
    assert_eq!(client.info_with(&BATCH).unwrap().perso_counter, counter + 4);
    assert_eq!(client.transport().state().credentials[0], Some(old));
    // The Personalizer's own renewal checks the receipt.
    let new = world.credential(&key);
    let mut p = Personalizer::start(&mut client, world.transport.clone()).unwrap();
    p.renew_credential(0, &key, &new, &mut OsRng).unwrap();
    assert_eq!(client.transport().state().credentials[0], Some(new));
}
