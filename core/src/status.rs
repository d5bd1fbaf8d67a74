//! IETF Token Status List (draft-ietf-oauth-status-list), CBOR form, and Civis's compact deltas.
//!
//! A list is a byte array of `bits`-wide entries (1, 2, 4 or 8), entry `i` at bit offset
//! `i * bits`, least significant bits first within each byte; on the wire the array is zlib
//! compressed: `{"bits": uint, "lst": bstr}`. Values: 0 VALID, 1 INVALID (revoked), 2 SUSPENDED.

use std::io::{Read, Write};

use ciborium::Value;

use crate::cbor::{self, Limits, access, text, text_map};
use crate::cose::{self, Domain};
use crate::crypto::EcPublicKey;
use crate::error::{Error, Result};

/// The MSO's reference into a Token Status List: `{"status_list": {"idx": uint, "uri": tstr}}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRef {
    /// Index of this credential in the list.
    pub idx: u64,
    /// Which list (for Civis, the list id on the registry chain).
    pub uri: String,
}

impl StatusRef {
    /// Decode `{"status_list": {"idx", "uri"}}`.
    pub fn from_value(v: &Value) -> Result<Self> {
        const WHAT: &str = "MSO status";
        let m = access::map(WHAT, v)?;
        let sl = access::map(WHAT, access::req(WHAT, m, "status_list")?)?;
        Ok(Self {
            idx: access::uint(WHAT, access::req(WHAT, sl, "idx")?)?,
            uri: access::text(WHAT, access::req(WHAT, sl, "uri")?)?.to_owned(),
        })
    }

    /// Encode.
    pub fn to_value(&self) -> Value {
        text_map(vec![(
            "status_list",
            text_map(vec![
                ("idx", Value::Integer(self.idx.into())),
                ("uri", text(&self.uri)),
            ]),
        )])
    }
}

/// Largest decompressed list accepted: 32 MiB (256 M one-bit entries). Bounds zlib bombs.
pub const MAX_LIST_BYTES: usize = 32 * 1024 * 1024;
/// Largest encoded (compressed) list accepted.
pub const MAX_ENCODED_LEN: usize = 8 * 1024 * 1024;

/// Status values Civis defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 0: valid.
    Valid,
    /// 1: invalid (revoked, final).
    Invalid,
    /// 2: suspended (may return to valid).
    Suspended,
}

impl Status {
    /// From a list entry.
    pub fn from_value(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Valid),
            1 => Some(Self::Invalid),
            2 => Some(Self::Suspended),
            _ => None,
        }
    }

    /// The list entry.
    pub fn value(self) -> u8 {
        match self {
            Self::Valid => 0,
            Self::Invalid => 1,
            Self::Suspended => 2,
        }
    }
}

/// Bits per entry: 1, 2, 4 or 8.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bits(u8);

impl Bits {
    /// Checked constructor.
    pub fn new(bits: u64) -> Result<Self> {
        match bits {
            1 | 2 | 4 | 8 => Ok(Self(bits as u8)),
            _ => Err(Error::invalid(
                "status list",
                format!("bits must be 1, 2, 4 or 8, not {bits}"),
            )),
        }
    }

    /// The width.
    pub fn get(self) -> u8 {
        self.0
    }

    /// Entries per byte.
    pub fn per_byte(self) -> u64 {
        u64::from(8 / self.0)
    }

    fn mask(self) -> u8 {
        ((1u16 << self.0) - 1) as u8
    }
}

/// A Token Status List, uncompressed in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusList {
    bits: Bits,
    lst: Vec<u8>,
}

impl StatusList {
    /// A list of `entries` entries, all VALID (rounded up to whole bytes).
    pub fn new(bits: Bits, entries: u64) -> Result<Self> {
        let bytes = entries.div_ceil(bits.per_byte());
        let bytes = usize::try_from(bytes)
            .map_err(|_| Error::invalid("status list", "too many entries"))?;
        if bytes > MAX_LIST_BYTES {
            return Err(Error::TooLarge {
                what: "status list",
                len: bytes,
                limit: MAX_LIST_BYTES,
            });
        }
        Ok(Self {
            bits,
            lst: vec![0; bytes],
        })
    }

