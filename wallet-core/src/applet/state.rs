//! The card's persistent state: what survives power-off. The host stores it as one value
//! (CBOR) and writes it atomically, so a command interrupted at any point leaves the old value
//! or the new one, never a mix.

use ciborium::Value;
use civis_core::card::governance::{GovernanceSet, MAX_MEMBERS, Member};
use civis_core::card::{CREDENTIAL_SLOTS, READ_LOG_LEN, ReadLogEntry, TransportKey};
use civis_core::cbor::{self, Limits, access, text, text_map};
use civis_core::crypto::{EcPublicKey, SoftwareKey};
use civis_core::did::{Did, KeyCommitment};
use civis_core::vrf::{VrfPublicKey, VrfSecretKey};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::{Error, Result};

/// Version of the state encoding (2: the governance set replaced the single root).
const STATE_VERSION: u64 = 2;
/// Largest encoded state accepted (4 full slots plus the rest).
pub const MAX_STATE_LEN: usize = 96 * 1024;

/// A secret with a retry counter (PIN or PUK), stored as a salted hash.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret {
    /// SHA-256 of `"civis/card-secret/v1\0" ‖ kind ‖ serial ‖ value`.
    pub hash: [u8; 32],
    /// Tries left before it blocks.
    pub tries_left: u8,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret {{ tries_left: {} }}", self.tries_left)
    }
}

impl Secret {
    /// Hash `value` for the card `serial`; `kind` keeps a PIN from matching a PUK slot.
    pub fn hash(kind: &str, serial: &[u8; 16], value: &[u8]) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"civis/card-secret/v1\0");
        h.update(kind.as_bytes());
        h.update(serial);
        h.update(value);
        h.finalize().into()
    }

    /// Whether `value` matches, in time independent of where it differs.
    pub fn matches(&self, kind: &str, serial: &[u8; 16], value: &[u8]) -> bool {
        let other = Self::hash(kind, serial, value);
        self.hash
            .iter()
            .zip(other.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

/// Everything the card keeps across taps.
#[derive(Clone)]
pub struct CardState {
    /// Card serial (set at production).
    pub serial: [u8; 16],
    pub(crate) transport_key: TransportKey,
    /// Next personalization MAC counter.
    pub perso_counter: u32,
    /// Personalization has ended.
    pub locked: bool,
    pub(crate) card_key: Option<SoftwareKey>,
    /// The election-pseudonym key (specs/evote.md), generated with the card key and never
    /// used for anything else.
    pub(crate) vrf_key: Option<VrfSecretKey>,
    /// Credential slots (IssuerSigned bytes).
    pub credentials: Vec<Option<Vec<u8>>>,
    /// The PIN.
    pub pin: Option<Secret>,
    /// The PUK.
    pub puk: Option<Secret>,
    /// Elements released only after the PIN is verified in the session.
    pub pin_elements: Vec<(String, String)>,
    /// The governance set kiosk accreditations are checked against, following the chain.
    pub governance: Option<GovernanceSet>,
    /// The newest trusted time the card has seen (Unix seconds).
    pub time_floor: i64,
    /// The last accredited reads, oldest first, at most [`READ_LOG_LEN`].
    pub read_log: Vec<ReadLogEntry>,
    /// The sequence number of the last logged read.
    pub log_seq: u64,
}

impl std::fmt::Debug for CardState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CardState")
            .field("serial", &self.serial)
            .field("locked", &self.locked)
            .field("perso_counter", &self.perso_counter)
            .field("has_key", &self.card_key.is_some())
            .field(
                "slots",
                &self.credentials.iter().filter(|c| c.is_some()).count(),
            )
            .field("pin", &self.pin)
            .field("puk", &self.puk)
            .field("governance", &self.governance)
            .field("time_floor", &self.time_floor)
            .finish_non_exhaustive()
    }
}

impl PartialEq for CardState {
    fn eq(&self, other: &Self) -> bool {
        self.encode() == other.encode()
    }
}

const W: &str = "card state";

impl CardState {
    /// A blank card as it leaves production: a serial and the batch transport key, nothing else.
    pub fn blank(serial: [u8; 16], transport_key: TransportKey) -> Self {
        Self {
            serial,
            transport_key,
            perso_counter: 0,
            locked: false,
            card_key: None,
            vrf_key: None,
            credentials: vec![None; usize::from(CREDENTIAL_SLOTS)],
            pin: None,
            puk: None,
            pin_elements: Vec::new(),
            governance: None,
            time_floor: 0,
            read_log: Vec::new(),
            log_seq: 0,
        }
    }

