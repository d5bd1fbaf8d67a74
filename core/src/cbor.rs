//! Bounded CBOR decoding.
//!
//! Every byte string from outside goes through [`decode`]: a size check, then a structural
//! prescan ([`check_well_formed`]) that bounds depth and proves every declared length fits in the
//! remaining input *before* a decoder allocates for it, then `ciborium`. This is why hostile
//! headers such as "array of 2^63 items" cost nothing.

use ciborium::Value;

use crate::error::{Error, Result};

/// Default maximum nesting depth for Civis structures (an mdoc DeviceResponse needs about 10).
pub const MAX_DEPTH: usize = 32;

/// Limits applied while decoding one CBOR item.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Maximum total input size in bytes.
    pub max_len: usize,
    /// Maximum nesting depth of arrays, maps and tags.
    pub max_depth: usize,
}

impl Limits {
    /// Limits with the given size and the default depth.
    pub const fn new(max_len: usize) -> Self {
        Self {
            max_len,
            max_depth: MAX_DEPTH,
        }
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
    let end = check_well_formed(bytes, limits.max_depth).map_err(|e| match e {
        Error::Malformed { detail, .. } => Error::malformed(what, detail),
        other => other,
    })?;
    if end != bytes.len() {
        return Err(Error::malformed(
            what,
            format!(
                "{} trailing bytes after the CBOR item",
                bytes.len().saturating_sub(end)
            ),
        ));
    }
    ciborium::de::from_reader_with_recursion_limit(bytes, limits.max_depth.saturating_add(2))
        .map_err(|e| Error::malformed(what, format!("CBOR: {e}")))
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

/// Prescan one CBOR data item starting at offset 0; returns its end offset.
///
/// Checks: header well-formedness, declared lengths against the remaining input (each nested
/// item needs at least one byte), depth, UTF-8 of text strings, and `break` placement.
pub fn check_well_formed(bytes: &[u8], max_depth: usize) -> Result<usize> {
    let mut scanner = Scanner { bytes, pos: 0 };
    scanner.item(0, max_depth)?;
    Ok(scanner.pos)
}

struct Scanner<'a> {
    bytes: &'a [u8],
    pos: usize,
}

const WHAT: &str = "CBOR";

impl Scanner<'_> {
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

    /// Reads the argument of a header; `None` means indefinite length.
    fn argument(&mut self, info: u8) -> Result<Option<u64>> {
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

    fn item(&mut self, depth: usize, max_depth: usize) -> Result<()> {
        if depth > max_depth {
            return Err(Error::TooDeep(max_depth));
        }
        let initial = self.byte()?;
        let major = initial >> 5;
        let info = initial & 0x1f;
        let arg = self.argument(info)?;
        match (major, arg) {
            (0 | 1, Some(_)) => Ok(()),
            (2 | 3, Some(len)) => {
                let data = self.take(len)?;
                if major == 3 && std::str::from_utf8(data).is_err() {
                    return Err(Error::malformed(WHAT, "text string is not UTF-8"));
                }
                Ok(())
            }
            (2 | 3, None) => loop {
                // Indefinite string: definite chunks of the same major type, then break.
                let next = *self
                    .bytes
                    .get(self.pos)
                    .ok_or_else(|| Error::malformed(WHAT, "truncated"))?;
                if next == 0xff {
                    self.pos = self.pos.saturating_add(1);
                    return Ok(());
                }
                if next >> 5 != major || next & 0x1f == 31 {
                    return Err(Error::malformed(WHAT, "bad chunk in indefinite string"));
                }
                self.item(depth.saturating_add(1), max_depth)?;
            },
            (4 | 5, Some(count)) => {
                let per_entry: u64 = if major == 5 { 2 } else { 1 };
                let items = count
                    .checked_mul(per_entry)
                    .ok_or_else(|| Error::malformed(WHAT, "length overflows"))?;
                if items > self.remaining() as u64 {
                    return Err(Error::malformed(WHAT, "declared length exceeds the input"));
                }
                for _ in 0..items {
                    self.item(depth.saturating_add(1), max_depth)?;
                }
                Ok(())
            }
            (4 | 5, None) => {
                let mut n: u64 = 0;
                loop {
                    if self.bytes.get(self.pos) == Some(&0xff) {
                        self.pos = self.pos.saturating_add(1);
                        if major == 5 && n % 2 == 1 {
                            return Err(Error::malformed(WHAT, "map with a key and no value"));
                        }
                        return Ok(());
                    }
                    self.item(depth.saturating_add(1), max_depth)?;
                    n = n.saturating_add(1);
                }
            }
            (6, Some(_)) => self.item(depth.saturating_add(1), max_depth),
            // Only false, true, null and floats: `undefined` and unassigned simple values have
            // no meaning in any Civis format, and decoders disagree about them.
            (7, Some(_)) if matches!(info, 20..=22 | 25..=27) => Ok(()),
            (7, Some(_)) => Err(Error::malformed(
                WHAT,
                "simple value other than false/true/null",
            )),
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
    fn accepts_indefinite_lengths() {
        // [_ 1, [_ ], {_ "a": 1}]
        let bytes = [0x9f, 0x01, 0x9f, 0xff, 0xbf, 0x61, 0x61, 0x01, 0xff, 0xff];
        assert!(decode("test", &bytes, Limits::new(64)).is_ok());
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
