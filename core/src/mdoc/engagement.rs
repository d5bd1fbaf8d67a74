//! Engagement and session structures: DeviceEngagement, SessionTranscript, the
//! DeviceAuthentication / ReaderAuthentication payloads, SessionEstablishment and SessionData.

use ciborium::Value;

use super::request::ItemsRequest;
use super::response::DeviceNameSpaces;
use crate::cbor::{self, CborForm, Limits, Tagged, access, text, text_map};
use crate::cose;
use crate::crypto::EcPublicKey;
use crate::error::{Error, Result};

/// `DeviceEngagement = {0: tstr, 1: Security, ? 2: DeviceRetrievalMethods, ...}`, kept as decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceEngagement {
    value: Value,
    /// `EDeviceKey` from `Security = [1, EDeviceKeyBytes]`.
    pub e_device_key: EcPublicKey,
    /// The version string.
    pub version: String,
}

impl DeviceEngagement {
    /// Build an engagement with only version and security (the NFC static-handover form).
    pub fn new(e_device_key: &EcPublicKey) -> Self {
        let key_bytes = cbor::encode(&cose::cose_key_value(e_device_key));
        let value = Value::Map(vec![
            (Value::Integer(0.into()), text("1.0")),
            (
                Value::Integer(1.into()),
                Value::Array(vec![
                    Value::Integer(1.into()),
                    Value::Tag(24, Box::new(Value::Bytes(key_bytes))),
                ]),
            ),
        ]);
        Self {
            value,
            e_device_key: e_device_key.clone(),
            version: "1.0".into(),
        }
    }
}

impl CborForm for DeviceEngagement {
    const WHAT: &'static str = "DeviceEngagement";
    const MAX_LEN: usize = 4096;

    fn from_value(v: &Value) -> Result<Self> {
        const W: &str = "DeviceEngagement";
        let m = access::map(W, v)?;
        let version = access::text(
            W,
            access::get_int(W, m, 0)?.ok_or_else(|| Error::malformed(W, "no version"))?,
        )?;
        let security = access::array(
            W,
            access::get_int(W, m, 1)?.ok_or_else(|| Error::malformed(W, "no security"))?,
        )?;
        let [suite, key] = security else {
            return Err(Error::malformed(
                W,
                "Security must be [cipher suite, EDeviceKeyBytes]",
            ));
        };
        if access::uint(W, suite)? != 1 {
            return Err(Error::Unsupported("cipher suite other than 1".into()));
        }
        let key_bytes = access::tag24(W, key)?;
        let key_value = cbor::decode(W, key_bytes, Limits::new(512))?;
        Ok(Self {
            e_device_key: cose::cose_key_from_value(&key_value)?,
            version: version.to_owned(),
            value: v.clone(),
        })
    }

    fn to_value(&self) -> Value {
        self.value.clone()
    }
}

/// `SessionTranscript = [DeviceEngagementBytes / null, EReaderKeyBytes / null, Handover]`.
///
/// Kept as the exact bytes of the array, because every party must hash and sign the same bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionTranscript {
    raw: Vec<u8>,
}

