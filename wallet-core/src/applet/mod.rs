//! The citizen-card applet as a sans-IO state machine: APDU in, APDU out.
//!
//! Three applications share the card (specs/card-applet.md):
//! - the NDEF Type 4 Tag, serving the static handover with this tap's DeviceEngagement;
//! - the mdoc application: ENVELOPE / GET RESPONSE carrying ISO 18013-5 session messages;
//! - the Civis application: card info, personalization (MAC'd under the batch transport key,
//!   until LOCK), root rotation and INTERNAL AUTHENTICATE.
//!
//! [`Card`] holds the persistent [`CardState`] and the transient (RAM) state of one power-on.
//! Every command computes its new persistent state before it answers, and reports whether that
//! state changed; the host must store it before sending the answer, which makes every command
//! atomic against tearing.

pub mod state;

use ciborium::Value;
use civis_core::apdu::{self, CLA_CHAINING, Command, Response, ResponseChunker, StatusWord};
use civis_core::card::{
    self, AID_CIVIS, AID_MDOC, AID_NDEF, CHALLENGE_LEN, CLA_PERSO, CLA_PROPRIETARY,
    CREDENTIAL_SLOTS, CardInfo, FILE_CC, FILE_NDEF, MANAGEMENT_KEY, MAX_CREDENTIAL_LEN,
    PERSO_MAC_LEN, PIN_TRIES, PUK_TRIES, REQUEST_INFO_PIN,
};
use civis_core::cbor::{self, CborForm, Limits, access, text, text_map};
use civis_core::cose::{self, Domain};
use civis_core::crypto::SoftwareKey;
use civis_core::kiosk::{self, KioskAccreditation, RootRotation};
use civis_core::mdoc::engagement::{
    STATUS_DECODING_ERROR, STATUS_ENCRYPTION_ERROR, STATUS_TERMINATION,
};
use civis_core::mdoc::{
    DeviceEngagement, DeviceNameSpaces, DeviceRequest, DocRequest, SessionData,
    SessionEstablishment, SessionTranscript,
};
use civis_core::ndef::{self, NfcLimits};
use civis_core::session::{Role, Session};
use rand_core::CryptoRngCore;

use crate::holder::{self, Release, StoredCredential, codes};
pub use state::{CardState, Root, Secret};

/// Applet version reported by GET DATA.
pub const VERSION: &str = "1.0";
/// Largest assembled command chain (a full credential slot plus its MAC).
const MAX_CHAIN: usize = MAX_CREDENTIAL_LEN + PERSO_MAC_LEN;
/// Largest assembled ENVELOPE message.
const MAX_ENVELOPE: usize = 64 * 1024;

/// Which application is selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum App {
    None,
    Ndef,
    Mdoc,
    Civis,
}

/// This tap's engagement: the ephemeral device key and the NDEF file that carries it. Fixed
/// for the whole power-on, so repeated NDEF reads see the same bytes.
struct Engagement {
    e_device: SoftwareKey,
    device_engagement: Vec<u8>,
    handover: Vec<u8>,
    /// A session was established with it: one session per engagement, so a recorded
    /// SessionEstablishment cannot be run again in the same power-on.
    used: bool,
}

/// An established mdoc session.
struct MdocSession {
    session: Session,
    transcript: SessionTranscript,
    pin_verified: bool,
    /// Some request of this session carried a valid kiosk accreditation: only then are a PIN
    /// or card-management messages looked at, so a stray reader cannot use up the tries.
    reader_authenticated: bool,
}

/// RAM: lost on power-off or reset.
struct Transient {
    app: App,
    file: Option<u16>,
    engagement: Option<Engagement>,
    session: Option<MdocSession>,
    chain: Option<([u8; 4], Vec<u8>)>,
    out: ResponseChunker,
}

impl Transient {
    fn new() -> Self {
        Self {
            app: App::None,
            file: None,
            engagement: None,
            session: None,
            chain: None,
            out: ResponseChunker::default(),
        }
    }
}