    /// From raw (uncompressed) bytes.
    pub fn from_bytes(bits: Bits, lst: Vec<u8>) -> Self {
        Self { bits, lst }
    }

    /// Bits per entry.
    pub fn bits(&self) -> Bits {
        self.bits
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.lst
    }

    /// Number of entries.
    pub fn len(&self) -> u64 {
        (self.lst.len() as u64).saturating_mul(self.bits.per_byte())
    }

    /// Whether the list has no entries.
    pub fn is_empty(&self) -> bool {
        self.lst.is_empty()
    }

    fn locate(&self, idx: u64) -> Option<(usize, u32)> {
        let byte = usize::try_from(idx / self.bits.per_byte()).ok()?;
        let shift = u32::try_from((idx % self.bits.per_byte()) * u64::from(self.bits.0)).ok()?;
        (byte < self.lst.len()).then_some((byte, shift))
    }

    /// The entry at `idx`, or `None` past the end.
    pub fn get(&self, idx: u64) -> Option<u8> {
        let (byte, shift) = self.locate(idx)?;
        self.lst.get(byte).map(|b| (b >> shift) & self.bits.mask())
    }

    /// Set the entry at `idx`.
    pub fn set(&mut self, idx: u64, value: u8) -> Result<()> {
        if value > self.bits.mask() {
            return Err(Error::invalid(
                "status value",
                format!("{value} does not fit in {} bits", self.bits.0),
            ));
        }
        let (byte, shift) = self
            .locate(idx)
            .ok_or_else(|| Error::invalid("status index", format!("{idx} is outside the list")))?;
        let mask = self.bits.mask() << shift;
        if let Some(b) = self.lst.get_mut(byte) {
            *b = (*b & !mask) | (value << shift);
        }
        Ok(())
    }

    /// The zlib-compressed bytes (the `lst` member of both the CBOR and the JSON form).
    pub fn compressed(&self) -> Vec<u8> {
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        // Writing to a Vec cannot fail.
        let _ = enc.write_all(&self.lst);
        enc.finish().unwrap_or_default()
    }

    /// The CBOR value `{"bits": n, "lst": zlib(bytes)}`.
    pub fn to_value(&self) -> Value {
        text_map(vec![
            ("bits", Value::Integer(self.bits.0.into())),
            ("lst", Value::Bytes(self.compressed())),
        ])
    }

    /// CBOR bytes.
    pub fn to_cbor(&self) -> Vec<u8> {
        cbor::encode(&self.to_value())
    }

    /// Decode the CBOR form, decompressing at most [`MAX_LIST_BYTES`].
    pub fn from_value(v: &Value) -> Result<Self> {
        const W: &str = "status list";
        let m = access::map(W, v)?;
        let bits = Bits::new(access::uint(W, access::req(W, m, "bits")?)?)?;
        let compressed = access::bytes(W, access::req(W, m, "lst")?)?;
        let mut lst = Vec::new();
        flate2::read::ZlibDecoder::new(compressed)
            .take(MAX_LIST_BYTES as u64 + 1)
            .read_to_end(&mut lst)
            .map_err(|e| Error::malformed(W, format!("zlib: {e}")))?;
        if lst.len() > MAX_LIST_BYTES {
            return Err(Error::TooLarge {
                what: "decompressed status list",
                len: lst.len(),
                limit: MAX_LIST_BYTES,
            });
        }
        Ok(Self { bits, lst })
    }

    /// Decode CBOR bytes.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self> {
        Self::from_value(&cbor::decode(
            "status list",
            bytes,
            Limits::new(MAX_ENCODED_LEN),
        )?)
    }

    /// Apply a delta; all-or-nothing.
    pub fn apply(&mut self, delta: &StatusDelta) -> Result<()> {
        for (idx, value) in &delta.changes {
            if self.get(*idx).is_none() {
                return Err(Error::invalid(
                    "status delta",
                    format!("index {idx} is outside the list"),
                ));
            }
            if *value > self.bits.mask() {
                return Err(Error::invalid(
                    "status delta",
                    format!("value {value} too wide"),
                ));
            }
        }
        for (idx, value) in &delta.changes {
            self.set(*idx, *value)?;
        }
        Ok(())
    }
}

