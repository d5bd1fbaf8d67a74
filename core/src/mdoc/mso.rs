//! The MobileSecurityObject: what the issuer signs.

use ciborium::Value;

use crate::cbor::{CborForm, access, text, text_map};
use crate::cose;
use crate::crypto::EcPublicKey;
use crate::error::{Error, Result};
pub use crate::status::StatusRef;
use crate::timestamp::Timestamp;

/// Digest algorithms 18013-5 allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DigestAlgorithm {
    /// SHA-256 (what Civis issues).
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl DigestAlgorithm {
    /// The MSO's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha256 => "SHA-256",
            Self::Sha384 => "SHA-384",
            Self::Sha512 => "SHA-512",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "SHA-256" => Ok(Self::Sha256),
            "SHA-384" => Ok(Self::Sha384),
            "SHA-512" => Ok(Self::Sha512),
            other => Err(Error::Unsupported(format!("digest algorithm {other:?}"))),
        }
    }

    /// Digest of `data`.
    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use sha2::Digest;
        match self {
            Self::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Self::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Self::Sha512 => sha2::Sha512::digest(data).to_vec(),
        }
    }
}

/// A `tdate` (`#6.0(tstr)`), keeping its text so that re-encoding is exact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TDate {
    /// The RFC 3339 text as encoded.
    pub text: String,
    /// The instant it names.
    pub at: Timestamp,
}

impl TDate {
    /// A tdate for an instant (seconds precision, `Z`).
    pub fn new(at: Timestamp) -> Self {
        Self {
            text: at.to_rfc3339(),
            at,
        }
    }

    fn from_value(what: &'static str, v: &Value) -> Result<Self> {
        match v {
            Value::Tag(0, inner) => {
                let text = access::text(what, inner)?.to_owned();
                let at = Timestamp::parse_rfc3339(&text)?;
                Ok(Self { text, at })
            }
            _ => Err(Error::malformed(what, "expected tdate (#6.0)")),
        }
    }

    fn to_value(&self) -> Value {
        Value::Tag(0, Box::new(Value::Text(self.text.clone())))
    }
}

/// `ValidityInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidityInfo {
    /// When the MSO was signed.
    pub signed: TDate,
    /// Start of validity.
    pub valid_from: TDate,
    /// End of validity.
    pub valid_until: TDate,
    /// When the issuer expects to re-issue.
    pub expected_update: Option<TDate>,
}

/// Digests by namespace: `[(namespace, [(digestID, digest)])]`.
pub type ValueDigests = Vec<(String, Vec<(u64, Vec<u8>)>)>;

/// `MobileSecurityObject`.
#[derive(Debug, Clone, PartialEq)]
pub struct MobileSecurityObject {
    /// `"1.0"`.
    pub version: String,
    /// Digest algorithm of `value_digests`.
    pub digest_algorithm: DigestAlgorithm,
    /// namespace → [(digestID, digest)].
    pub value_digests: ValueDigests,
    /// The device key as a COSE_Key value (kept as encoded).
    pub device_key: Value,
    /// `keyAuthorizations`, if any.
    pub key_authorizations: Option<Value>,
    /// `keyInfo`, if any.
    pub key_info: Option<Value>,
    /// The document type.
    pub doc_type: String,
    /// Validity window.
    pub validity: ValidityInfo,
    /// Status list reference.
    pub status: Option<StatusRef>,
}

impl MobileSecurityObject {
    /// Decode the MSO an `issuerAuth` carries (`#6.24(bstr .cbor MSO)`), **without** checking
    /// the issuer's signature: for holders, which keep what they were given.
    pub fn from_issuer_auth(auth: &super::signed::Sign1) -> Result<Self> {
        const W: &str = "MobileSecurityObjectBytes";
        let payload = auth
            .cose
            .payload
            .as_deref()
            .ok_or_else(|| crate::Error::malformed(W, "no MSO payload"))?;
        let wrapped = crate::cbor::decode(W, payload, crate::cbor::Limits::new(Self::MAX_LEN))?;
        Self::from_slice(crate::cbor::access::tag24(W, &wrapped)?)
    }

    /// The device public key.
    pub fn device_public_key(&self) -> Result<EcPublicKey> {
        cose::cose_key_from_value(&self.device_key)
    }

    /// The digest for `(namespace, digest_id)`.
    pub fn digest(&self, namespace: &str, digest_id: u64) -> Option<&[u8]> {
        self.value_digests
            .iter()
            .find(|(ns, _)| ns == namespace)
            .and_then(|(_, ds)| ds.iter().find(|(id, _)| *id == digest_id))
            .map(|(_, d)| d.as_slice())
    }