/// The answer to one command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The response APDU (data ‖ SW1 SW2).
    pub apdu: Vec<u8>,
    /// The persistent state changed: store it before sending `apdu`.
    pub state_changed: bool,
}

/// The card: persistent state plus this power-on's RAM.
pub struct Card {
    state: CardState,
    ram: Transient,
    limits: NfcLimits,
}

fn sw(sw: StatusWord) -> Response {
    Response::status(sw)
}

impl Card {
    /// Power on a card with stored `state`.
    pub fn new(state: CardState) -> Self {
        Self {
            state,
            ram: Transient::new(),
            limits: NfcLimits::EXTENDED,
        }
    }

    /// Advertise other NFC limits in the handover (e.g. [`NfcLimits::SHORT`] for readers
    /// without extended length).
    pub fn with_limits(mut self, limits: NfcLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The persistent state (to store after a command reported a change).
    pub fn state(&self) -> &CardState {
        &self.state
    }

    /// Power-off or reset: RAM is gone, persistent state stays.
    pub fn reset(&mut self) {
        self.ram = Transient::new();
    }

    /// Process one command APDU. Never panics, whatever the bytes.
    pub fn process(&mut self, apdu_bytes: &[u8], rng: &mut impl CryptoRngCore) -> Reply {
        let mut next = self.state.clone();
        let response = match Command::parse(apdu_bytes) {
            Ok(cmd) => self.dispatch(&cmd, &mut next, rng),
            Err(_) => sw(StatusWord::WrongLength),
        };
        let state_changed = next != self.state;
        if state_changed {
            self.state = next;
        }
        Reply {
            apdu: response.encode(),
            state_changed,
        }
    }

    fn dispatch(
        &mut self,
        cmd: &Command,
        next: &mut CardState,
        rng: &mut impl CryptoRngCore,
    ) -> Response {
        let cla = cmd.cla & !CLA_CHAINING;
        // GET RESPONSE continues the pending reply; any other command drops it.
        if cla == 0x00 && cmd.ins == apdu::ins::GET_RESPONSE {
            if !self.ram.out.has_pending() {
                return sw(StatusWord::ConditionsNotSatisfied);
            }
            return self.ram.out.next(cmd.le.unwrap_or(256));
        }
        self.ram.out = ResponseChunker::default();
        if cla == 0x00 && cmd.ins == apdu::ins::SELECT {
            self.ram.chain = None;
            return self.select(cmd, rng);
        }
        // Command chaining: collect the pieces, process the whole on the last one.
        let header = [cla, cmd.ins, cmd.p1, cmd.p2];
        let data = match self.ram.chain.take() {
            Some((h, mut buf)) if h == header => {
                buf.extend_from_slice(&cmd.data);
                buf
            }
            Some(_) if cmd.is_chained() => return sw(StatusWord::LastCommandExpected),
            _ => cmd.data.clone(),
        };
        let limit = if cmd.ins == apdu::ins::ENVELOPE {
            MAX_ENVELOPE
        } else {
            MAX_CHAIN
        };
        if data.len() > limit {
            return sw(StatusWord::WrongLength);
        }
        if cmd.is_chained() {
            self.ram.chain = Some((header, data));
            return sw(StatusWord::Ok);
        }
        match (self.ram.app, cla, cmd.ins) {
            (App::Ndef, 0x00, apdu::ins::READ_BINARY) => self.read_binary(cmd),
            (App::Ndef, 0x00, apdu::ins::UPDATE_BINARY) => sw(StatusWord::ConditionsNotSatisfied),
            (App::Mdoc, 0x00, apdu::ins::ENVELOPE) => {
                let reply = self.envelope(&data, next);
                if reply.is_empty() {
                    return sw(StatusWord::Ok);
                }
                self.ram.out.start(reply, cmd.le.unwrap_or(256))
            }
            (App::Civis, 0x00, card::ins::INTERNAL_AUTHENTICATE) => {
                self.internal_authenticate(&data)
            }
            (App::Civis, CLA_PROPRIETARY, card::ins::GET_DATA) => {
                Response::ok(self.info(next).encode())
            }
            (App::Civis, CLA_PROPRIETARY, card::ins::ROTATE_ROOT) => rotate_root(&data, next),
            (App::Civis, CLA_PERSO, _) => self.personalize(header, &data, next, rng),
            (App::None, _, _) => sw(StatusWord::ConditionsNotSatisfied),
            (_, 0x00 | CLA_PROPRIETARY | CLA_PERSO, _) => sw(StatusWord::InsNotSupported),
            _ => sw(StatusWord::ClaNotSupported),
        }
    }

    fn select(&mut self, cmd: &Command, rng: &mut impl CryptoRngCore) -> Response {
        match cmd.p1 {
            // By name (AID).
            0x04 => {
                let app = match cmd.data.as_slice() {
                    d if d == AID_NDEF => App::Ndef,
                    d if d == AID_MDOC => App::Mdoc,
                    d if d == AID_CIVIS => App::Civis,
                    _ => return sw(StatusWord::NotFound),
                };
                if app == App::Ndef && self.ram.engagement.is_none() {
                    match new_engagement(self.limits, rng) {
                        Ok(e) => self.ram.engagement = Some(e),
                        Err(_) => return sw(StatusWord::Unknown),
                    }
                }
                if app != self.ram.app {
                    self.ram.file = None;
                }
                self.ram.app = app;
                sw(StatusWord::Ok)
            }
            // By file id, inside the NDEF application.
            0x00 if self.ram.app == App::Ndef => match cmd.data.as_slice() {
                [hi, lo] if u16::from_be_bytes([*hi, *lo]) == FILE_CC => {
                    self.ram.file = Some(FILE_CC);
                    sw(StatusWord::Ok)
                }
                [hi, lo] if u16::from_be_bytes([*hi, *lo]) == FILE_NDEF => {
                    self.ram.file = Some(FILE_NDEF);
                    sw(StatusWord::Ok)
                }
                _ => sw(StatusWord::NotFound),
            },
            _ => sw(StatusWord::IncorrectP1P2),
        }
    }

    fn read_binary(&self, cmd: &Command) -> Response {
        let file = match (self.ram.file, &self.ram.engagement) {
            (Some(FILE_CC), Some(e)) => capability_container(e.handover.len()),
            (Some(FILE_NDEF), Some(e)) => {
                let mut f = u16::try_from(e.handover.len())
                    .unwrap_or(u16::MAX)
                    .to_be_bytes()
                    .to_vec();
                f.extend_from_slice(&e.handover);
                f
            }
            _ => return sw(StatusWord::ConditionsNotSatisfied),
        };
        let offset = usize::from(u16::from_be_bytes([cmd.p1 & 0x7F, cmd.p2]));
        if offset > file.len() {
            return sw(StatusWord::WrongParameters);
        }
        let want = usize::try_from(cmd.le.unwrap_or(256)).unwrap_or(usize::MAX);
        let end = offset.saturating_add(want).min(file.len());
        Response::ok(file.get(offset..end).unwrap_or_default().to_vec())
    }

    fn info(&self, state: &CardState) -> CardInfo {
        CardInfo {
            version: VERSION.into(),
            serial: state.serial,
            locked: state.locked,
            perso_counter: state.perso_counter,
            public_key: state.public_key().map(|k| k.uncompressed().to_vec()),
            pin_tries: state.pin.as_ref().map(|p| p.tries_left),
            puk_tries: state.puk.as_ref().map(|p| p.tries_left),
            credentials: state
                .credentials
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_some())
                .filter_map(|(i, _)| u8::try_from(i).ok())
                .collect(),
            has_root: state.root.is_some(),
            time_floor: state.time_floor,
        }
    }

