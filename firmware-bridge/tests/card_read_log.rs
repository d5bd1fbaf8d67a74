//! The card's read log (card-applet.md §5.5): every accredited read logged in the same state
//! write as the answer, the newest 32 kept, shown to the holder only after the PIN.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs
)]

mod common;

use civis_core::card::{READ_LOG_LEN, ReadLogEntry, TransportKey};
use civis_core::crypto::SoftwareKey;
use civis_core::mdoc::citizen;
use civis_firmware_bridge::CardTransport;
use civis_firmware_bridge::reader::{CardClient, MdocSession};
use civis_firmware_bridge::transport::InProcess;
use civis_wallet_core::applet::{CardState, MAX_STATE_LEN};
use common::*;
use rand_core::OsRng;

fn kiosk(world: &World, purpose: &str, elements: &[&str]) -> (SoftwareKey, Vec<u8>) {
    let key = SoftwareKey::generate(&mut OsRng);
    let statement = civis_core::kiosk::KioskAccreditation {
        chain: CHAIN.into(),
        kiosk: did_of(&key),
        key: key.public_key().clone(),
        grants: vec![(
            citizen::DOC_TYPE.into(),
            vec![(
                NS.into(),
                elements.iter().map(|e| (*e).to_owned()).collect(),
            )],
        )],
        purpose: purpose.into(),
        not_before: NOW - 86_400,
        not_after: NOW + 86_400,
    }
    .sign(&did_of(&world.governance).key_url(1), &world.governance)
    .unwrap();
    (key, statement)
}

fn did(key: &SoftwareKey) -> String {
    did_of(key).to_string()
}