    /// Whether `keyAuthorizations` lets the device sign `element` in `namespace`.
    pub fn device_may_sign(&self, namespace: &str, element: &str) -> bool {
        let Some(Value::Map(auth)) = &self.key_authorizations else {
            return false;
        };
        let ns_ok = auth.iter().any(|(k, v)| {
            k.as_text() == Some("nameSpaces")
                && v.as_array()
                    .is_some_and(|a| a.iter().any(|n| n.as_text() == Some(namespace)))
        });
        let el_ok = auth.iter().any(|(k, v)| {
            k.as_text() == Some("dataElements")
                && v.as_map().is_some_and(|m| {
                    m.iter().any(|(ns, els)| {
                        ns.as_text() == Some(namespace)
                            && els
                                .as_array()
                                .is_some_and(|a| a.iter().any(|e| e.as_text() == Some(element)))
                    })
                })
        });
        ns_ok || el_ok
    }
}

impl CborForm for MobileSecurityObject {
    const WHAT: &'static str = "MobileSecurityObject";
    const MAX_LEN: usize = 128 * 1024;

    fn from_value(v: &Value) -> Result<Self> {
        const W: &str = "MobileSecurityObject";
        let m = access::map(W, v)?;
        let mut value_digests = Vec::new();
        for (ns, digests) in access::map(W, access::req(W, m, "valueDigests")?)? {
            let ns = access::text(W, ns)?.to_owned();
            let mut ds = Vec::new();
            for (id, d) in access::map(W, digests)? {
                ds.push((access::uint(W, id)?, access::bytes(W, d)?.to_vec()));
            }
            value_digests.push((ns, ds));
        }
        let dki = access::map(W, access::req(W, m, "deviceKeyInfo")?)?;
        let vi = access::map(W, access::req(W, m, "validityInfo")?)?;
        let validity = ValidityInfo {
            signed: TDate::from_value(W, access::req(W, vi, "signed")?)?,
            valid_from: TDate::from_value(W, access::req(W, vi, "validFrom")?)?,
            valid_until: TDate::from_value(W, access::req(W, vi, "validUntil")?)?,
            expected_update: access::get(W, vi, "expectedUpdate")?
                .map(|v| TDate::from_value(W, v))
                .transpose()?,
        };
        if validity.valid_until.at < validity.valid_from.at {
            return Err(Error::invalid(W, "validUntil before validFrom"));
        }
        let mso = Self {
            version: access::text(W, access::req(W, m, "version")?)?.to_owned(),
            digest_algorithm: DigestAlgorithm::parse(access::text(
                W,
                access::req(W, m, "digestAlgorithm")?,
            )?)?,
            value_digests,
            device_key: access::req(W, dki, "deviceKey")?.clone(),
            key_authorizations: access::get(W, dki, "keyAuthorizations")?.cloned(),
            key_info: access::get(W, dki, "keyInfo")?.cloned(),
            doc_type: access::text(W, access::req(W, m, "docType")?)?.to_owned(),
            validity,
            status: access::get(W, m, "status")?
                .map(StatusRef::from_value)
                .transpose()?,
        };
        if mso.version != "1.0" {
            return Err(Error::Unsupported(format!("MSO version {:?}", mso.version)));
        }
        Ok(mso)
    }

    fn to_value(&self) -> Value {
        let digests = Value::Map(
            self.value_digests
                .iter()
                .map(|(ns, ds)| {
                    (
                        text(ns),
                        Value::Map(
                            ds.iter()
                                .map(|(id, d)| {
                                    (Value::Integer((*id).into()), Value::Bytes(d.clone()))
                                })
                                .collect(),
                        ),
                    )
                })
                .collect(),
        );
        let mut dki = vec![("deviceKey", self.device_key.clone())];
        if let Some(a) = &self.key_authorizations {
            dki.push(("keyAuthorizations", a.clone()));
        }
        if let Some(i) = &self.key_info {
            dki.push(("keyInfo", i.clone()));
        }
        let mut vi = vec![
            ("signed", self.validity.signed.to_value()),
            ("validFrom", self.validity.valid_from.to_value()),
            ("validUntil", self.validity.valid_until.to_value()),
        ];
        if let Some(e) = &self.validity.expected_update {
            vi.push(("expectedUpdate", e.to_value()));
        }
        let mut entries = vec![
            ("version", text(&self.version)),
            ("digestAlgorithm", text(self.digest_algorithm.name())),
            ("valueDigests", digests),
            ("deviceKeyInfo", text_map(dki)),
            ("docType", text(&self.doc_type)),
            ("validityInfo", text_map(vi)),
        ];
        if let Some(s) = &self.status {
            entries.push(("status", s.to_value()));
        }
        text_map(entries)
    }
}