    fn internal_authenticate(&self, challenge: &[u8]) -> Response {
        let Some(key) = &self.state.card_key else {
            return sw(StatusWord::ConditionsNotSatisfied);
        };
        if !CHALLENGE_LEN.contains(&challenge.len()) {
            return sw(StatusWord::WrongLength);
        }
        Response::ok(
            key.sign_es256(&card::internal_authenticate_message(challenge))
                .to_vec(),
        )
    }

    /// Personalization: only before LOCK, and every command MAC'd under the transport key with
    /// the current counter (which then advances, so nothing can be replayed).
    fn personalize(
        &mut self,
        header: [u8; 4],
        data: &[u8],
        next: &mut CardState,
        rng: &mut impl CryptoRngCore,
    ) -> Response {
        if next.locked {
            return sw(StatusWord::ConditionsNotSatisfied);
        }
        let Some(split) = data.len().checked_sub(PERSO_MAC_LEN) else {
            return sw(StatusWord::SecurityStatusNotSatisfied);
        };
        let (body, mac) = data.split_at(split);
        if !next
            .transport_key
            .check(&next.serial, next.perso_counter, header, body, mac)
        {
            return sw(StatusWord::SecurityStatusNotSatisfied);
        }
        let before = next.clone();
        // The counter never wraps: a card that used up 2^32 MACs personalizes no more.
        let Some(advanced) = next.perso_counter.checked_add(1) else {
            return sw(StatusWord::ConditionsNotSatisfied);
        };
        let result = perso_command(header, body, next, rng);
        match result {
            Ok(data) => {
                next.perso_counter = advanced;
                Response::ok(data)
            }
            Err(status) => {
                // A refused command (after its MAC passed) changes nothing but still uses up
                // its counter value.
                *next = before;
                next.perso_counter = advanced;
                sw(status)
            }
        }
    }

