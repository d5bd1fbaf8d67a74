//! Bounded CBOR decoding with the Civis profile.
//!
//! Every byte string from outside goes through [`decode`]: one pass that builds a
//! `ciborium::Value` while bounding size and depth and proving every declared length fits in the
//! remaining input *before* allocating for it, so hostile headers such as "array of 2^63 items"
//! cost nothing. The profile: preferred serialization (shortest arguments and floats), definite
//! lengths, no duplicate map keys, no simple values but false/true/null. Under it every decoded
//! value re-encodes to exactly its input, which is what lets digests and signatures be checked
//! over re-framed tag-24 items safely.

use ciborium::Value;

use crate::error::{Error, Result};

/// Default maximum nesting depth for Civis structures (an mdoc DeviceResponse needs about 10).
pub const MAX_DEPTH: usize = 32;

/// Default item budget: the most data items (each array, map, key, value, string or number)
/// one decode may build. A decoded item costs tens of bytes of memory while its encoding may
/// take one byte, so without a budget a 64 MiB input of one-byte items would cost gigabytes.
pub const DEFAULT_MAX_ITEMS: usize = 1 << 20;

/// Limits applied while decoding one CBOR item.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Maximum total input size in bytes.
    pub max_len: usize,
    /// Maximum nesting depth of arrays, maps and tags.
    pub max_depth: usize,
    /// Maximum number of data items built (see [`DEFAULT_MAX_ITEMS`]).
    pub max_items: usize,
}

impl Limits {
    /// Limits with the given size, the default depth and an item budget of at most
    /// [`DEFAULT_MAX_ITEMS`] (never more items than bytes).
    pub const fn new(max_len: usize) -> Self {
        Self {
            max_len,
            max_depth: MAX_DEPTH,
            max_items: if max_len < DEFAULT_MAX_ITEMS {
                max_len
            } else {
                DEFAULT_MAX_ITEMS
            },
        }
    }

    /// The same limits with another item budget.
    pub const fn with_items(mut self, max_items: usize) -> Self {
        self.max_items = max_items;
        self
    }
}

/// Decode exactly one CBOR item from `bytes` within `limits`; trailing bytes are an error.
pub fn decode(what: &'static str, bytes: &[u8], limits: Limits) -> Result<Value> {
    if bytes.len() > limits.max_len {
        return Err(Error::TooLarge {
            what,
            len: bytes.len(),
            limit: limits.max_len,
        });
    }
    let mut reader = Reader {
        bytes,
        pos: 0,
        items_left: limits.max_items,
    };
    let value = reader.item(0, limits.max_depth).map_err(|e| match e {
        Error::TooManyItems { .. } => Error::TooManyItems {
            what,
            limit: limits.max_items,
        },
        Error::Malformed { detail, .. } => Error::malformed(what, detail),
        other => other,
    })?;
    if reader.pos != bytes.len() {
        return Err(Error::malformed(
            what,
            format!(
                "{} trailing bytes after the CBOR item",
                bytes.len().saturating_sub(reader.pos)
            ),
        ));
    }
    Ok(value)
}

/// Encode a CBOR value (definite lengths, shortest integer forms).
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail for a Value; an error here would be a ciborium bug.
    if ciborium::ser::into_writer(value, &mut out).is_err() {
        out.clear();
    }
    out
}

/// A map with a repeated key is not valid CBOR (RFC 8949 §5.6); refusing it here keeps every
/// consumer from having to pick "first" or "last".
fn check_unique_keys(entries: &[(Value, Value)]) -> Result<()> {
    let dup = || Err(Error::malformed(WHAT, "duplicate map key"));
    if entries.len() <= 16 {
        for (i, (k, _)) in entries.iter().enumerate() {
            if entries
                .iter()
                .skip(i.saturating_add(1))
                .any(|(k2, _)| k2 == k)
            {
                return dup();
            }
        }
        return Ok(());
    }
    let mut seen = std::collections::HashSet::with_capacity(entries.len());
    for (k, _) in entries {
        if !seen.insert(encode(k)) {
            return dup();
        }
    }
    Ok(())
}

/// Check that `bytes` starts with one CBOR item within the profile and `max_depth`; returns its end.
pub fn check_well_formed(bytes: &[u8], max_depth: usize) -> Result<usize> {
    let mut reader = Reader {
        bytes,
        pos: 0,
        items_left: usize::MAX,
    };
    reader.item(0, max_depth)?;
    Ok(reader.pos)
}

