//! The citizen card's command set: application identifiers, instruction bytes, the
//! personalization MAC, the INTERNAL AUTHENTICATE message and the card-info record. Both sides
//! use these: the applet (wallet-core) and readers, issuers and tests (specs/card-applet.md).

use ciborium::Value;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::cbor::{self, Limits, access, text, text_map};
use crate::crypto::EcPublicKey;
use crate::error::{Error, Result};

pub mod governance;
pub mod renewal;
pub mod sealed_info;

/// NFC Forum Type 4 Tag (NDEF) application.
pub const AID_NDEF: &[u8] = &[0xD2, 0x76, 0x00, 0x00, 0x85, 0x01, 0x01];
/// ISO 18013-5 mdoc application.
pub const AID_MDOC: &[u8] = &[0xA0, 0x00, 0x00, 0x02, 0x48, 0x04, 0x00];
/// The Civis card-management application (proprietary AID: `F0` + "CIVIS" + version 1).
pub const AID_CIVIS: &[u8] = &[0xF0, 0x43, 0x49, 0x56, 0x49, 0x53, 0x01];
/// Capability Container file of the NDEF application.
pub const FILE_CC: u16 = 0xE103;
/// NDEF file.
pub const FILE_NDEF: u16 = 0xE104;

/// Proprietary class byte of Civis management commands.
pub const CLA_PROPRIETARY: u8 = 0x80;
/// Class byte of MAC-protected personalization commands (proprietary, secure messaging).
pub const CLA_PERSO: u8 = 0x84;

/// Instruction bytes of the Civis application (specs/card-applet.md §4).
pub mod ins {
    /// GET DATA: the card-info record.
    pub const GET_DATA: u8 = 0xCA;
    /// GENERATE KEY: create the card key on the card; returns only its public key.
    pub const GENERATE_KEY: u8 = 0x46;
    /// PUT DATA: PIN, PUK, governance set, PIN-protected elements (P1 P2 name the item).
    pub const PUT_DATA: u8 = 0xDA;
    /// PUT CREDENTIAL: store an IssuerSigned in slot P1 (chained).
    pub const PUT_CREDENTIAL: u8 = 0xDB;
    /// LOCK: end personalization for good.
    pub const LOCK: u8 = 0xF0;
    /// ROTATE GOVERNANCE: apply a governance member's `rotate-key` transaction (as the chain
    /// recorded it) to the set the card trusts.
    pub const ROTATE_GOVERNANCE: u8 = 0xF2;
    /// RENEW CREDENTIAL: replace a locked card's credential (encrypted to the card key).
    pub const RENEW_CREDENTIAL: u8 = 0xDC;
    /// INTERNAL AUTHENTICATE (ISO class `00`).
    pub const INTERNAL_AUTHENTICATE: u8 = 0x88;
}

/// P1 P2 of PUT DATA items.
pub mod item {
    /// The PIN (4–12 ASCII digits).
    pub const PIN: u16 = 0x0101;
    /// The PUK (8–16 ASCII digits).
    pub const PUK: u16 = 0x0102;
    /// The governance set at inception ([`super::governance::GovernanceSet::inception_value`]).
    pub const GOVERNANCE: u16 = 0x0103;
    /// Elements that need the PIN: CBOR `[* [namespace, element]]`.
    pub const PIN_ELEMENTS: u16 = 0x0104;
}

/// Wrong PIN presentations before the PIN blocks.
pub const PIN_TRIES: u8 = 3;
/// Wrong PUK presentations before the card's PIN can never be unblocked.
pub const PUK_TRIES: u8 = 10;
/// Credential slots on a card.
pub const CREDENTIAL_SLOTS: u8 = 4;
/// Largest stored credential (IssuerSigned bytes).
pub const MAX_CREDENTIAL_LEN: usize = 16 * 1024;
/// Length of the personalization MAC appended to a command's data.
pub const PERSO_MAC_LEN: usize = 16;
/// Challenge lengths INTERNAL AUTHENTICATE accepts.
pub const CHALLENGE_LEN: std::ops::RangeInclusive<usize> = 8..=64;
/// The key in an ItemsRequest's `requestInfo` that carries the PIN (inside the encrypted
/// session only).
pub const REQUEST_INFO_PIN: &str = "org.civis.pin";
/// The key of a card-management message inside the encrypted session.
pub const MANAGEMENT_KEY: &str = "org.civis.card";