impl SessionTranscript {
    /// From `SessionTranscriptBytes` (`#6.24(bstr)`) or the bare array encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        const W: &str = "SessionTranscript";
        let v = cbor::decode(W, bytes, Limits::new(64 * 1024))?;
        let raw = match &v {
            Value::Tag(24, _) => access::tag24(W, &v)?.to_vec(),
            _ => bytes.to_vec(),
        };
        let inner = cbor::decode(W, &raw, Limits::new(64 * 1024))?;
        if access::array(W, &inner)?.len() != 3 {
            return Err(Error::malformed(W, "expected an array of 3"));
        }
        Ok(Self { raw })
    }

    /// Build from engagement bytes, the reader key bytes and a handover value.
    pub fn new(
        device_engagement: Option<&[u8]>,
        e_reader_key: Option<&[u8]>,
        handover: Value,
    ) -> Self {
        let wrap = |b: Option<&[u8]>| match b {
            Some(b) => Value::Tag(24, Box::new(Value::Bytes(b.to_vec()))),
            None => Value::Null,
        };
        Self {
            raw: cbor::encode(&Value::Array(vec![
                wrap(device_engagement),
                wrap(e_reader_key),
                handover,
            ])),
        }
    }

    /// The array encoding.
    pub fn bytes(&self) -> &[u8] {
        &self.raw
    }

    /// `SessionTranscriptBytes = #6.24(bstr .cbor SessionTranscript)`.
    pub fn tagged_bytes(&self) -> Vec<u8> {
        cbor::encode(&Value::Tag(24, Box::new(Value::Bytes(self.raw.clone()))))
    }

    /// Splices `[context, SessionTranscript, rest...]` without re-encoding the transcript, then
    /// wraps it as `#6.24(bstr)`.
    fn wrapped(&self, context: &str, rest: &[Value]) -> Vec<u8> {
        let count = u8::try_from(rest.len().saturating_add(2)).unwrap_or(u8::MAX);
        let mut inner = vec![0x80 | count];
        inner.extend(cbor::encode(&text(context)));
        inner.extend_from_slice(&self.raw);
        for v in rest {
            inner.extend(cbor::encode(v));
        }
        cbor::encode(&Value::Tag(24, Box::new(Value::Bytes(inner))))
    }

    /// `DeviceAuthenticationBytes` for a document.
    pub fn device_authentication_bytes(
        &self,
        doc_type: &str,
        name_spaces: &Tagged<DeviceNameSpaces>,
    ) -> Vec<u8> {
        self.wrapped(
            "DeviceAuthentication",
            &[text(doc_type), name_spaces.to_value()],
        )
    }

    /// `ReaderAuthenticationBytes` for an items request.
    pub fn reader_authentication_bytes(&self, items_request: &Tagged<ItemsRequest>) -> Vec<u8> {
        self.wrapped("ReaderAuthentication", &[items_request.to_value()])
    }
}

/// `SessionEstablishment = {"eReaderKey": EReaderKeyBytes, "data": bstr}`.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEstablishment {
    /// The encoded COSE_Key of the reader's ephemeral key (content of the tag-24 bstr).
    pub e_reader_key_bytes: Vec<u8>,
    /// The reader's ephemeral public key.
    pub e_reader_key: EcPublicKey,
    /// The encrypted DeviceRequest.
    pub data: Vec<u8>,
}

impl CborForm for SessionEstablishment {
    const WHAT: &'static str = "SessionEstablishment";
    const MAX_LEN: usize = 256 * 1024;

    fn from_value(v: &Value) -> Result<Self> {
        const W: &str = "SessionEstablishment";
        let m = access::map(W, v)?;
        let key_bytes = access::tag24(W, access::req(W, m, "eReaderKey")?)?;
        let key_value = cbor::decode(W, key_bytes, Limits::new(512))?;
        Ok(Self {
            e_reader_key: cose::cose_key_from_value(&key_value)?,
            e_reader_key_bytes: key_bytes.to_vec(),
            data: access::bytes(W, access::req(W, m, "data")?)?.to_vec(),
        })
    }

    fn to_value(&self) -> Value {
        text_map(vec![
            (
                "eReaderKey",
                Value::Tag(24, Box::new(Value::Bytes(self.e_reader_key_bytes.clone()))),
            ),
            ("data", Value::Bytes(self.data.clone())),
        ])
    }
}

/// SessionData status: session encryption error.
pub const STATUS_ENCRYPTION_ERROR: u64 = 10;
/// SessionData status: CBOR decoding error.
pub const STATUS_DECODING_ERROR: u64 = 11;
/// SessionData status: session termination.
pub const STATUS_TERMINATION: u64 = 20;

/// `SessionData = {? "data": bstr, ? "status": uint}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionData {
    /// Encrypted message.
    pub data: Option<Vec<u8>>,
    /// Status code.
    pub status: Option<u64>,
}

impl CborForm for SessionData {
    const WHAT: &'static str = "SessionData";
    const MAX_LEN: usize = 1024 * 1024;

    fn from_value(v: &Value) -> Result<Self> {
        const W: &str = "SessionData";
        let m = access::map(W, v)?;
        let s = Self {
            data: access::get(W, m, "data")?
                .map(|d| access::bytes(W, d).map(<[u8]>::to_vec))
                .transpose()?,
            status: access::get(W, m, "status")?
                .map(|s| access::uint(W, s))
                .transpose()?,
        };
        if s.data.is_none() && s.status.is_none() {
            return Err(Error::malformed(W, "neither data nor status"));
        }
        Ok(s)
    }

    fn to_value(&self) -> Value {
        let mut e = Vec::new();
        if let Some(d) = &self.data {
            e.push(("data", Value::Bytes(d.clone())));
        }
        if let Some(s) = self.status {
            e.push(("status", Value::Integer(s.into())));
        }
        text_map(e)
    }
}
