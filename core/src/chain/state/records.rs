//! The encoded records the state tables hold: DID records, the chain record, status-list
//! metadata, issuer and kiosk accreditations, key lists.

use ciborium::Value;

use crate::cbor::{self, access, text, text_map};
use crate::crypto::EcPublicKey;
use crate::did::{Did, DidUrl, KeyCommitment};
use crate::kiosk::{ElementGrants, grants_value};
use crate::status::Bits;

/// A `Key` table value: the key (SEC1 compressed, 33 bytes), then — once the DID rotated away
/// from it — the block time it was retired at (8 bytes, big-endian). A credential whose MSO
/// says it was signed after that time is rejected (verification.md).
pub fn key_value(key: &EcPublicKey, retired: Option<i64>) -> Vec<u8> {
    let mut v = key.compressed().to_vec();
    if let Some(t) = retired {
        v.extend_from_slice(&t.to_be_bytes());
    }
    v
}

/// Decode a `Key` table value: the key and when it was retired, if it was.
pub fn decode_key_value(bytes: &[u8]) -> crate::Result<(EcPublicKey, Option<i64>)> {
    match bytes.len() {
        33 => Ok((EcPublicKey::from_sec1(bytes)?, None)),
        41 => {
            let (key, t) = bytes.split_at(33);
            let t: [u8; 8] = t
                .try_into()
                .map_err(|_| crate::Error::malformed("key entry", "bad retirement time"))?;
            Ok((EcPublicKey::from_sec1(key)?, Some(i64::from_be_bytes(t))))
        }
        n => Err(crate::Error::malformed(
            "key entry",
            format!("{n} bytes (33 or 41 expected)"),
        )),
    }
}

/// The chain record (`chain`/`validators` in the kiosk tree): the current validator set, the
/// first consensus epoch it signs, and the epoch length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainRecord {
    /// First consensus epoch this set signs (0 for the genesis set).
    pub epoch: u64,
    /// Its validators.
    pub validators: Vec<EcPublicKey>,
    /// Blocks per consensus epoch.
    pub epoch_length: u64,
}

impl ChainRecord {
    /// Decode the stored record.
    pub fn decode(bytes: &[u8]) -> crate::Result<Self> {
        const W: &str = "chain record";
        let v = cbor::decode(W, bytes, cbor::Limits::new(1 << 20))?;
        let m = access::map(W, &v)?;
        Ok(Self {
            epoch: access::uint(W, access::req(W, m, "epoch")?)?,
            validators: access::array(W, access::req(W, m, "validators")?)?
                .iter()
                .map(|k| EcPublicKey::from_sec1(access::bytes(W, k)?))
                .collect::<crate::Result<_>>()?,
            epoch_length: access::uint(W, access::req(W, m, "epochLength")?)?,
        })
    }
}

/// A DID's record in the public tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DidRecord {
    /// Current key.
    pub key: EcPublicKey,
    /// Its number (`#key-N`).
    pub key_index: u32,
    /// Commitment to the next key (absent once deactivated).
    pub next: Option<KeyCommitment>,
    /// The next sequence number expected from this DID.
    pub seq: u64,
    /// Deactivated for good.
    pub deactivated: bool,
}

impl DidRecord {
    /// The DID document this record describes.
    pub fn document(&self, did: &Did) -> crate::did::DidDocument {
        crate::did::DidDocument::current(
            did,
            self.key_index,
            &self.key,
            self.next.as_ref(),
            self.deactivated,
        )
    }

    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        cbor::encode(&text_map(vec![
            ("key", Value::Bytes(self.key.compressed())),
            ("key_index", Value::Integer(self.key_index.into())),
            (
                "next",
                self.next
                    .map_or(Value::Null, |c| Value::Bytes(c.0.to_vec())),
            ),
            ("seq", Value::Integer(self.seq.into())),
            ("deactivated", Value::Bool(self.deactivated)),
        ]))
    }

    /// Decode a stored record.
    pub fn decode(bytes: &[u8]) -> crate::Result<Self> {
        const W: &str = "DID record";
        let v = cbor::decode(W, bytes, cbor::Limits::new(1024))?;
        let m = access::map(W, &v)?;
        Ok(Self {
            key: EcPublicKey::from_sec1(access::bytes(W, access::req(W, m, "key")?)?)?,
            key_index: u32::try_from(access::uint(W, access::req(W, m, "key_index")?)?)
                .map_err(|_| crate::Error::malformed(W, "key_index"))?,
            next: match access::req(W, m, "next")? {
                Value::Null => None,
                b => Some(KeyCommitment(
                    access::bytes(W, b)?
                        .try_into()
                        .map_err(|_| crate::Error::malformed(W, "next"))?,
                )),
            },
            seq: access::uint(W, access::req(W, m, "seq")?)?,
            deactivated: access::req(W, m, "deactivated")?.as_bool().unwrap_or(true),
        })
    }

    /// The DID URL of the current key.
    pub fn key_url(&self, did: &Did) -> DidUrl {
        did.key_url(self.key_index)
    }
}