/// The batch transport key: set at card production, known to the issuing agency; it
/// authenticates personalization until LOCK.
#[derive(Clone)]
pub struct TransportKey(pub [u8; 32]);

impl std::fmt::Debug for TransportKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TransportKey(…)")
    }
}

impl TransportKey {
    /// The MAC a personalization command carries: HMAC-SHA-256 under the transport key over
    /// `"civis/perso/v1\0" ‖ serial ‖ counter (u32 BE) ‖ CLA INS P1 P2 ‖ body`, first 16 bytes.
    /// `counter` is the card's personalization counter, so a recorded command cannot be
    /// replayed and a command for one card does not work on another.
    pub fn mac(&self, serial: &[u8; 16], counter: u32, header: [u8; 4], body: &[u8]) -> [u8; 16] {
        let tag = self
            .keyed(serial, counter, header, body)
            .finalize()
            .into_bytes();
        let mut out = [0u8; PERSO_MAC_LEN];
        out.copy_from_slice(tag.get(..PERSO_MAC_LEN).unwrap_or(&[0; PERSO_MAC_LEN]));
        out
    }

    /// One personalization command as the APDUs to send: `body ‖ MAC` under `counter`, chained
    /// in pieces of at most `max_chunk` bytes; `[ins, p1, p2]` names the command (255 keeps to short APDUs). The reader and the
    /// issuer service (which relays commands to a card at a counter) build them the same way.
    pub fn command(
        &self,
        serial: &[u8; 16],
        counter: u32,
        [ins, p1, p2]: [u8; 3],
        body: &[u8],
        max_chunk: usize,
    ) -> Vec<crate::apdu::Command> {
        let mac = self.mac(serial, counter, [CLA_PERSO, ins, p1, p2], body);
        let mut data = Vec::with_capacity(body.len() + PERSO_MAC_LEN);
        data.extend_from_slice(body);
        data.extend_from_slice(&mac);
        crate::apdu::chain(CLA_PERSO, ins, p1, p2, &data, max_chunk, Some(256))
    }

    /// Check a MAC in constant time.
    pub fn check(
        &self,
        serial: &[u8; 16],
        counter: u32,
        header: [u8; 4],
        body: &[u8],
        mac: &[u8],
    ) -> bool {
        mac.len() == PERSO_MAC_LEN
            && self
                .keyed(serial, counter, header, body)
                .verify_truncated_left(mac)
                .is_ok()
    }

    fn keyed(&self, serial: &[u8; 16], counter: u32, header: [u8; 4], body: &[u8]) -> Hmac<Sha256> {
        let Ok(mut h) = <Hmac<Sha256> as Mac>::new_from_slice(&self.0) else {
            unreachable!("HMAC takes keys of any length")
        };
        h.update(b"civis/perso/v1\0");
        h.update(serial);
        h.update(&counter.to_be_bytes());
        h.update(&header);
        h.update(body);
        h
    }
}

/// The message INTERNAL AUTHENTICATE signs (ES256) for `challenge`:
/// `"civis/internal-authenticate/v1\0" ‖ SHA-256(challenge)`. The tag makes it impossible to
/// pass off as a COSE `Sig_structure` (which starts with a CBOR array), so the card is no
/// signing oracle for DeviceAuthentication.
pub fn internal_authenticate_message(challenge: &[u8]) -> Vec<u8> {
    let mut m = b"civis/internal-authenticate/v1\0".to_vec();
    m.extend_from_slice(&Sha256::digest(challenge));
    m
}

/// Check an INTERNAL AUTHENTICATE answer (`r ‖ s`) against the card key a credential binds.
pub fn verify_internal_authenticate(
    card_key: &EcPublicKey,
    challenge: &[u8],
    signature: &[u8],
) -> Result<()> {
    card_key
        .verify_es256(&internal_authenticate_message(challenge), signature)
        .map_err(|_| Error::BadSignature("INTERNAL AUTHENTICATE"))
}