    /// The card key's public key, once generated.
    pub fn public_key(&self) -> Option<&EcPublicKey> {
        self.card_key.as_ref().map(SoftwareKey::public_key)
    }

    /// The VRF public key, once generated.
    pub fn vrf_public_key(&self) -> Option<&VrfPublicKey> {
        self.vrf_key.as_ref().map(VrfSecretKey::public_key)
    }

    /// Encode for storage. The value holds the card's secrets: the host keeps it like a secure
    /// element's memory (file mode 0600).
    pub fn encode(&self) -> Vec<u8> {
        let secret = |s: &Option<Secret>| match s {
            None => Value::Null,
            Some(s) => Value::Array(vec![
                Value::Bytes(s.hash.to_vec()),
                Value::Integer(s.tries_left.into()),
            ]),
        };
        let key_bytes = self.card_key.as_ref().map(SoftwareKey::scalar);
        let vrf_bytes = self.vrf_key.as_ref().map(VrfSecretKey::scalar);
        cbor::encode(&text_map(vec![
            ("v", Value::Integer(STATE_VERSION.into())),
            ("serial", Value::Bytes(self.serial.to_vec())),
            ("transportKey", Value::Bytes(self.transport_key.0.to_vec())),
            ("persoCounter", Value::Integer(self.perso_counter.into())),
            ("locked", Value::Bool(self.locked)),
            (
                "cardKey",
                key_bytes.map_or(Value::Null, |k| Value::Bytes(k.to_vec())),
            ),
            (
                "vrfKey",
                vrf_bytes.map_or(Value::Null, |k| Value::Bytes(k.to_vec())),
            ),
            (
                "credentials",
                Value::Array(
                    self.credentials
                        .iter()
                        .map(|c| c.clone().map_or(Value::Null, Value::Bytes))
                        .collect(),
                ),
            ),
            ("pin", secret(&self.pin)),
            ("puk", secret(&self.puk)),
            (
                "pinElements",
                Value::Array(
                    self.pin_elements
                        .iter()
                        .map(|(n, e)| Value::Array(vec![text(n), text(e)]))
                        .collect(),
                ),
            ),
            (
                "governance",
                match &self.governance {
                    None => Value::Null,
                    Some(g) => Value::Array(vec![
                        text(&g.chain),
                        Value::Array(
                            g.members
                                .iter()
                                .map(|m| {
                                    Value::Array(vec![
                                        text(m.did.as_str()),
                                        Value::Integer(m.index.into()),
                                        Value::Bytes(m.key.compressed()),
                                        Value::Bytes(m.next.0.to_vec()),
                                    ])
                                })
                                .collect(),
                        ),
                    ]),
                },
            ),
            ("timeFloor", Value::Integer(self.time_floor.into())),
            (
                "readLog",
                Value::Array(self.read_log.iter().map(ReadLogEntry::to_value).collect()),
            ),
            ("logSeq", Value::Integer(self.log_seq.into())),
        ]))
    }