    /// One assembled ENVELOPE message; returns the DO'53' reply (empty: answer 9000 only).
    fn envelope(&mut self, data: &[u8], next: &mut CardState) -> Vec<u8> {
        let Ok(message) = apdu::do53_unwrap(data) else {
            return self.status_reply(STATUS_DECODING_ERROR);
        };
        let plaintext = if self.ram.session.is_none() {
            // A termination after the card already ended the session needs no answer.
            if let Ok(SessionData {
                data: None,
                status: Some(STATUS_TERMINATION),
            }) = SessionData::from_slice(message)
            {
                return Vec::new();
            }
            let Some(engagement) = self.ram.engagement.as_ref().filter(|e| !e.used) else {
                // No fresh engagement this tap: nothing the reader could have encrypted for.
                return self.status_reply(STATUS_ENCRYPTION_ERROR);
            };
            let Ok(est) = SessionEstablishment::from_slice(message) else {
                return self.status_reply(STATUS_DECODING_ERROR);
            };
            let transcript = SessionTranscript::new(
                Some(&engagement.device_engagement),
                Some(&est.e_reader_key_bytes),
                Value::Array(vec![Value::Bytes(engagement.handover.clone()), Value::Null]),
            );
            let mut session = Session::new(
                Role::Device,
                &engagement.e_device,
                &est.e_reader_key,
                &transcript.tagged_bytes(),
            );
            let Ok(plaintext) = session.decrypt(&est.data) else {
                return self.status_reply(STATUS_ENCRYPTION_ERROR);
            };
            // Only an establishment that decrypts uses the engagement up, so a stray reader
            // cannot spoil the tap by sending garbage first.
            if let Some(e) = self.ram.engagement.as_mut() {
                e.used = true;
            }
            self.ram.session = Some(MdocSession {
                session,
                transcript,
                pin_verified: false,
                reader_authenticated: false,
            });
            plaintext
        } else {
            // A second SessionEstablishment decodes as SessionData here (its `data` then fails
            // to decrypt under the advanced counter): a session is never re-keyed.
            let Ok(sd) = SessionData::from_slice(message) else {
                return self.status_reply(STATUS_DECODING_ERROR);
            };
            if sd.status == Some(STATUS_TERMINATION) || sd.data.is_none() {
                self.ram.session = None;
                return Vec::new();
            }
            let Some(s) = self.ram.session.as_mut() else {
                return self.status_reply(STATUS_ENCRYPTION_ERROR);
            };
            match s.session.decrypt(sd.data.as_deref().unwrap_or_default()) {
                Ok(p) => p,
                Err(_) => return self.status_reply(STATUS_ENCRYPTION_ERROR),
            }
        };
        let answer = match self.handle_message(&plaintext, next) {
            Some(a) => a,
            None => return self.status_reply(STATUS_DECODING_ERROR),
        };
        let Some(s) = self.ram.session.as_mut() else {
            return self.status_reply(STATUS_ENCRYPTION_ERROR);
        };
        let Ok(ciphertext) = s.session.encrypt(&answer) else {
            return self.status_reply(STATUS_ENCRYPTION_ERROR);
        };
        let reply = SessionData {
            data: Some(ciphertext),
            status: None,
        };
        apdu::do53_wrap(&reply.to_vec()).unwrap_or_default()
    }