/// The PIN-protected elements, as PUT DATA [`item::PIN_ELEMENTS`] carries them.
pub fn pin_elements_value(elements: &[(String, String)]) -> Vec<u8> {
    cbor::encode(&Value::Array(
        elements
            .iter()
            .map(|(ns, el)| Value::Array(vec![text(ns), text(el)]))
            .collect(),
    ))
}

/// Decode a [`pin_elements_value`].
pub fn pin_elements_from_bytes(bytes: &[u8]) -> Result<Vec<(String, String)>> {
    const W: &str = "PIN elements";
    let v = cbor::decode(W, bytes, Limits::new(8 * 1024))?;
    access::array(W, &v)?
        .iter()
        .map(|pair| match access::array(W, pair)? {
            [ns, el] => Ok((
                access::text(W, ns)?.to_owned(),
                access::text(W, el)?.to_owned(),
            )),
            _ => Err(Error::malformed(W, "expected [namespace, element]")),
        })
        .collect()
}

/// Entries the card's read log keeps (card-applet.md §5.5): the newest 32 accredited reads.
pub const READ_LOG_LEN: usize = 32;
/// Longest kiosk DID kept in a read-log entry (a `did:civis` DID has 54; longer ones are cut
/// at a character boundary).
pub const LOG_KIOSK_LEN: usize = 64;
/// Longest purpose kept.
pub const LOG_PURPOSE_LEN: usize = 64;
/// Most elements named per entry (more are counted in `more`).
pub const LOG_ELEMENTS: usize = 12;
/// Longest element name kept (`org.civis.evote.1/pseudonym` has 27).
pub const LOG_ELEMENT_LEN: usize = 32;

/// One accredited read, as the card logs it for its holder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadLogEntry {
    /// Sequence number: counts every logged read since personalization.
    pub seq: u64,
    /// The card's time floor after the read (Unix seconds): the latest time governance vouched
    /// had come — the card has no clock.
    pub floor: i64,
    /// The reader's kiosk DID, from its accreditation.
    pub kiosk: String,
    /// The purpose its accreditation states.
    pub purpose: String,
    /// The elements released (`element`, or `namespace/element` outside the citizen
    /// namespace), in request order.
    pub released: Vec<String>,
    /// Released elements beyond [`LOG_ELEMENTS`].
    pub more: u64,
}

fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s.get(..end).unwrap_or_default().to_owned()
}

impl ReadLogEntry {
    /// An entry for a read, its texts cut to the stored sizes.
    pub fn new(seq: u64, floor: i64, kiosk: &str, purpose: &str, released: &[String]) -> Self {
        let kept = released.len().min(LOG_ELEMENTS);
        Self {
            seq,
            floor,
            kiosk: cut(kiosk, LOG_KIOSK_LEN),
            purpose: cut(purpose, LOG_PURPOSE_LEN),
            released: released
                .iter()
                .take(kept)
                .map(|e| cut(e, LOG_ELEMENT_LEN))
                .collect(),
            more: u64::try_from(released.len() - kept).unwrap_or(u64::MAX),
        }
    }

    /// As a CBOR value: `[seq, floor, kiosk, purpose, [* element], more]`.
    pub fn to_value(&self) -> Value {
        Value::Array(vec![
            Value::Integer(self.seq.into()),
            Value::Integer(self.floor.into()),
            text(&self.kiosk),
            text(&self.purpose),
            Value::Array(self.released.iter().map(|e| text(e)).collect()),
            Value::Integer(self.more.into()),
        ])
    }

    /// From [`Self::to_value`]'s form, with the stored sizes enforced.
    pub fn from_value(v: &Value) -> Result<Self> {
        const W: &str = "read log entry";
        let [seq, floor, kiosk, purpose, released, more] = access::array(W, v)? else {
            return Err(Error::malformed(
                W,
                "not [seq, floor, kiosk, purpose, released, more]",
            ));
        };
        let released = access::array(W, released)?
            .iter()
            .map(|e| access::text(W, e).map(str::to_owned))
            .collect::<Result<Vec<_>>>()?;
        let entry = Self {
            seq: access::uint(W, seq)?,
            floor: floor
                .as_integer()
                .and_then(|i| i64::try_from(i).ok())
                .ok_or_else(|| Error::malformed(W, "floor"))?,
            kiosk: access::text(W, kiosk)?.to_owned(),
            purpose: access::text(W, purpose)?.to_owned(),
            released,
            more: access::uint(W, more)?,
        };
        if entry.kiosk.len() > LOG_KIOSK_LEN
            || entry.purpose.len() > LOG_PURPOSE_LEN
            || entry.released.len() > LOG_ELEMENTS
            || entry.released.iter().any(|e| e.len() > LOG_ELEMENT_LEN)
        {
            return Err(Error::malformed(W, "over the stored sizes"));
        }
        Ok(entry)
    }
}