/// Changed entries of one list: strictly increasing indexes with their new values.
///
/// Wire form (CBOR): a flat array `[gap_0, value_0, gap_1, value_1, …]` where `gap_0` is the first
/// index and each later gap is the distance from the previous index (≥ 1), so nearby changes cost
/// two or three bytes each.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StatusDelta {
    /// `(index, value)`, strictly increasing by index (kept private so it stays that way).
    changes: Vec<(u64, u8)>,
}

/// Largest delta accepted on the wire.
pub const MAX_DELTA_LEN: usize = 4 * 1024 * 1024;

impl StatusDelta {
    /// From unsorted changes; a later change to the same index wins.
    pub fn from_changes(mut changes: Vec<(u64, u8)>) -> Self {
        changes.reverse();
        changes.sort_by_key(|(i, _)| *i);
        changes.dedup_by_key(|(i, _)| *i);
        Self { changes }
    }

    /// The changes, strictly increasing by index.
    pub fn changes(&self) -> &[(u64, u8)] {
        &self.changes
    }

    /// The CBOR value.
    pub fn to_value(&self) -> Value {
        let mut out = Vec::with_capacity(self.changes.len().saturating_mul(2));
        let mut prev: Option<u64> = None;
        for (idx, v) in &self.changes {
            let gap = prev.map_or(*idx, |p| idx.saturating_sub(p));
            out.push(Value::Integer(gap.into()));
            out.push(Value::Integer((*v).into()));
            prev = Some(*idx);
        }
        Value::Array(out)
    }

    /// CBOR bytes.
    pub fn to_cbor(&self) -> Vec<u8> {
        cbor::encode(&self.to_value())
    }

    /// Decode, checking that indexes strictly increase and values fit in a byte.
    pub fn from_value(v: &Value) -> Result<Self> {
        const W: &str = "status delta";
        let items = access::array(W, v)?;
        if items.len() % 2 != 0 {
            return Err(Error::malformed(W, "odd number of items"));
        }
        let mut changes = Vec::with_capacity(items.len() / 2);
        let mut prev: Option<u64> = None;
        for pair in items.chunks_exact(2) {
            let [gap, value] = pair else { continue };
            let gap = access::uint(W, gap)?;
            let idx = match prev {
                None => gap,
                Some(_) if gap == 0 => {
                    return Err(Error::malformed(W, "indexes must strictly increase"));
                }
                Some(p) => p
                    .checked_add(gap)
                    .ok_or_else(|| Error::malformed(W, "index overflows"))?,
            };
            let value = u8::try_from(access::uint(W, value)?)
                .map_err(|_| Error::malformed(W, "value over 255"))?;
            changes.push((idx, value));
            prev = Some(idx);
        }
        Ok(Self { changes })
    }

    /// Decode CBOR bytes.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self> {
        Self::from_value(&cbor::decode(
            "status delta",
            bytes,
            Limits::new(MAX_DELTA_LEN),
        )?)
    }
}

/// The claims of a Status List Token in CWT form, after its signature was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusListToken {
    /// `sub` (2): the list's URI.
    pub sub: String,
    /// `iat` (6).
    pub iat: Option<i64>,
    /// `exp` (4).
    pub exp: Option<i64>,
    /// `ttl` (65534).
    pub ttl: Option<u64>,
    /// `status_list` (65533).
    pub list: StatusList,
}

fn claims_of(sign1: &coset::CoseSign1) -> Result<Vec<(Value, Value)>> {
    let payload = sign1
        .payload
        .as_deref()
        .ok_or_else(|| Error::malformed("CWT", "no payload"))?;
    let v = cbor::decode("CWT claims", payload, Limits::new(MAX_ENCODED_LEN))?;
    Ok(access::map("CWT claims", &v)?.to_vec())
}

fn int_claim(claims: &[(Value, Value)], key: i64) -> Result<Option<i64>> {
    access::get_int("CWT", claims, key)?
        .map(|v| {
            v.as_integer()
                .and_then(|i| i64::try_from(i).ok())
                .ok_or_else(|| Error::malformed("CWT", format!("claim {key} is not an integer")))
        })
        .transpose()
}

