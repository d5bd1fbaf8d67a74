//! The mdoc application: ENVELOPE / GET RESPONSE carrying ISO 18013-5 session messages,
//! ReaderAuth against the kiosk accreditation, release of accredited elements only, and card
//! management (PIN change and unblock) inside the encrypted session.

use ciborium::Value;
use civis_core::apdu;
use civis_core::card::{MANAGEMENT_KEY, PIN_TRIES, READ_LOG_LEN, REQUEST_INFO_PIN, ReadLogEntry};
use civis_core::cbor::{self, CborForm, Limits, access, text, text_map};
use civis_core::cose::{self, Domain};
use civis_core::evote;
use civis_core::kiosk::{self, KioskAccreditation};
use civis_core::mdoc::citizen;
use civis_core::mdoc::engagement::{
    STATUS_DECODING_ERROR, STATUS_ENCRYPTION_ERROR, STATUS_TERMINATION,
};
use civis_core::mdoc::{
    DeviceRequest, DocRequest, SessionData, SessionEstablishment, SessionTranscript,
};
use civis_core::session::{Role, Session};

use super::secrets::{SecretCheck, SecretKind, valid_digits, verify_secret};
use super::{Card, CardState, MAX_ENVELOPE, MdocSession, Nvm, Secret};
use crate::holder::{self, Release, StoredCredential, codes};