    /// A SessionData with only a status; any status ends the session.
    fn status_reply(&mut self, status: u64) -> Vec<u8> {
        self.ram.session = None;
        let reply = SessionData {
            data: None,
            status: Some(status),
        };
        apdu::do53_wrap(&reply.to_vec()).unwrap_or_default()
    }

    /// A decrypted message: a DeviceRequest, or a card-management message.
    fn handle_message(&mut self, plaintext: &[u8], next: &mut CardState) -> Option<Vec<u8>> {
        let value = cbor::decode("session message", plaintext, Limits::new(MAX_ENVELOPE)).ok()?;
        let map = access::map("session message", &value).ok()?;
        if let Ok(Some(m)) = access::get("session message", map, MANAGEMENT_KEY) {
            let answer = self.manage(m, next);
            return Some(cbor::encode(&text_map(vec![(MANAGEMENT_KEY, answer)])));
        }
        let request = DeviceRequest::from_value(&value).ok()?;
        self.device_response(&request, next).ok()
    }

    fn device_response(
        &mut self,
        request: &DeviceRequest,
        next: &mut CardState,
    ) -> crate::Result<Vec<u8>> {
        let session = self
            .ram
            .session
            .as_mut()
            .ok_or_else(|| crate::Error::State("no session".into()))?;
        let readers: Vec<Option<KioskAccreditation>> = request
            .doc_requests
            .iter()
            .map(|d| check_reader(d, &session.transcript, next))
            .collect();
        if readers.iter().any(Option::is_some) {
            session.reader_authenticated = true;
        }
        // The PIN travels in requestInfo, so only inside the encrypted session, and counts
        // only from an accredited reader.
        let mut pin_result = None;
        // The PIN counts only from a DocRequest whose own ReaderAuth verified, so a kiosk
        // signature always covers it.
        let pin = request
            .doc_requests
            .iter()
            .zip(&readers)
            .find_map(|(d, r)| r.as_ref().and(presented_pin(d)));
        if let Some(pin) = pin {
            let r = verify_secret(next, SecretKind::Pin, pin.as_bytes());
            session.pin_verified = r == SecretCheck::Ok;
            pin_result = Some(r);
        }
        let credentials: Vec<StoredCredential> = next
            .credentials
            .iter()
            .flatten()
            .filter_map(|c| StoredCredential::from_bytes(c).ok())
            .collect();
        let pin_verified = session.pin_verified;
        let pin_elements = next.pin_elements.clone();
        let key = next
            .card_key
            .clone()
            .ok_or_else(|| crate::Error::State("no card key".into()))?;
        let response = holder::respond(
            &credentials,
            request,
            &session.transcript,
            &key,
            &|index| match (readers.get(index), request.doc_requests.get(index)) {
                // A docType the accreditation does not cover gets no Document either: not even
                // the MSO of a credential the kiosk may not read.
                (Some(Some(acc)), Some(d)) => {
                    let doc_type = &d.items_request.inner().doc_type;
                    (!acc.grants.iter().any(|(dt, _)| dt == doc_type))
                        .then_some(codes::NOT_ACCREDITED)
                }
                _ => Some(codes::READER_NOT_AUTHENTICATED),
            },
            &mut |item| {
                let Some(Some(acc)) = readers.get(item.doc_request) else {
                    return Release::Withhold(codes::READER_NOT_AUTHENTICATED);
                };
                if !acc.allows(item.doc_type, item.namespace, item.element) {
                    return Release::Withhold(codes::NOT_ACCREDITED);
                }
                let protected = pin_elements
                    .iter()
                    .any(|(n, e)| n == item.namespace && e == item.element);
                if protected && !pin_verified {
                    return Release::Withhold(match pin_result {
                        Some(SecretCheck::Wrong) => codes::PIN_WRONG,
                        Some(SecretCheck::Blocked) => codes::PIN_BLOCKED,
                        _ => codes::PIN_REQUIRED,
                    });
                }
                Release::Release
            },
            &|_| DeviceNameSpaces::default(),
        )?;
        Ok(response.to_vec())
    }