    /// Decode stored state; anything unexpected is an error (the host then refuses to start
    /// rather than run a card with half its memory).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let v = cbor::decode(W, bytes, Limits::new(MAX_STATE_LEN))?;
        let m = access::map(W, &v)?;
        if access::uint(W, access::req(W, m, "v")?)? != STATE_VERSION {
            return Err(Error::State("unknown state version".into()));
        }
        let bytes_of = |k: &str| -> Result<&[u8]> { Ok(access::bytes(W, access::req(W, m, k)?)?) };
        let bool_of = |k: &str| -> Result<bool> {
            access::req(W, m, k)?
                .as_bool()
                .ok_or_else(|| Error::State(format!("{k} is not a bool")))
        };
        let secret = |k: &str| -> Result<Option<Secret>> {
            match access::req(W, m, k)? {
                Value::Null => Ok(None),
                other => match access::array(W, other)? {
                    [hash, tries] => Ok(Some(Secret {
                        hash: access::bytes(W, hash)?
                            .try_into()
                            .map_err(|_| Error::State(format!("{k} hash length")))?,
                        tries_left: u8::try_from(access::uint(W, tries)?)
                            .map_err(|_| Error::State(format!("{k} tries")))?,
                    })),
                    _ => Err(Error::State(format!("{k} is not [hash, tries]"))),
                },
            }
        };
        let credentials: Vec<Option<Vec<u8>>> =
            access::array(W, access::req(W, m, "credentials")?)?
                .iter()
                .map(|c| match c {
                    Value::Null => Ok(None),
                    b => Ok(Some(access::bytes(W, b)?.to_vec())),
                })
                .collect::<Result<_>>()?;
        if credentials.len() != usize::from(CREDENTIAL_SLOTS) {
            return Err(Error::State("wrong number of credential slots".into()));
        }
        let pin_elements = access::array(W, access::req(W, m, "pinElements")?)?
            .iter()
            .map(|p| match access::array(W, p)? {
                [n, e] => Ok((
                    access::text(W, n)?.to_owned(),
                    access::text(W, e)?.to_owned(),
                )),
                _ => Err(Error::State("pin element is not a pair".into())),
            })
            .collect::<Result<_>>()?;
        let governance = match access::req(W, m, "governance")? {
            Value::Null => None,
            g => Some(governance_of(g)?),
        };
        let read_log = match access::get(W, m, "readLog")? {
            None => Vec::new(),
            Some(v) => access::array(W, v)?
                .iter()
                .map(ReadLogEntry::from_value)
                .collect::<std::result::Result<Vec<_>, _>>()?,
        };
        if read_log.len() > READ_LOG_LEN {
            return Err(Error::State("read log longer than the card keeps".into()));
        }
        let key = Zeroizing::new(match access::req(W, m, "cardKey")? {
            Value::Null => None,
            b => Some(access::bytes(W, b)?.to_vec()),
        });
        // Absent on cards personalized before e-voting: no pseudonyms from them.
        let vrf = Zeroizing::new(match access::get(W, m, "vrfKey")? {
            None | Some(Value::Null) => None,
            Some(b) => Some(access::bytes(W, b)?.to_vec()),
        });
        Ok(Self {
            serial: bytes_of("serial")?
                .try_into()
                .map_err(|_| Error::State("serial is not 16 bytes".into()))?,
            transport_key: TransportKey(
                bytes_of("transportKey")?
                    .try_into()
                    .map_err(|_| Error::State("transport key is not 32 bytes".into()))?,
            ),
            perso_counter: u32::try_from(access::uint(W, access::req(W, m, "persoCounter")?)?)
                .map_err(|_| Error::State("perso counter".into()))?,
            locked: bool_of("locked")?,
            card_key: key.as_deref().map(SoftwareKey::from_scalar).transpose()?,
            vrf_key: vrf
                .as_deref()
                .map(VrfSecretKey::from_scalar)
                .transpose()
                .map_err(|e| Error::State(format!("vrf key: {e}")))?,
            credentials,
            pin: secret("pin")?,
            puk: secret("puk")?,
            pin_elements,
            governance,
            time_floor: access::req(W, m, "timeFloor")?
                .as_integer()
                .and_then(|i| i64::try_from(i).ok())
                .ok_or_else(|| Error::State("time floor".into()))?,
            read_log,
            // Absent on cards written before the log: none yet.
            log_seq: access::get(W, m, "logSeq")?
                .map(|v| access::uint(W, v))
                .transpose()?
                .unwrap_or(0),
        })
    }
}

fn governance_of(v: &Value) -> Result<GovernanceSet> {
    let bad = |what: &str| Error::State(format!("governance: {what}"));
    let [chain, members] = access::array(W, v)? else {
        return Err(bad("not [chain, members]"));
    };
    let members = access::array(W, members)?;
    if members.is_empty() || members.len() > MAX_MEMBERS {
        return Err(bad("member count"));
    }
    let members = members
        .iter()
        .map(|m| match access::array(W, m)? {
            [did, index, key, next] => Ok(Member {
                did: Did::parse(access::text(W, did)?)?,
                index: u32::try_from(access::uint(W, index)?).map_err(|_| bad("key index"))?,
                key: EcPublicKey::from_sec1(access::bytes(W, key)?)?,
                next: KeyCommitment(
                    access::bytes(W, next)?
                        .try_into()
                        .map_err(|_| bad("commitment length"))?,
                ),
            }),
            _ => Err(bad("a member is not [did, index, key, next]")),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(GovernanceSet {
        chain: access::text(W, chain)?.to_owned(),
        members,
    })
}