/// The single-pass decoder behind [`decode`]. It replaced a prescan followed by ciborium's serde
/// walk: one pass is 2.3× faster on a DeviceResponse (README, performance table).
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Items this decode may still build.
    items_left: usize,
}

const WHAT: &str = "CBOR";

fn half_to_f64(h: u16) -> f64 {
    let exp = (h >> 10) & 0x1f;
    let mant = f64::from(h & 0x3ff);
    let mag = match exp {
        0 => mant * 2f64.powi(-24),
        31 if mant == 0.0 => f64::INFINITY,
        31 => f64::NAN,
        e => (1.0 + mant / 1024.0) * 2f64.powi(i32::from(e) - 15),
    };
    if h & 0x8000 != 0 { -mag } else { mag }
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.pos)
    }

    fn byte(&mut self) -> Result<u8> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or_else(|| Error::malformed(WHAT, "truncated"))?;
        self.pos = self.pos.saturating_add(1);
        Ok(b)
    }

    fn take(&mut self, n: u64) -> Result<&[u8]> {
        let n = usize::try_from(n).map_err(|_| Error::malformed(WHAT, "length overflows"))?;
        if n > self.remaining() {
            return Err(Error::malformed(WHAT, "declared length exceeds the input"));
        }
        let start = self.pos;
        self.pos = start.saturating_add(n);
        self.bytes
            .get(start..self.pos)
            .ok_or_else(|| Error::malformed(WHAT, "truncated"))
    }

    /// Reads the argument of a major type 0–6 header, which must be in its shortest form.
    /// `None` means indefinite length.
    fn argument(&mut self, info: u8) -> Result<Option<u64>> {
        let v = self.argument_raw(info)?;
        // Preferred serialization: the shortest form. With it (and definite lengths) every
        // decoded value re-encodes to exactly its input, so digests and signatures computed over
        // re-encoded wrappers always cover the bytes that were sent.
        let shortest = match (info, v) {
            (24, Some(v)) => v >= 24,
            (25, Some(v)) => v > 0xff,
            (26, Some(v)) => v > 0xffff,
            (27, Some(v)) => v > 0xffff_ffff,
            _ => true,
        };
        if !shortest {
            return Err(Error::malformed(
                WHAT,
                "integer or length not in its shortest form",
            ));
        }
        Ok(v)
    }

    /// Reads the raw argument of a header (for major type 7 the width is the float type, not a
    /// length, so no shortest-form rule applies here).
    fn argument_raw(&mut self, info: u8) -> Result<Option<u64>> {
        let n = match info {
            0..=23 => return Ok(Some(u64::from(info))),
            24 => 1,
            25 => 2,
            26 => 4,
            27 => 8,
            31 => return Ok(None),
            _ => return Err(Error::malformed(WHAT, "reserved additional information")),
        };
        let raw = self.take(n)?;
        Ok(Some(
            raw.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
        ))
    }

    fn count(&self, declared: u64, per_entry: u64) -> Result<usize> {
        let items = declared
            .checked_mul(per_entry)
            .ok_or_else(|| Error::malformed(WHAT, "length overflows"))?;
        if items > self.remaining() as u64 {
            return Err(Error::malformed(WHAT, "declared length exceeds the input"));
        }
        // Checked before the container's storage is allocated.
        if items > self.items_left as u64 {
            return Err(self.over_budget());
        }
        usize::try_from(declared).map_err(|_| Error::malformed(WHAT, "length overflows"))
    }

    fn text(data: Vec<u8>) -> Result<Value> {
        String::from_utf8(data)
            .map(Value::Text)
            .map_err(|_| Error::malformed(WHAT, "text string is not UTF-8"))
    }

    fn over_budget(&self) -> Error {
        Error::TooManyItems {
            what: WHAT,
            limit: self.items_left,
        }
    }

    fn item(&mut self, depth: usize, max_depth: usize) -> Result<Value> {
        if depth > max_depth {
            return Err(Error::TooDeep(max_depth));
        }
        self.items_left = self
            .items_left
            .checked_sub(1)
            .ok_or_else(|| self.over_budget())?;
        let start = self.pos;
        let initial = self.byte()?;
        let major = initial >> 5;
        let info = initial & 0x1f;
        let arg = if major == 7 {
            self.argument_raw(info)?
        } else {
            self.argument(info)?
        };
        if arg.is_none() && major != 7 {
            // Indefinite lengths re-encode differently; the Civis profile is definite-length only.
            return Err(Error::malformed(WHAT, "indefinite-length item"));
        }
        let inner = depth.saturating_add(1);
        match (major, arg) {
            (0, Some(n)) => Ok(Value::Integer(n.into())),
            (1, Some(n)) => {
                let v = -1i128 - i128::from(n);
                let int = ciborium::value::Integer::try_from(v)
                    .map_err(|_| Error::malformed(WHAT, "integer out of range"))?;
                Ok(Value::Integer(int))
            }
            (2, Some(len)) => Ok(Value::Bytes(self.take(len)?.to_vec())),
            (3, Some(len)) => Self::text(self.take(len)?.to_vec()),
            (4, Some(n)) => {
                let n = self.count(n, 1)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.item(inner, max_depth)?);
                }
                Ok(Value::Array(items))
            }
            (5, Some(n)) => {
                let n = self.count(n, 2)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let k = self.item(inner, max_depth)?;
                    let v = self.item(inner, max_depth)?;
                    entries.push((k, v));
                }
                check_unique_keys(&entries)?;
                Ok(Value::Map(entries))
            }
            (6, Some(tag)) => Ok(Value::Tag(tag, Box::new(self.item(inner, max_depth)?))),
            // Only false, true, null and floats: `undefined` and unassigned simple values have
            // no meaning in any Civis format, and decoders disagree about them.
            (7, Some(v)) => {
                let f = match info {
                    20 => return Ok(Value::Bool(false)),
                    21 => return Ok(Value::Bool(true)),
                    22 => return Ok(Value::Null),
                    25 => half_to_f64(v as u16),
                    26 => f64::from(f32::from_bits(v as u32)),
                    27 => f64::from_bits(v),
                    _ => {
                        return Err(Error::malformed(
                            WHAT,
                            "simple value other than false/true/null",
                        ));
                    }
                };
                // Preferred serialization for floats too: the shortest width that keeps the value.
                let value = Value::Float(f);
                if self.bytes.get(start..self.pos) != Some(encode(&value).as_slice()) {
                    return Err(Error::malformed(WHAT, "float not in its shortest form"));
                }
                Ok(value)
            }
            (7, None) => Err(Error::malformed(WHAT, "unexpected break")),
            _ => Err(Error::malformed(
                WHAT,
                "indefinite length on a major type that has none",
            )),
        }
    }
}