/// What GET DATA answered: the card's facts in the clear (before LOCK), or sealed to the
/// batch's transport key (a locked card, so nothing stable reaches a stranger).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GetData {
    /// A card being personalized.
    Open(CardInfo),
    /// A locked card: [`sealed_info::seal`] of its facts.
    Sealed(Vec<u8>),
}

impl GetData {
    /// CBOR encoding: a [`CardInfo`], or `{"version", "locked": true, "sealed": bstr}`.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Self::Open(info) => info.encode(),
            Self::Sealed(sealed) => cbor::encode(&text_map(vec![
                ("version", text("1.0")),
                ("locked", Value::Bool(true)),
                ("sealed", Value::Bytes(sealed.clone())),
            ])),
        }
    }

    /// Decode GET DATA's answer.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        const W: &str = "card info";
        let v = cbor::decode(W, bytes, Limits::new(2048))?;
        let m = access::map(W, &v)?;
        match access::get(W, m, "sealed")? {
            Some(s) => {
                let s = access::bytes(W, s)?;
                if s.len() > sealed_info::MAX_SEALED_INFO_LEN {
                    return Err(Error::malformed(W, "sealed info too long"));
                }
                Ok(Self::Sealed(s.to_vec()))
            }
            None => Ok(Self::Open(CardInfo::decode(bytes)?)),
        }
    }

    /// The facts: open ones as they are, sealed ones with the batch's transport key.
    pub fn open(self, transport: Option<&TransportKey>) -> Result<CardInfo> {
        match (self, transport) {
            (Self::Open(info), _) => Ok(info),
            (Self::Sealed(s), Some(k)) => sealed_info::open(k, &s),
            (Self::Sealed(_), None) => Err(Error::invalid(
                "card info",
                "the card is locked: its facts are sealed to its batch's transport key",
            )),
        }
    }
}

/// What GET DATA returns: the card's public facts (no secrets, no personal data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CardInfo {
    /// Applet version.
    pub version: String,
    /// Card serial (16 bytes).
    pub serial: [u8; 16],
    /// Personalization ended.
    pub locked: bool,
    /// The personalization counter the next MAC must use.
    pub perso_counter: u32,
    /// The card key's public key, SEC1 uncompressed, once generated.
    pub public_key: Option<Vec<u8>>,
    /// The VRF (election pseudonym) public key, SEC1 compressed, once generated.
    pub vrf_key: Option<Vec<u8>>,
    /// PIN tries left (`None`: no PIN set).
    pub pin_tries: Option<u8>,
    /// PUK tries left (`None`: no PUK set).
    pub puk_tries: Option<u8>,
    /// Occupied credential slots.
    pub credentials: Vec<u8>,
    /// Whether the governance set is installed.
    pub has_root: bool,
    /// The card's time floor (Unix seconds).
    pub time_floor: i64,
}

impl CardInfo {
    /// CBOR encoding.
    pub fn encode(&self) -> Vec<u8> {
        let opt_u8 = |v: Option<u8>| v.map_or(Value::Null, |t| Value::Integer(t.into()));
        cbor::encode(&text_map(vec![
            ("version", text(&self.version)),
            ("serial", Value::Bytes(self.serial.to_vec())),
            ("locked", Value::Bool(self.locked)),
            ("persoCounter", Value::Integer(self.perso_counter.into())),
            (
                "publicKey",
                self.public_key.clone().map_or(Value::Null, Value::Bytes),
            ),
            (
                "vrfKey",
                self.vrf_key.clone().map_or(Value::Null, Value::Bytes),
            ),
            ("pinTries", opt_u8(self.pin_tries)),
            ("pukTries", opt_u8(self.puk_tries)),
            (
                "credentials",
                Value::Array(
                    self.credentials
                        .iter()
                        .map(|s| Value::Integer((*s).into()))
                        .collect(),
                ),
            ),
            ("hasRoot", Value::Bool(self.has_root)),
            ("timeFloor", Value::Integer(self.time_floor.into())),
        ]))
    }