    /// Card management inside the session: change or unblock the PIN. Only after a request of
    /// this session proved a kiosk accreditation.
    fn manage(&mut self, message: &Value, next: &mut CardState) -> Value {
        const W: &str = "card management";
        let authenticated = self
            .ram
            .session
            .as_ref()
            .is_some_and(|s| s.reader_authenticated);
        let result = (|| -> Option<(&'static str, Option<u8>)> {
            if !authenticated {
                return Some(("reader-not-authenticated", None));
            }
            let m = access::map(W, message).ok()?;
            let op = access::text(W, access::req(W, m, "op").ok()?).ok()?;
            let new_pin = access::text(W, access::req(W, m, "newPin").ok()?).ok()?;
            if !valid_digits(new_pin, 4..=12) {
                return Some(("invalid-pin", None));
            }
            let (kind, presented) = match op {
                "change-pin" => (
                    SecretKind::Pin,
                    access::text(W, access::req(W, m, "pin").ok()?).ok()?,
                ),
                "unblock-pin" => (
                    SecretKind::Puk,
                    access::text(W, access::req(W, m, "puk").ok()?).ok()?,
                ),
                _ => return Some(("unknown-op", None)),
            };
            let check = verify_secret(next, kind, presented.as_bytes());
            let tries = |s: &Option<Secret>| s.as_ref().map(|s| s.tries_left);
            Some(match check {
                SecretCheck::Ok => {
                    next.pin = Some(Secret {
                        hash: Secret::hash("pin", &next.serial, new_pin.as_bytes()),
                        tries_left: PIN_TRIES,
                    });
                    if let Some(s) = self.ram.session.as_mut() {
                        s.pin_verified = true;
                    }
                    ("ok", tries(&next.pin))
                }
                SecretCheck::Wrong => {
                    if let Some(s) = self.ram.session.as_mut() {
                        s.pin_verified = false;
                    }
                    (
                        "wrong",
                        tries(if kind == SecretKind::Pin {
                            &next.pin
                        } else {
                            &next.puk
                        }),
                    )
                }
                SecretCheck::Blocked => ("blocked", Some(0)),
                SecretCheck::NotSet => ("not-set", None),
            })
        })();
        let (status, tries) = result.unwrap_or(("malformed", None));
        let mut e = vec![("result", text(status))];
        if let Some(t) = tries {
            e.push(("triesLeft", Value::Integer(t.into())));
        }
        text_map(e)
    }
}