/// Read-only helpers over decoded [`Value`]s, each naming the structure for its error.
pub mod access {
    use super::*;

    /// The entries of a map.
    pub fn map<'v>(what: &'static str, v: &'v Value) -> Result<&'v [(Value, Value)]> {
        v.as_map()
            .map(Vec::as_slice)
            .ok_or_else(|| Error::malformed(what, "expected a map"))
    }

    /// The items of an array.
    pub fn array<'v>(what: &'static str, v: &'v Value) -> Result<&'v [Value]> {
        v.as_array()
            .map(Vec::as_slice)
            .ok_or_else(|| Error::malformed(what, "expected an array"))
    }

    /// A text string.
    pub fn text<'v>(what: &'static str, v: &'v Value) -> Result<&'v str> {
        v.as_text()
            .ok_or_else(|| Error::malformed(what, "expected a text string"))
    }

    /// A byte string.
    pub fn bytes<'v>(what: &'static str, v: &'v Value) -> Result<&'v [u8]> {
        v.as_bytes()
            .map(Vec::as_slice)
            .ok_or_else(|| Error::malformed(what, "expected a byte string"))
    }

    /// An unsigned integer that fits in `u64`.
    pub fn uint(what: &'static str, v: &Value) -> Result<u64> {
        v.as_integer()
            .and_then(|i| u64::try_from(i).ok())
            .ok_or_else(|| Error::malformed(what, "expected an unsigned integer"))
    }