impl Card {
    /// One assembled ENVELOPE message; returns the DO'53' reply (empty: answer 9000 only).
    pub(super) fn envelope(
        &mut self,
        data: &[u8],
        next: &mut CardState,
        nvm: &mut dyn Nvm,
    ) -> Vec<u8> {
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
                pin_blocked: false,
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
        let answer = match self.handle_message(&plaintext, next, nvm) {
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
    fn handle_message(
        &mut self,
        plaintext: &[u8],
        next: &mut CardState,
        nvm: &mut dyn Nvm,
    ) -> Option<Vec<u8>> {
        let value = cbor::decode("session message", plaintext, Limits::new(MAX_ENVELOPE)).ok()?;
        let map = access::map("session message", &value).ok()?;
        if let Ok(Some(m)) = access::get("session message", map, MANAGEMENT_KEY) {
            let answer = self.manage(m, next, nvm);
            return Some(cbor::encode(&text_map(vec![(MANAGEMENT_KEY, answer)])));
        }
        let request = DeviceRequest::from_value(&value).ok()?;
        self.device_response(&request, next, nvm).ok()
    }

    fn device_response(
        &mut self,
        request: &DeviceRequest,
        next: &mut CardState,
        nvm: &mut dyn Nvm,
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
            let r = verify_secret(next, SecretKind::Pin, pin.as_bytes(), nvm);
            if r == SecretCheck::Torn {
                self.ram.torn = true;
                return Err(crate::Error::State("power lost".into()));
            }
            session.pin_verified = r == SecretCheck::Ok;
            session.pin_blocked = r == SecretCheck::Blocked;
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
        let vrf_key = next.vrf_key.clone();
        let chain = next.governance.as_ref().map(|g| g.chain.clone());
        let key = next
            .card_key
            .clone()
            .ok_or_else(|| crate::Error::State("no card key".into()))?;
        let (response, released) = holder::respond_released(
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
                // The pseudonym always needs the PIN: it is a vote's authentication.
                let pseudonym = item.namespace == evote::NAMESPACE;
                let protected = pseudonym
                    || pin_elements
                        .iter()
                        .any(|(n, e)| n == item.namespace && e == item.element);
                if protected && !pin_verified {
                    return Release::Withhold(match pin_result {
                        Some(SecretCheck::Wrong) => codes::PIN_WRONG,
                        Some(SecretCheck::Blocked) => codes::PIN_BLOCKED,
                        _ => codes::PIN_REQUIRED,
                    });
                }
                if pseudonym {
                    let election = request
                        .doc_requests
                        .get(item.doc_request)
                        .and_then(requested_election);
                    return match (item.element, &vrf_key, election, &chain) {
                        (evote::PSEUDONYM, Some(vrf), Some(election), Some(chain)) => vrf
                            .prove(&evote::alpha(chain, &election))
                            .map_or(Release::Withhold(codes::DATA_NOT_RETURNED), |p| {
                                Release::DeviceSigned(Value::Bytes(p.to_bytes().to_vec()))
                            }),
                        _ => Release::Withhold(codes::DATA_NOT_RETURNED),
                    };
                }
                Release::Release
            },
        )?;
        // The read log: every DocRequest whose reader proved an accreditation, with what it got,
        // in the same state write as this answer (so a logged read is one that was answered).
        for (index, acc) in readers.iter().enumerate() {
            let Some(acc) = acc else { continue };
            let names: Vec<String> = released
                .iter()
                .find(|(i, _)| *i == index)
                .map(|(_, els)| {
                    els.iter()
                        .map(|(ns, e)| {
                            if ns == citizen::NAMESPACE {
                                e.clone()
                            } else {
                                format!("{ns}/{e}")
                            }
                        })
                        .collect()
                })
                .unwrap_or_default();
            next.log_seq = next.log_seq.saturating_add(1);
            next.read_log.push(ReadLogEntry::new(
                next.log_seq,
                next.time_floor,
                acc.kiosk.as_str(),
                &acc.purpose,
                &names,
            ));
            if next.read_log.len() > READ_LOG_LEN {
                next.read_log.remove(0);
            }
        }
        // The log never makes the state too big to store (the sizes keep a full log of full
        // entries within it; this is the belt to those braces).
        while next.encode().len() > super::state::MAX_STATE_LEN && !next.read_log.is_empty() {
            next.read_log.remove(0);
        }
        Ok(response.to_vec())
    }

    /// Card management inside the session: change or unblock the PIN. Only after a request of
    /// this session proved a kiosk accreditation.
    fn manage(&mut self, message: &Value, next: &mut CardState, nvm: &mut dyn Nvm) -> Value {
        const W: &str = "card management";
        let authenticated = self
            .ram
            .session
            .as_ref()
            .is_some_and(|s| s.reader_authenticated);
        if authenticated && let Some(answer) = internal_authenticate(message, next) {
            return answer;
        }
        if let Some(answer) = read_log(message, next, self.ram.session.as_ref()) {
            return answer;
        }
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
            let check = verify_secret(next, kind, presented.as_bytes(), nvm);
            let tries = |s: &Option<Secret>| s.as_ref().map(|s| s.tries_left);
            Some(match check {
                SecretCheck::Ok => {
                    next.pin = Some(Secret {
                        hash: Secret::hash("pin", &next.serial, new_pin.as_bytes()),
                        tries_left: PIN_TRIES,
                    });
                    if let Some(s) = self.ram.session.as_mut() {
                        s.pin_verified = true;
                        s.pin_blocked = false;
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
                SecretCheck::Torn => {
                    self.ram.torn = true;
                    ("torn", None)
                }
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

/// `{"op": "read-log"}`: the card's read log, newest first, for its holder — only in a session
/// whose reader proved an accreditation and in which the PIN was verified. `None`: another
/// operation.
fn read_log(message: &Value, state: &CardState, session: Option<&MdocSession>) -> Option<Value> {
    const W: &str = "card management";
    let m = access::map(W, message).ok()?;
    if access::get(W, m, "op").ok()??.as_text()? != "read-log" {
        return None;
    }
    Some(match session {
        Some(s) if !s.reader_authenticated => {
            text_map(vec![("result", text("reader-not-authenticated"))])
        }
        Some(s) if s.pin_verified => text_map(vec![
            ("result", text("ok")),
            (
                "log",
                Value::Array(
                    state
                        .read_log
                        .iter()
                        .rev()
                        .map(ReadLogEntry::to_value)
                        .collect(),
                ),
            ),
        ]),
        Some(s) if s.pin_blocked => text_map(vec![("result", text("pin-blocked"))]),
        Some(_) => text_map(vec![("result", text("pin-required"))]),
        None => text_map(vec![("result", text("reader-not-authenticated"))]),
    })
}

/// `{"op": "internal-authenticate", "challenge": bstr}` from an accredited reader: the card
/// key's signature over the challenge as INTERNAL AUTHENTICATE makes it (card-applet.md §8), for
/// clone detection — which a locked card offers nowhere else. `None`: another operation.
fn internal_authenticate(message: &Value, state: &CardState) -> Option<Value> {
    const W: &str = "card management";
    let m = access::map(W, message).ok()?;
    if access::get(W, m, "op").ok()??.as_text()? != "internal-authenticate" {
        return None;
    }
    let challenge = access::get(W, m, "challenge")
        .ok()
        .flatten()
        .and_then(Value::as_bytes)
        .filter(|c| civis_core::card::CHALLENGE_LEN.contains(&c.len()));
    Some(match (challenge, &state.card_key) {
        (Some(c), Some(key)) => text_map(vec![
            ("result", text("ok")),
            (
                "signature",
                Value::Bytes(
                    key.sign_es256(&civis_core::card::internal_authenticate_message(c))
                        .to_vec(),
                ),
            ),
        ]),
        _ => text_map(vec![("result", text("malformed"))]),
    })
}

/// The election a DocRequest asks a pseudonym for (`requestInfo`, covered by its ReaderAuth).
fn requested_election(doc_request: &DocRequest) -> Option<String> {
    let info = doc_request.items_request.inner().request_info.as_ref()?;
    let map = access::map("requestInfo", info).ok()?;
    access::get("requestInfo", map, evote::REQUEST_INFO_ELECTION)
        .ok()
        .flatten()?
        .as_text()
        .filter(|e| evote::valid_election_id(e))
        .map(str::to_owned)
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
    let governance = next.governance.as_ref()?;
    if auth.payload.is_some() {
        return None;
    }
    let statement = kiosk::attached(auth).ok()??;
    let acc = governance.verify_accreditation(&statement).ok()?;
    if acc.not_after <= next.time_floor {
        return None;
    }
    cose::check_alg(auth).ok()?;
    let payload = transcript.reader_authentication_bytes(&doc_request.items_request);
    cose::verify_sign1(auth, &acc.key, Domain::IsoReaderAuth, Some(&payload)).ok()?;
    next.time_floor = next.time_floor.max(acc.not_before);
    Some(acc)
}