fn capability_container(ndef_len: usize) -> Vec<u8> {
    // Mapping 2.0, MLe = MLc = 0x7FFF, NDEF file E104 of NLEN + message, read free, no write.
    let max = u16::try_from(ndef_len.saturating_add(2)).unwrap_or(u16::MAX);
    let mut cc = vec![0x00, 0x0F, 0x20, 0x7F, 0xFF, 0x7F, 0xFF, 0x04, 0x06];
    cc.extend_from_slice(&FILE_NDEF.to_be_bytes());
    cc.extend_from_slice(&max.to_be_bytes());
    cc.extend_from_slice(&[0x00, 0xFF]);
    cc
}

fn new_engagement(
    limits: NfcLimits,
    rng: &mut impl CryptoRngCore,
) -> civis_core::Result<Engagement> {
    let e_device = SoftwareKey::generate(rng);
    let device_engagement = DeviceEngagement::new(e_device.public_key()).to_vec();
    let handover = ndef::static_handover(&device_engagement, limits)?;
    Ok(Engagement {
        e_device,
        device_engagement,
        handover,
        used: false,
    })
}

fn presented_pin(doc_request: &DocRequest) -> Option<String> {
    let info = doc_request.items_request.inner().request_info.as_ref()?;
    let map = access::map("requestInfo", info).ok()?;
    access::get("requestInfo", map, REQUEST_INFO_PIN)
        .ok()
        .flatten()?
        .as_text()
        .map(str::to_owned)
}

/// The accreditation a DocRequest's ReaderAuth proves, or `None`. On success the card's time
/// floor moves up to the accreditation's notBefore (a time governance vouched has come).
fn check_reader(
    doc_request: &DocRequest,
    transcript: &SessionTranscript,
    next: &mut CardState,
) -> Option<KioskAccreditation> {
    let auth = &doc_request.reader_auth.as_ref()?.cose;
    let root = next.root.as_ref()?;
    if auth.payload.is_some() {
        return None;
    }
    let statement = kiosk::attached(auth).ok()??;
    let acc = KioskAccreditation::verify_sign1(&statement, &root.key).ok()?;
    if acc.chain != root.chain || acc.not_after <= next.time_floor {
        return None;
    }
    cose::check_alg(auth).ok()?;
    let payload = transcript.reader_authentication_bytes(&doc_request.items_request);
    cose::verify_sign1(auth, &acc.key, Domain::IsoReaderAuth, Some(&payload)).ok()?;
    next.time_floor = next.time_floor.max(acc.not_before);
    Some(acc)
}

