//! Intake: getting a presentation from a citizen card at the kiosk, over any card transport
//! (an NFC reader through `nfc1`, the in-process card in tests). The kiosk asks for the
//! policy's elements only, under its accredited ReaderAuth key, in one session per tap.

use civis_core::cose::Signer;
use civis_core::mdoc::{DeviceRequest, SessionTranscript, reader_auth};
use civis_firmware_bridge::CardTransport;
use civis_firmware_bridge::reader::{CardClient, MdocSession};
use rand_core::CryptoRngCore;

use civis_core::chain::light::KioskSnapshot;
use civis_core::chain::table::Table;
use civis_core::evote;
use civis_core::kiosk::KioskAccreditation;
use civis_core::mdoc::citizen;

use crate::policy::KioskPolicy;

/// Why the kiosk may not ask for a policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAccredited {
    /// The statement cannot be read.
    #[error("the accreditation statement cannot be read: {0}")]
    Unreadable(String),
    /// The snapshot holds no accreditation, or another one, for the statement's kiosk.
    #[error("the chain holds no such accreditation for {0} (revoked, replaced, or not yet synced)")]
    NotOnChain(String),
    /// Outside its window.
    #[error("the accreditation is not valid now")]
    Expired,
    /// The governance key that signed the statement was rotated away: cards that followed the
    /// rotation refuse it.
    #[error(
        "the accreditation is signed by {0}, a governance key since rotated away: cards refuse it; \
         the member must accredit this kiosk again with its current key"
    )]
    SignerRotated(String),
    /// The policy asks for an element the accreditation does not grant.
    #[error("the kiosk is not accredited on chain to read {0}")]
    Element(String),
}

/// The accreditation statement the synced chain records for the kiosk `did`, if any (the chain
/// checked its governance signature when it recorded it).
pub fn recorded_statement(snapshot: &KioskSnapshot, did: &str) -> Option<Vec<u8>> {
    snapshot
        .tree()
        .get(Table::Kiosk, did.as_bytes())
        .and_then(|v| {
            civis_core::cbor::decode("kiosk record", v, civis_core::cbor::Limits::new(64 * 1024))
                .ok()
        })
        .and_then(|v| match v {
            ciborium::Value::Map(m) => m.into_iter().find_map(|(k, v)| match (k, v) {
                (ciborium::Value::Text(k), ciborium::Value::Bytes(b)) if k == "statement" => {
                    Some(b)
                }
                _ => None,
            }),
            _ => None,
        })
}

/// Check that the kiosk's accreditation `statement` is the one the synced chain holds for its
/// kiosk DID, valid at `now`, and grants every element `policy` asks for: a kiosk asks only for
/// what the chain lets it read (cards check the statement's signature themselves).
pub fn check_accreditation(
    snapshot: &KioskSnapshot,
    statement: &[u8],
    policy: &KioskPolicy,
    now: i64,
) -> Result<KioskAccreditation, NotAccredited> {
    let acc = civis_core::kiosk::statement_unverified(statement)
        .map_err(|e| NotAccredited::Unreadable(e.to_string()))?;
    let recorded = recorded_statement(snapshot, acc.kiosk.as_str());
    if recorded.as_deref() != Some(statement) {
        return Err(NotAccredited::NotOnChain(acc.kiosk.to_string()));
    }
    if !acc.valid_at(now) {
        return Err(NotAccredited::Expired);
    }
    let signer = civis_core::kiosk::statement_signer(statement)
        .map_err(|e| NotAccredited::Unreadable(e.to_string()))?
        .to_string();
    let current = snapshot
        .tree()
        .get(Table::Key, signer.as_bytes())
        .and_then(|v| civis_core::chain::state::records::decode_key_value(v).ok())
        .is_some_and(|(_, retired)| retired.is_none());
    if !current {
        return Err(NotAccredited::SignerRotated(signer));
    }
    for e in policy.elements() {
        if !acc.allows(citizen::DOC_TYPE, citizen::NAMESPACE, &e) {
            return Err(NotAccredited::Element(e));
        }
    }
    if policy.election().is_some()
        && !acc.allows(citizen::DOC_TYPE, evote::NAMESPACE, evote::PSEUDONYM)
    {
        return Err(NotAccredited::Element(format!(
            "{}/{} (not accredited for e-voting)",
            evote::NAMESPACE,
            evote::PSEUDONYM
        )));
    }
    Ok(acc)
}

/// What one tap gave: the DeviceResponse bytes, and the transcript and request they answer.
#[derive(Debug)]
pub struct Tap {
    /// DeviceResponse bytes.
    pub response: Vec<u8>,
    /// The session's transcript.
    pub transcript: SessionTranscript,
    /// The request the kiosk sent.
    pub request: DeviceRequest,
}