    /// Decode.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        const W: &str = "card info";
        let v = cbor::decode(W, bytes, Limits::new(1024))?;
        let m = access::map(W, &v)?;
        let small = |k: &str| -> Result<Option<u8>> {
            match access::req(W, m, k)? {
                Value::Null => Ok(None),
                other => u8::try_from(access::uint(W, other)?)
                    .map(Some)
                    .map_err(|_| Error::malformed(W, format!("{k} out of range"))),
            }
        };
        Ok(Self {
            version: access::text(W, access::req(W, m, "version")?)?.to_owned(),
            serial: access::bytes(W, access::req(W, m, "serial")?)?
                .try_into()
                .map_err(|_| Error::malformed(W, "serial is not 16 bytes"))?,
            locked: access::req(W, m, "locked")?
                .as_bool()
                .ok_or_else(|| Error::malformed(W, "locked"))?,
            perso_counter: u32::try_from(access::uint(W, access::req(W, m, "persoCounter")?)?)
                .map_err(|_| Error::malformed(W, "persoCounter"))?,
            public_key: match access::req(W, m, "publicKey")? {
                Value::Null => None,
                b => Some(access::bytes(W, b)?.to_vec()),
            },
            // Absent from cards built before e-voting.
            vrf_key: match access::get(W, m, "vrfKey")? {
                None | Some(Value::Null) => None,
                Some(b) => Some(access::bytes(W, b)?.to_vec()),
            },
            pin_tries: small("pinTries")?,
            puk_tries: small("pukTries")?,
            credentials: access::array(W, access::req(W, m, "credentials")?)?
                .iter()
                .map(|s| u8::try_from(access::uint(W, s)?).map_err(|_| Error::malformed(W, "slot")))
                .collect::<Result<_>>()?,
            has_root: access::req(W, m, "hasRoot")?
                .as_bool()
                .ok_or_else(|| Error::malformed(W, "hasRoot"))?,
            time_floor: access::req(W, m, "timeFloor")?
                .as_integer()
                .and_then(|i| i64::try_from(i).ok())
                .ok_or_else(|| Error::malformed(W, "timeFloor"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn perso_mac_binds_serial_counter_header_and_body() {
        let k = TransportKey([7; 32]);
        let serial = [1; 16];
        let mac = k.mac(&serial, 5, [0x84, 0xDA, 1, 1], b"123456");
        assert!(k.check(&serial, 5, [0x84, 0xDA, 1, 1], b"123456", &mac));
        assert!(!k.check(&serial, 6, [0x84, 0xDA, 1, 1], b"123456", &mac));
        assert!(!k.check(&[2; 16], 5, [0x84, 0xDA, 1, 1], b"123456", &mac));
        assert!(!k.check(&serial, 5, [0x84, 0xDA, 1, 2], b"123456", &mac));
        assert!(!k.check(&serial, 5, [0x84, 0xDA, 1, 1], b"123457", &mac));
        assert!(!TransportKey([8; 32]).check(&serial, 5, [0x84, 0xDA, 1, 1], b"123456", &mac));
        assert!(!k.check(&serial, 5, [0x84, 0xDA, 1, 1], b"123456", &mac[..15]));
    }

    #[test]
    fn card_info_round_trips() {
        let info = CardInfo {
            version: "1.0".into(),
            serial: [3; 16],
            locked: true,
            perso_counter: 9,
            public_key: Some(vec![4; 65]),
            vrf_key: Some(vec![2; 33]),
            pin_tries: Some(2),
            puk_tries: None,
            credentials: vec![0, 2],
            has_root: true,
            time_floor: -5,
        };
        assert_eq!(CardInfo::decode(&info.encode()).unwrap(), info);
    }
}