fn rotate_root(data: &[u8], next: &mut CardState) -> Response {
    let Some(root) = next.root.clone() else {
        return sw(StatusWord::ConditionsNotSatisfied);
    };
    match RootRotation::verify(data, &root.key) {
        Ok(r) if r.chain == root.chain && r.sequence > root.rotation => {
            next.root = Some(Root {
                chain: root.chain,
                key: r.new_root,
                rotation: r.sequence,
            });
            sw(StatusWord::Ok)
        }
        Ok(_) => sw(StatusWord::ConditionsNotSatisfied),
        Err(_) => sw(StatusWord::SecurityStatusNotSatisfied),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecretKind {
    Pin,
    Puk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SecretCheck {
    Ok,
    Wrong,
    Blocked,
    NotSet,
}

/// Check a PIN or PUK: a blocked secret is never compared; a wrong one costs a try; a right one
/// restores its tries.
fn verify_secret(next: &mut CardState, kind: SecretKind, presented: &[u8]) -> SecretCheck {
    let serial = next.serial;
    let (slot, name, max) = match kind {
        SecretKind::Pin => (&mut next.pin, "pin", PIN_TRIES),
        SecretKind::Puk => (&mut next.puk, "puk", PUK_TRIES),
    };
    let Some(secret) = slot.as_mut() else {
        return SecretCheck::NotSet;
    };
    if secret.tries_left == 0 {
        return SecretCheck::Blocked;
    }
    if secret.matches(name, &serial, presented) {
        secret.tries_left = max;
        SecretCheck::Ok
    } else {
        secret.tries_left = secret.tries_left.saturating_sub(1);
        if secret.tries_left == 0 {
            SecretCheck::Blocked
        } else {
            SecretCheck::Wrong
        }
    }
}

fn valid_digits(s: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// The personalization commands proper, after the MAC passed.
fn perso_command(
    header: [u8; 4],
    body: &[u8],
    next: &mut CardState,
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<u8>, StatusWord> {
    let [_, ins, p1, p2] = header;
    match ins {
        card::ins::GENERATE_KEY => {
            if next.card_key.is_some() {
                return Err(StatusWord::ConditionsNotSatisfied);
            }
            let key = SoftwareKey::generate(rng);
            let public = key.public_key().uncompressed().to_vec();
            next.card_key = Some(key);
            Ok(public)
        }
        card::ins::PUT_DATA => {
            match u16::from_be_bytes([p1, p2]) {
                card::item::PIN => {
                    let pin = std::str::from_utf8(body).map_err(|_| StatusWord::IncorrectData)?;
                    if !valid_digits(pin, 4..=12) {
                        return Err(StatusWord::IncorrectData);
                    }
                    next.pin = Some(Secret {
                        hash: Secret::hash("pin", &next.serial, body),
                        tries_left: PIN_TRIES,
                    });
                }
                card::item::PUK => {
                    let puk = std::str::from_utf8(body).map_err(|_| StatusWord::IncorrectData)?;
                    if !valid_digits(puk, 8..=16) {
                        return Err(StatusWord::IncorrectData);
                    }
                    next.puk = Some(Secret {
                        hash: Secret::hash("puk", &next.serial, body),
                        tries_left: PUK_TRIES,
                    });
                }
                card::item::ROOT => {
                    let (chain, key) =
                        card::root_from_bytes(body).map_err(|_| StatusWord::IncorrectData)?;
                    next.root = Some(Root {
                        chain,
                        key,
                        rotation: 0,
                    });
                }
                card::item::PIN_ELEMENTS => {
                    next.pin_elements = card::pin_elements_from_bytes(body)
                        .map_err(|_| StatusWord::IncorrectData)?;
                }
                _ => return Err(StatusWord::IncorrectP1P2),
            }
            Ok(Vec::new())
        }
        card::ins::PUT_CREDENTIAL => {
            let slot = usize::from(p1);
            if p1 >= CREDENTIAL_SLOTS || p2 != 0 {
                return Err(StatusWord::IncorrectP1P2);
            }
            let Some(public) = next.public_key() else {
                return Err(StatusWord::ConditionsNotSatisfied);
            };
            if body.is_empty() {
                // An empty body clears the slot.
                if let Some(s) = next.credentials.get_mut(slot) {
                    *s = None;
                }
                return Ok(Vec::new());
            }
            if body.len() > MAX_CREDENTIAL_LEN {
                return Err(StatusWord::WrongLength);
            }
            // Only a credential bound to this card's key: anything else could never be
            // presented, and storing it would waste a slot.
            let credential =
                StoredCredential::from_bytes(body).map_err(|_| StatusWord::IncorrectData)?;
            let bound = civis_core::mdoc::MobileSecurityObject::from_issuer_auth(
                &credential.issuer_signed.issuer_auth,
            )
            .and_then(|m| m.device_public_key())
            .map_err(|_| StatusWord::IncorrectData)?;
            if &bound != public {
                return Err(StatusWord::IncorrectData);
            }
            if let Some(s) = next.credentials.get_mut(slot) {
                *s = Some(body.to_vec());
            }
            Ok(Vec::new())
        }
        card::ins::LOCK => {
            // A locked card without a PUK could never unblock its PIN.
            if next.card_key.is_none()
                || next.root.is_none()
                || next.pin.is_none()
                || next.puk.is_none()
            {
                return Err(StatusWord::ConditionsNotSatisfied);
            }
            next.locked = true;
            Ok(Vec::new())
        }
        _ => Err(StatusWord::InsNotSupported),
    }
}