/// Read the card on `client` for `policy`: the governance `rotations` the chain recorded pushed
/// first (so a card that missed a member's key rotation follows it before it checks the
/// accreditation; [`KioskSnapshot::governance_rotations`]), then engagement, a session, one
/// ReaderAuth request signed with the kiosk's key and carrying its accreditation `statement`
/// (and the resident's `pin`, which travels only inside the encrypted session, under the
/// ReaderAuth signature), the answer; the session is ended before returning.
#[allow(clippy::too_many_arguments)]
pub fn read_card<T: CardTransport>(
    client: &mut CardClient<T>,
    policy: &KioskPolicy,
    kiosk_key: &dyn Signer,
    statement: &[u8],
    rotations: &[Vec<u8>],
    pin: Option<&str>,
    rng: &mut impl CryptoRngCore,
) -> Result<Tap, civis_firmware_bridge::Error> {
    client.follow_governance(rotations)?;
    let engaged = client.read_engagement()?;
    let (mut session, e_reader, e_bytes) = MdocSession::start(&engaged, rng);
    let transcript = session.transcript().clone();
    let mut items = policy.items_request();
    if let Some(pin) = pin {
        let entry = (
            ciborium::Value::Text(civis_core::card::REQUEST_INFO_PIN.into()),
            ciborium::Value::Text(pin.into()),
        );
        match &mut items.request_info {
            Some(ciborium::Value::Map(m)) => m.push(entry),
            _ => items.request_info = Some(ciborium::Value::Map(vec![entry])),
        }
    }
    let request = DeviceRequest {
        version: "1.0".into(),
        doc_requests: vec![reader_auth::sign_with_accreditation(
            items,
            &transcript,
            kiosk_key,
            statement,
        )?],
    };
    let response = session.establish(client, e_reader.public_key(), e_bytes, &request)?;
    // Ending the session is courtesy: the answer is already in hand.
    let _ = session.end(client);
    Ok(Tap {
        response,
        transcript,
        request,
    })
}

/// Why a card did not give its log, as a closed set: the card's own result text is never kept
/// (a hostile card chooses it, and could echo the PIN it was just sent into a log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LogRefused {
    /// `pin-required`: the PIN was not verified in the session (wrong, or none sent).
    #[error("the card did not verify the PIN")]
    PinRequired,
    /// `pin-blocked`: the PIN is blocked; only the PUK unblocks it.
    #[error("the card's PIN is blocked")]
    PinBlocked,
    /// `reader-not-authenticated`: the card did not accept the kiosk's accreditation.
    #[error("the card did not accept the kiosk's accreditation")]
    ReaderNotAuthenticated,
    /// Any other answer.
    #[error("the card refused with another result")]
    Other,
}

impl LogRefused {
    /// From the card's result text.
    pub fn of(result: &str) -> Self {
        match result {
            "pin-required" => Self::PinRequired,
            "pin-blocked" => Self::PinBlocked,
            "reader-not-authenticated" => Self::ReaderNotAuthenticated,
            _ => Self::Other,
        }
    }
}

/// "Read my card's log" (card-applet.md §5.5): the governance `rotations` pushed first, then a
/// session whose one DocRequest asks for **no** element, under the kiosk's ReaderAuth and
/// accreditation, with the holder's `pin`; then the management op `read-log`. The card answers
/// only to an accredited reader after the PIN: `Ok(Err(_))` carries its refusal. The read itself is logged by the card, with
/// nothing released.
pub fn read_log<T: CardTransport>(
    client: &mut CardClient<T>,
    kiosk_key: &dyn Signer,
    statement: &[u8],
    rotations: &[Vec<u8>],
    pin: &str,
    rng: &mut impl CryptoRngCore,
) -> Result<Result<Vec<civis_core::card::ReadLogEntry>, LogRefused>, civis_firmware_bridge::Error> {
    client.follow_governance(rotations)?;
    let engaged = client.read_engagement()?;
    let (mut session, e_reader, e_bytes) = MdocSession::start(&engaged, rng);
    let items = civis_core::mdoc::ItemsRequest {
        doc_type: citizen::DOC_TYPE.into(),
        name_spaces: Vec::new(),
        request_info: Some(ciborium::Value::Map(vec![(
            ciborium::Value::Text(civis_core::card::REQUEST_INFO_PIN.into()),
            ciborium::Value::Text(pin.into()),
        )])),
    };
    let request = DeviceRequest {
        version: "1.0".into(),
        doc_requests: vec![reader_auth::sign_with_accreditation(
            items,
            session.transcript(),
            kiosk_key,
            statement,
        )?],
    };
    session.establish(client, e_reader.public_key(), e_bytes, &request)?;
    let log = session
        .read_log(client)?
        .map_err(|result| LogRefused::of(&result));
    let _ = session.end(client);
    Ok(log)
}

#[cfg(test)]
mod tests {
    use super::LogRefused;

    #[test]
    fn a_cards_refusal_text_is_never_kept() {
        assert_eq!(LogRefused::of("pin-required"), LogRefused::PinRequired);
        assert_eq!(LogRefused::of("pin-blocked"), LogRefused::PinBlocked);
        assert_eq!(
            LogRefused::of("reader-not-authenticated"),
            LogRefused::ReaderNotAuthenticated
        );
        // What the attack did: a hostile card echoing the PIN it was sent.
        let r = LogRefused::of("PIN-WAS-80808080");
        assert_eq!(r, LogRefused::Other);
        assert!(!format!("{r} {r:?}").contains("80808080"));
    }
}