/// Verify a Status List Token (COSE_Sign1 CWT) with `key` and decode its list.
pub fn verify_status_list_cwt(bytes: &[u8], key: &EcPublicKey) -> Result<StatusListToken> {
    let sign1 = cose::decode_sign1_within(bytes, MAX_ENCODED_LEN)?;
    cose::verify_sign1(&sign1, key, Domain::StatusListCwt, None)?;
    let claims = claims_of(&sign1)?;
    const W: &str = "Status List Token";
    Ok(StatusListToken {
        sub: access::text(
            W,
            access::get_int(W, &claims, 2)?.ok_or_else(|| Error::malformed(W, "no sub"))?,
        )?
        .to_owned(),
        iat: int_claim(&claims, 6)?,
        exp: int_claim(&claims, 4)?,
        ttl: access::get_int(W, &claims, 65534)?
            .map(|v| access::uint(W, v))
            .transpose()?,
        list: StatusList::from_value(
            access::get_int(W, &claims, 65533)?
                .ok_or_else(|| Error::malformed(W, "no status_list"))?,
        )?,
    })
}

/// Verify a referenced token (COSE_Sign1 CWT) with `key` and return its status reference (claim 65535).
pub fn verify_referenced_token_cwt(bytes: &[u8], key: &EcPublicKey) -> Result<StatusRef> {
    let sign1 = cose::decode_sign1_within(bytes, MAX_ENCODED_LEN)?;
    cose::verify_sign1(&sign1, key, Domain::StatusListCwt, None)?;
    let claims = claims_of(&sign1)?;
    const W: &str = "referenced token";
    let status = access::get_int(W, &claims, 65535)?
        .ok_or_else(|| Error::malformed(W, "no status claim"))?;
    let m = access::map(W, status)?;
    let sl = access::map(W, access::req(W, m, "status_list")?)?;
    Ok(StatusRef {
        idx: access::uint(W, access::req(W, sl, "idx")?)?,
        uri: access::text(W, access::req(W, sl, "uri")?)?.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_all_widths() {
        for bits in [1, 2, 4, 8] {
            let b = Bits::new(bits).unwrap();
            let mut l = StatusList::new(b, 100).unwrap();
            let max = b.mask();
            l.set(7, max).unwrap();
            l.set(8, 1).unwrap();
            assert_eq!(l.get(7), Some(max));
            assert_eq!(l.get(8), Some(1));
            assert_eq!(l.get(6), Some(0));
            assert!(l.set(9, max.saturating_add(1)).is_err() || max == 255);
            let back = StatusList::from_cbor(&l.to_cbor()).unwrap();
            assert_eq!(back, l);
        }
    }

    #[test]
    fn delta_round_trip_and_refusals() {
        let d = StatusDelta::from_changes(vec![(10, 1), (3, 2), (10, 2), (1_000_000, 1)]);
        assert_eq!(d.changes(), &[(3, 2), (10, 2), (1_000_000, 1)]);
        assert_eq!(StatusDelta::from_cbor(&d.to_cbor()).unwrap(), d);
        // A zero gap after the first entry would repeat an index.
        let bad = cbor::encode(&Value::Array(vec![
            Value::Integer(3.into()),
            Value::Integer(1.into()),
            Value::Integer(0.into()),
            Value::Integer(1.into()),
        ]));
        assert!(StatusDelta::from_cbor(&bad).is_err());
        let mut l = StatusList::new(Bits::new(2).unwrap(), 16).unwrap();
        let before = l.clone();
        assert!(
            l.apply(&StatusDelta::from_changes(vec![(1, 1), (99, 1)]))
                .is_err()
        );
        assert_eq!(l, before, "a failed delta changes nothing");
    }

    #[test]
    fn zlib_bomb_is_bounded() {
        let big = StatusList::from_bytes(Bits::new(1).unwrap(), vec![0; MAX_LIST_BYTES + 1]);
        let err = StatusList::from_cbor(&big.to_cbor()).unwrap_err();
        assert!(matches!(err, Error::TooLarge { .. }), "{err:?}");
    }
}