/// Public-tree key of the validator set approved for the next epoch.
pub(super) const PENDING_VALIDATORS: &[u8] = b"pending-validators";

pub(super) fn encode_key_list(keys: &[EcPublicKey]) -> Vec<u8> {
    cbor::encode(&Value::Array(
        keys.iter().map(|k| Value::Bytes(k.compressed())).collect(),
    ))
}

pub(super) fn decode_key_list(bytes: &[u8]) -> Option<Vec<EcPublicKey>> {
    const W: &str = "pending validators";
    let v = cbor::decode(W, bytes, cbor::Limits::new(1 << 20)).ok()?;
    access::array(W, &v)
        .ok()?
        .iter()
        .map(|k| {
            access::bytes(W, k)
                .ok()
                .and_then(|b| EcPublicKey::from_sec1(b).ok())
        })
        .collect()
}

pub(super) fn accreditation_value(doc_types: &[String], until: i64) -> Vec<u8> {
    // Positional, to keep kiosk bundles small: [until, [docType...]].
    cbor::encode(&Value::Array(vec![
        Value::Integer(until.into()),
        Value::Array(doc_types.iter().map(|d| text(d)).collect()),
    ]))
}

/// Decode an issuer accreditation record: `(docTypes, until)`.
pub fn decode_accreditation(bytes: &[u8]) -> Option<(Vec<String>, i64)> {
    let v = cbor::decode("accreditation", bytes, cbor::Limits::new(64 * 1024)).ok()?;
    match v.as_array()?.as_slice() {
        [until, types] => Some((
            types
                .as_array()?
                .iter()
                .filter_map(|t| t.as_text().map(str::to_owned))
                .collect(),
            until.as_integer().and_then(|i| i64::try_from(i).ok())?,
        )),
        _ => None,
    }
}

/// A status list's metadata record: `[id, bits, size]` (the issuer is in the list's URI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListInfo {
    /// Chain-assigned number, in creation order; sync bundles name lists by it.
    pub id: u64,
    /// Bits per entry.
    pub bits: Bits,
    /// Entries.
    pub size: u64,
}

impl ListInfo {
    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        cbor::encode(&Value::Array(vec![
            Value::Integer(self.id.into()),
            Value::Integer(self.bits.get().into()),
            Value::Integer(self.size.into()),
        ]))
    }

    /// Decode.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let v = cbor::decode("status meta", bytes, cbor::Limits::new(256)).ok()?;
        let uint = |v: &Value| v.as_integer().and_then(|i| u64::try_from(i).ok());
        match v.as_array()?.as_slice() {
            [id, bits, size] => Some(Self {
                id: uint(id)?,
                bits: Bits::new(uint(bits)?).ok()?,
                size: uint(size)?,
            }),
            _ => None,
        }
    }
}

pub(super) fn kiosk_value(
    key: &EcPublicKey,
    grants: &ElementGrants,
    purpose: &str,
    not_before: i64,
    not_after: i64,
    statement: &[u8],
) -> Vec<u8> {
    cbor::encode(&text_map(vec![
        ("key", Value::Bytes(key.compressed())),
        ("grants", grants_value(grants)),
        ("purpose", text(purpose)),
        ("not_before", Value::Integer(not_before.into())),
        ("not_after", Value::Integer(not_after.into())),
        ("statement", Value::Bytes(statement.to_vec())),
    ]))
}