/// A tap (new power-on) by `k` asking for `elements`, with the PIN or not; returns the open
/// session.
fn read_by<T: CardTransport>(
    client: &mut CardClient<T>,
    k: &(SoftwareKey, Vec<u8>),
    elements: &[&str],
    pin: Option<&str>,
) -> MdocSession {
    let items = civis_core::mdoc::ItemsRequest {
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
    let engaged = client.read_engagement().unwrap();
    let (mut session, e_reader, e_bytes) = MdocSession::start(&engaged, &mut OsRng);
    let doc = civis_core::mdoc::reader_auth::sign_with_accreditation(
        items,
        session.transcript(),
        &k.0,
        &k.1,
    )
    .unwrap();
    let request = civis_core::mdoc::DeviceRequest {
        version: "1.0".into(),
        doc_requests: vec![doc],
    };
    session
        .establish(client, e_reader.public_key(), e_bytes, &request)
        .unwrap();
    session
}

fn card(world: &World) -> CardClient<InProcess> {
    let mut c = CardClient::new(InProcess::new(CardState::blank(
        [4; 16],
        TransportKey([0x42; 32]),
    )));
    world.personalize(&mut c);
    c
}

#[test]
fn the_holder_sees_who_read_the_card_in_order_after_the_pin_only() {
    let world = World::new();
    let mut c = CardClient::new(InProcess::new(CardState::blank(
        [4; 16],
        TransportKey([0x42; 32]),
    )));
    world.personalize(&mut c);
    let library = kiosk(&world, "library card", &["age_over_18", "given_name"]);
    let bar = kiosk(&world, "age check", &["age_over_18"]);
    let office = kiosk(&world, "review my card's log", &["age_over_18"]);
    for (k, els) in [
        (&library, &["given_name", "family_name"][..]),
        (&bar, &["age_over_18"][..]),
    ] {
        c.transport().reset();
        let s = read_by(&mut c, k, els, None);
        s.end(&mut c).unwrap();
    }
    // Without the PIN, and from a stranger, the log stays closed.
    c.transport().reset();
    let mut s = read_by(&mut c, &office, &["age_over_18"], None);
    assert_eq!(s.read_log(&mut c).unwrap(), Err("pin-required".to_owned()));
    s.end(&mut c).unwrap();
    c.transport().reset();
    let (mut s, ..) = read(&mut c, &world, &["age_over_18"], None, false);
    assert_eq!(
        s.read_log(&mut c).unwrap(),
        Err("reader-not-authenticated".to_owned())
    );
    // With the PIN: newest first, the reader, its purpose, what it got.
    c.transport().reset();
    let mut s = read_by(&mut c, &office, &["age_over_18"], Some(PIN));
    let log = s.read_log(&mut c).unwrap().unwrap();
    let who: Vec<(&str, &str, Vec<String>)> = log
        .iter()
        .map(|e| (e.kiosk.as_str(), e.purpose.as_str(), e.released.clone()))
        .collect();
    let (o, b, l) = (did(&office.0), did(&bar.0), did(&library.0));
    assert_eq!(
        who,
        [
            (
                o.as_str(),
                "review my card's log",
                vec!["age_over_18".to_owned()]
            ),
            (
                o.as_str(),
                "review my card's log",
                vec!["age_over_18".to_owned()]
            ),
            (b.as_str(), "age check", vec!["age_over_18".to_owned()]),
            // family_name was not granted: only given_name was released.
            (l.as_str(), "library card", vec!["given_name".to_owned()]),
        ]
    );
    assert!(log.windows(2).all(|w| w[0].seq == w[1].seq + 1));
    assert!(log.iter().all(|e| e.floor == NOW - 86_400));
}

/// A blocked PIN is told apart from a wrong one, so the holder is sent to unblock it with the
/// PUK instead of trying again; the log stays closed until then, and opens after.
#[test]
fn a_blocked_pin_says_blocked_and_the_log_opens_after_the_puk() {
    let world = World::new();
    let mut c = card(&world);
    let office = kiosk(&world, "review my card's log", &["age_over_18"]);
    for left in (0..civis_core::card::PIN_TRIES).rev() {
        c.transport().reset();
        let mut s = read_by(&mut c, &office, &["age_over_18"], Some("000000"));
        // The wrong PIN that uses the last try already says so.
        let said = if left == 0 {
            "pin-blocked"
        } else {
            "pin-required"
        };
        assert_eq!(s.read_log(&mut c).unwrap(), Err(said.to_owned()));
    }
    // Now even the right PIN is not checked: the card says the PIN is blocked.
    c.transport().reset();
    let mut s = read_by(&mut c, &office, &["age_over_18"], Some(PIN));
    assert_eq!(s.read_log(&mut c).unwrap(), Err("pin-blocked".to_owned()));
    // Without a PIN in the session, nothing about the PIN's state is said.
    c.transport().reset();
    let mut s = read_by(&mut c, &office, &["age_over_18"], None);
    assert_eq!(s.read_log(&mut c).unwrap(), Err("pin-required".to_owned()));
    // The PUK unblocks it in the session, and the log opens.
    c.transport().reset();
    let mut s = read_by(&mut c, &office, &["age_over_18"], Some(PIN));
    assert_eq!(
        s.manage(&mut c, "unblock-pin", ("puk", PUK), "135790")
            .unwrap()
            .0,
        "ok"
    );
    let log = s.read_log(&mut c).unwrap().unwrap();
    assert_eq!(log.len(), civis_core::card::PIN_TRIES as usize + 3);
}

#[test]
fn the_log_keeps_the_newest_entries_and_fits_the_card_when_full() {
    let world = World::new();
    let mut c = card(&world);
    let k = kiosk(&world, "counter", &["age_over_18"]);
    for _ in 0..READ_LOG_LEN + 8 {
        c.transport().reset();
        read_by(&mut c, &k, &["age_over_18"], None)
            .end(&mut c)
            .unwrap();
    }
    let state = c.transport().state().clone();
    assert_eq!(state.read_log.len(), READ_LOG_LEN);
    assert_eq!(state.read_log.first().unwrap().seq, 9);
    assert_eq!(
        state.read_log.last().unwrap().seq,
        (READ_LOG_LEN + 8) as u64
    );
    // The worst case: every slot holding a 16 KiB credential and every entry at its sizes.
    let mut full = state;
    for slot in &mut full.credentials {
        *slot = Some(vec![0xA5; civis_core::card::MAX_CREDENTIAL_LEN]);
    }
    // PIN elements at their 8 KiB limit.
    full.pin_elements = (0..120)
        .map(|i| (format!("{i:0>30}"), format!("{i:0>30}")))
        .collect();
    assert!(civis_core::card::pin_elements_value(&full.pin_elements).len() <= 8 * 1024);
    let big: Vec<String> = (0..40).map(|i| format!("{i:0>60}")).collect();
    full.read_log = (0..READ_LOG_LEN as u64)
        .map(|i| ReadLogEntry::new(i, i64::MAX, &"k".repeat(500), &"p".repeat(500), &big))
        .collect();
    let len = full.encode().len();
    assert!(len <= MAX_STATE_LEN, "{len} bytes");
    println!("worst-case state with a full log: {len} of {MAX_STATE_LEN} bytes");
}

#[test]
fn a_cut_after_any_apdu_or_during_the_write_leaves_the_log_whole() {
    let world = World::new();
    let k = kiosk(&world, "counter", &["age_over_18"]);
    let mut base = card(&world);
    let state = base.transport().state().clone();
    // Count the APDUs of one read.
    let mut probe = CardClient::new(InProcess::new(state.clone()));
    let _ = probe.take_stats();
    read_by(&mut probe, &k, &["age_over_18"], None)
        .end(&mut probe)
        .unwrap();
    let apdus = usize::try_from(probe.take_stats().apdus).unwrap();
    assert!(apdus > 4);
    // The link cut after each APDU: the log has the read exactly when the answer to the
    // request was produced, and is never half written.
    let mut logged_at = Vec::new();
    for cut in 0..=apdus {
        let mut t = InProcess::new(state.clone());
        let mut client = CardClient::new(LimitedLink::new(&mut t, cut));
        let engaged = client.read_engagement();
        if let Ok(engaged) = engaged {
            let (mut session, e_reader, e_bytes) = MdocSession::start(&engaged, &mut OsRng);
            let doc = civis_core::mdoc::reader_auth::sign_with_accreditation(
                civis_core::mdoc::ItemsRequest {
                    doc_type: citizen::DOC_TYPE.into(),
                    name_spaces: vec![(NS.into(), vec![("age_over_18".into(), false)])],
                    request_info: None,
                },
                session.transcript(),
                &k.0,
                &k.1,
            )
            .unwrap();
            let request = civis_core::mdoc::DeviceRequest {
                version: "1.0".into(),
                doc_requests: vec![doc],
            };
            let _ = session.establish(&mut client, e_reader.public_key(), e_bytes, &request);
        }
        let _ = client;
        let after = CardState::decode(&t.memory().state().encode()).unwrap();
        let before = state.read_log.len();
        assert!(
            after.read_log.len() == before || after.read_log.len() == before + 1,
            "cut {cut}"
        );
        if let Some(e) = after
            .read_log
            .last()
            .filter(|_| after.read_log.len() > before)
        {
            assert_eq!(e.released, ["age_over_18"]);
            assert_eq!(e.kiosk, did(&k.0));
            logged_at.push(cut);
        }
    }
    // Logged exactly from the APDU that carried the request on: once the card answered it.
    assert!(
        !logged_at.is_empty() && logged_at.contains(&apdus),
        "{logged_at:?}"
    );
    assert!(logged_at.windows(2).all(|w| w[1] == w[0] + 1));
    assert!(!logged_at.contains(&0));
    // Power lost during the write itself: the old state, log included, or the new one.
    for n in 0..3 {
        let mut t = InProcess::new(state.clone());
        t.memory().cut_at(n);
        let mut client = CardClient::new(t);
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            read_by(&mut client, &k, &["age_over_18"], None)
        }));
        let held = client.transport().memory().state().clone();
        // The read's only write is the one that logs it: cut there, nothing; past it, all.
        let expected = state.read_log.len() + usize::from(n > 0);
        assert_eq!(held.read_log.len(), expected, "cut at write {n}");
        assert!(CardState::decode(&held.encode()).is_ok());
    }
}

/// A link that carries `limit` APDUs, then fails (the card left the field).
struct LimitedLink<'a> {
    inner: &'a mut InProcess,
    left: usize,
}

impl<'a> LimitedLink<'a> {
    fn new(inner: &'a mut InProcess, limit: usize) -> Self {
        Self { inner, left: limit }
    }
}

impl CardTransport for LimitedLink<'_> {
    fn transmit(&mut self, command: &[u8]) -> civis_firmware_bridge::Result<Vec<u8>> {
        if self.left == 0 {
            return Err(civis_firmware_bridge::Error::Link("cut".into()));
        }
        self.left -= 1;
        self.inner.transmit(command)
    }
}