    /// The value under a text key in a map, if present; duplicate keys are an error.
    pub fn get<'v>(
        what: &'static str,
        map: &'v [(Value, Value)],
        key: &str,
    ) -> Result<Option<&'v Value>> {
        let mut found = None;
        for (k, v) in map {
            if k.as_text() == Some(key) {
                if found.is_some() {
                    return Err(Error::malformed(what, format!("duplicate key {key:?}")));
                }
                found = Some(v);
            }
        }
        Ok(found)
    }

    /// Refuse text keys outside `allowed`: in these structures an unknown key is more likely a
    /// corrupted known one than an extension, and silently ignoring it can hide a disclosure.
    pub fn only_keys(what: &'static str, map: &[(Value, Value)], allowed: &[&str]) -> Result<()> {
        for (k, _) in map {
            match k.as_text() {
                Some(t) if allowed.contains(&t) => {}
                Some(t) => return Err(Error::malformed(what, format!("unknown key {t:?}"))),
                None => return Err(Error::malformed(what, "non-text key")),
            }
        }
        Ok(())
    }

    /// The value under a text key in a map, which must be present.
    pub fn req<'v>(what: &'static str, map: &'v [(Value, Value)], key: &str) -> Result<&'v Value> {
        get(what, map, key)?.ok_or_else(|| Error::malformed(what, format!("missing {key:?}")))
    }

    /// The value under an integer key in a map, if present.
    pub fn get_int<'v>(
        what: &'static str,
        map: &'v [(Value, Value)],
        key: i64,
    ) -> Result<Option<&'v Value>> {
        let mut found = None;
        for (k, v) in map {
            if k.as_integer().and_then(|i| i64::try_from(i).ok()) == Some(key) {
                if found.is_some() {
                    return Err(Error::malformed(what, format!("duplicate key {key}")));
                }
                found = Some(v);
            }
        }
        Ok(found)
    }

    /// The content of `#6.24(bstr)`: the embedded bytes.
    pub fn tag24<'v>(what: &'static str, v: &'v Value) -> Result<&'v [u8]> {
        match v {
            Value::Tag(24, inner) => bytes(what, inner),
            _ => Err(Error::malformed(what, "expected #6.24(bstr)")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_huge_declared_lengths_without_allocating() {
        // array(2^63), map(2^32), bstr(2^32): all must fail in the prescan.
        for bytes in [
            &[0x9b, 0x80, 0, 0, 0, 0, 0, 0, 0][..],
            &[0xba, 0xff, 0xff, 0xff, 0xff][..],
            &[0x5a, 0xff, 0xff, 0xff, 0xff, 0x00][..],
        ] {
            let err = decode("test", bytes, Limits::new(1024)).unwrap_err();
            assert!(matches!(err, Error::Malformed { .. }), "{err:?}");
        }
    }

    #[test]
    fn refuses_deep_nesting() {
        let bytes = vec![0x81; 200];
        assert_eq!(
            decode("test", &bytes, Limits::new(1024)).unwrap_err(),
            Error::TooDeep(MAX_DEPTH)
        );
    }

    #[test]
    fn refuses_trailing_bytes_and_oversize() {
        assert!(decode("test", &[0x01, 0x02], Limits::new(16)).is_err());
        assert!(matches!(
            decode("test", &[0x40; 17], Limits::new(16)).unwrap_err(),
            Error::TooLarge { .. }
        ));
    }

    #[test]
    fn agrees_with_ciborium_on_assorted_items() {
        let samples: Vec<Vec<u8>> = vec![
            vec![0x00],
            vec![0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            vec![0x1b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            vec![0xf9, 0x3c, 0x00],
            vec![0xf9, 0x7b, 0xff],
            vec![0xf9, 0x00, 0x01],
            vec![0xfa, 0x47, 0xc3, 0x50, 0x01],
            vec![0xfb, 0x3f, 0xf1, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a],
            vec![0xd8, 0x18, 0x43, 0xa1, 0x01, 0x26],
            vec![0xa2, 0x01, 0x80, 0x61, 0x78, 0xf6],
        ];
        for s in samples {
            let ours = decode("test", &s, Limits::new(64)).unwrap();
            let theirs: Value = ciborium::de::from_reader(s.as_slice()).unwrap();
            assert_eq!(ours, theirs, "{}", hex::encode(&s));
        }
    }

    #[test]
    fn refuses_indefinite_lengths_and_non_preferred_forms() {
        // [_ 1], (_ h'01'), 24 as 0x18 0x01, length 3 as 0x59 0x00 0x03.
        for bytes in [
            &[0x9f, 0x01, 0xff][..],
            &[0x5f, 0x41, 0x01, 0xff][..],
            &[0x18, 0x01][..],
            &[0x59, 0x00, 0x03, 1, 2, 3][..],
            &[0x1a, 0x00, 0x00, 0xff, 0xff][..],
            // 1.0 as a double: its shortest form is the half 0xf93c00.
            &[0xfb, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0][..],
        ] {
            assert!(
                decode("test", bytes, Limits::new(64)).is_err(),
                "{}",
                hex::encode(bytes)
            );
        }
        assert!(decode("test", &[0x18, 0x18], Limits::new(64)).is_ok());
    }

    #[test]
    fn refuses_duplicate_map_keys() {
        assert!(decode("test", &[0xa2, 0x01, 0x02, 0x01, 0x03], Limits::new(64)).is_err());
        let mut big = vec![0xb8, 20];
        for i in 0..20u8 {
            big.extend([0x10u8.min(i), 0xf6]);
        }
        assert!(
            decode("test", &big, Limits::new(64)).is_err(),
            "keys 16..19 all encode as 0x10"
        );
    }

    #[test]
    fn decoded_values_re_encode_to_their_input() {
        for h in [
            "a2617801617982f5f6",
            "d81843a10126",
            "3903e7",
            "5818000102030405060708090a0b0c0d0e0f1011121314151617",
            "fb3ff199999999999a",
        ] {
            let bytes = hex::decode(h).unwrap();
            assert_eq!(
                encode(&decode("test", &bytes, Limits::new(64)).unwrap()),
                bytes,
                "{h}"
            );
        }
    }

    #[test]
    fn refuses_undefined_and_unassigned_simple_values() {
        assert!(decode("test", &[0xf7], Limits::new(4)).is_err());
        assert!(decode("test", &[0xf0], Limits::new(4)).is_err());
        assert!(decode("test", &[0xf8, 0x40], Limits::new(4)).is_err());
        assert!(decode("test", &[0x83, 0xf4, 0xf5, 0xf6], Limits::new(4)).is_ok());
    }

    #[test]
    fn refuses_bad_utf8_and_stray_break() {
        assert!(decode("test", &[0x61, 0xff], Limits::new(16)).is_err());
        assert!(decode("test", &[0xff], Limits::new(16)).is_err());
    }
}

/// A structure with a fixed CBOR form: decoded from and encoded to [`Value`].
pub trait CborForm: Sized {
    /// Name used in errors.
    const WHAT: &'static str;
    /// Largest encoding accepted by [`CborForm::from_slice`].
    const MAX_LEN: usize;

    /// Interpret a decoded value.
    fn from_value(v: &Value) -> Result<Self>;

    /// The CBOR value.
    fn to_value(&self) -> Value;

    /// Decode from bytes within [`CborForm::MAX_LEN`] and the default depth.
    fn from_slice(bytes: &[u8]) -> Result<Self> {
        Self::from_value(&decode(Self::WHAT, bytes, Limits::new(Self::MAX_LEN))?)
    }

    /// Encode to bytes.
    fn to_vec(&self) -> Vec<u8> {
        encode(&self.to_value())
    }
}

/// `#6.24(bstr .cbor T)`: an embedded structure that keeps the exact bytes it was decoded from,
/// since digests and signatures are over those bytes, not over a re-encoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Tagged<T> {
    bytes: Vec<u8>,
    inner: T,
}

impl<T: CborForm> Tagged<T> {
    /// Wrap a structure, encoding it once.
    pub fn new(inner: T) -> Self {
        Self {
            bytes: inner.to_vec(),
            inner,
        }
    }

    /// Decode from a `#6.24(bstr)` value.
    pub fn from_value(v: &Value) -> Result<Self> {
        let bytes = access::tag24(T::WHAT, v)?;
        Ok(Self {
            inner: T::from_slice(bytes)?,
            bytes: bytes.to_vec(),
        })
    }

    /// The `#6.24(bstr)` value.
    pub fn to_value(&self) -> Value {
        Value::Tag(24, Box::new(Value::Bytes(self.bytes.clone())))
    }

    /// The embedded bytes (the content of the bstr).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The encoding of the whole `#6.24(bstr)` item — what 18013-5 digests and signs.
    pub fn tagged_bytes(&self) -> Vec<u8> {
        encode(&self.to_value())
    }

    /// The decoded structure.
    pub fn inner(&self) -> &T {
        &self.inner
    }
}

/// Build a CBOR text value.
pub fn text(s: &str) -> Value {
    Value::Text(s.to_owned())
}

/// Build a CBOR map from text keys.
pub fn text_map(entries: Vec<(&str, Value)>) -> Value {
    Value::Map(entries.into_iter().map(|(k, v)| (text(k), v)).collect())
}
