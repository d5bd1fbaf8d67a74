//! `DeviceResponse` and what it holds: documents, issuer-signed and device-signed parts.

use ciborium::Value;

use super::item::IssuerSignedItem;
use super::signed::{Mac0, Sign1};
use crate::cbor::{CborForm, Tagged, access, text, text_map};
use crate::error::{Error, Result};

/// Element values by namespace: `[(namespace, [(element, value)])]`, in encoded order.
pub type NameSpaced<T> = Vec<(String, Vec<(String, T)>)>;

/// `IssuerSigned = {? "nameSpaces": IssuerNameSpaces, "issuerAuth": COSE_Sign1}`.
#[derive(Debug, Clone, PartialEq)]
pub struct IssuerSigned {
    /// namespace → items (each as tag-24 bytes).
    pub name_spaces: Option<Vec<(String, Vec<Tagged<IssuerSignedItem>>)>>,
    /// The issuer's COSE_Sign1 over the MSO.
    pub issuer_auth: Sign1,
}

impl CborForm for IssuerSigned {
    const WHAT: &'static str = "IssuerSigned";
    const MAX_LEN: usize = 512 * 1024;

    fn from_value(v: &Value) -> Result<Self> {
        const W: &str = "IssuerSigned";
        let m = access::map(W, v)?;
        access::only_keys(W, m, &["nameSpaces", "issuerAuth"])?;
        let name_spaces = match access::get(W, m, "nameSpaces")? {
            None => None,
            Some(ns) => {
                let mut out = Vec::new();
                for (name, items) in access::map(W, ns)? {
                    let items = access::array(W, items)?
                        .iter()
                        .map(Tagged::<IssuerSignedItem>::from_value)
                        .collect::<Result<Vec<_>>>()?;
                    if items.is_empty() {
                        return Err(Error::malformed(W, "namespace with no items"));
                    }
                    out.push((access::text(W, name)?.to_owned(), items));
                }
                Some(out)
            }
        };
        Ok(Self {
            name_spaces,
            issuer_auth: Sign1::from_value(access::req(W, m, "issuerAuth")?)?,
        })
    }

    fn to_value(&self) -> Value {
        let mut e = Vec::new();
        if let Some(ns) = &self.name_spaces {
            e.push((
                "nameSpaces",
                Value::Map(
                    ns.iter()
                        .map(|(n, items)| {
                            (
                                text(n),
                                Value::Array(items.iter().map(Tagged::to_value).collect()),
                            )
                        })
                        .collect(),
                ),
            ));
        }
        e.push(("issuerAuth", self.issuer_auth.to_value()));
        text_map(e)
    }
}

/// `DeviceNameSpaces = {* namespace => {+ element => value}}`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeviceNameSpaces(pub NameSpaced<Value>);

impl CborForm for DeviceNameSpaces {
    const WHAT: &'static str = "DeviceNameSpaces";
    const MAX_LEN: usize = 64 * 1024;

    fn from_value(v: &Value) -> Result<Self> {
        const W: &str = "DeviceNameSpaces";
        let mut out = Vec::new();
        for (ns, els) in access::map(W, v)? {
            let mut items = Vec::new();
            for (id, val) in access::map(W, els)? {
                items.push((access::text(W, id)?.to_owned(), val.clone()));
            }
            out.push((access::text(W, ns)?.to_owned(), items));
        }
        Ok(Self(out))
    }

    fn to_value(&self) -> Value {
        Value::Map(
            self.0
                .iter()
                .map(|(ns, els)| {
                    (
                        text(ns),
                        Value::Map(els.iter().map(|(k, v)| (text(k), v.clone())).collect()),
                    )
                })
                .collect(),
        )
    }
}

/// `DeviceAuth`: a signature by the device key or a MAC with the session's EMacKey.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceAuth {
    /// `{"deviceSignature": COSE_Sign1}`.
    Signature(Sign1),
    /// `{"deviceMac": COSE_Mac0}`.
    Mac(Mac0),
}

impl CborForm for DeviceAuth {
    const WHAT: &'static str = "DeviceAuth";
    const MAX_LEN: usize = 16 * 1024;

    fn from_value(v: &Value) -> Result<Self> {
        const W: &str = "DeviceAuth";
        let m = access::map(W, v)?;
        access::only_keys(W, m, &["deviceSignature", "deviceMac"])?;
        match (
            access::get(W, m, "deviceSignature")?,
            access::get(W, m, "deviceMac")?,
        ) {
            (Some(s), None) => Ok(Self::Signature(Sign1::from_value(s)?)),
            (None, Some(mac)) => Ok(Self::Mac(Mac0::from_value(mac)?)),
            _ => Err(Error::malformed(
                W,
                "exactly one of deviceSignature and deviceMac",
            )),
        }
    }

    fn to_value(&self) -> Value {
        match self {
            Self::Signature(s) => text_map(vec![("deviceSignature", s.to_value())]),
            Self::Mac(m) => text_map(vec![("deviceMac", m.to_value())]),
        }
    }
}

/// `DeviceSigned = {"nameSpaces": DeviceNameSpacesBytes, "deviceAuth": DeviceAuth}`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSigned {
    /// Device-signed elements (tag-24 bytes).
    pub name_spaces: Tagged<DeviceNameSpaces>,
    /// Signature or MAC over DeviceAuthentication.
    pub device_auth: DeviceAuth,
}

impl CborForm for DeviceSigned {
    const WHAT: &'static str = "DeviceSigned";
    const MAX_LEN: usize = 64 * 1024;

    fn from_value(v: &Value) -> Result<Self> {
        const W: &str = "DeviceSigned";
        let m = access::map(W, v)?;
        access::only_keys(W, m, &["nameSpaces", "deviceAuth"])?;
        Ok(Self {
            name_spaces: Tagged::from_value(access::req(W, m, "nameSpaces")?)?,
            device_auth: DeviceAuth::from_value(access::req(W, m, "deviceAuth")?)?,
        })
    }

    fn to_value(&self) -> Value {
        text_map(vec![
            ("nameSpaces", self.name_spaces.to_value()),
            ("deviceAuth", self.device_auth.to_value()),
        ])
    }
}

/// Error codes per element (`Errors`): why an element was not returned.
pub type Errors = NameSpaced<i64>;

/// Error code: the element is not returned (18013-5 Table 9, code 0 "data not returned").
pub const ERROR_DATA_NOT_RETURNED: i64 = 0;

fn errors_from_value(v: &Value) -> Result<Errors> {
    const W: &str = "Errors";
    let mut out = Vec::new();
    for (ns, els) in access::map(W, v)? {
        let mut items = Vec::new();
        for (id, code) in access::map(W, els)? {
            let code = code
                .as_integer()
                .and_then(|i| i64::try_from(i).ok())
                .ok_or_else(|| Error::malformed(W, "error code is not an integer"))?;
            items.push((access::text(W, id)?.to_owned(), code));
        }
        out.push((access::text(W, ns)?.to_owned(), items));
    }
    Ok(out)
}

fn errors_to_value(e: &Errors) -> Value {
    Value::Map(
        e.iter()
            .map(|(ns, els)| {
                (
                    text(ns),
                    Value::Map(
                        els.iter()
                            .map(|(k, c)| (text(k), Value::Integer((*c).into())))
                            .collect(),
                    ),
                )
            })
            .collect(),
    )
}

/// `Document`.
#[derive(Debug, Clone, PartialEq)]
pub struct Document {
    /// The document type.
    pub doc_type: String,
    /// Issuer-signed part.
    pub issuer_signed: IssuerSigned,
    /// Device-signed part.
    pub device_signed: DeviceSigned,
    /// Elements requested but not returned, with codes.
    pub errors: Option<Errors>,
}

impl CborForm for Document {
    const WHAT: &'static str = "Document";
    const MAX_LEN: usize = 512 * 1024;

    fn from_value(v: &Value) -> Result<Self> {
        const W: &str = "Document";
        let m = access::map(W, v)?;
        access::only_keys(W, m, &["docType", "issuerSigned", "deviceSigned", "errors"])?;
        Ok(Self {
            doc_type: access::text(W, access::req(W, m, "docType")?)?.to_owned(),
            issuer_signed: IssuerSigned::from_value(access::req(W, m, "issuerSigned")?)?,
            device_signed: DeviceSigned::from_value(access::req(W, m, "deviceSigned")?)?,
            errors: access::get(W, m, "errors")?
                .map(errors_from_value)
                .transpose()?,
        })
    }

    fn to_value(&self) -> Value {
        let mut e = vec![
            ("docType", text(&self.doc_type)),
            ("issuerSigned", self.issuer_signed.to_value()),
            ("deviceSigned", self.device_signed.to_value()),
        ];
        if let Some(errs) = &self.errors {
            e.push(("errors", errors_to_value(errs)));
        }
        text_map(e)
    }
}

/// `DeviceResponse`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceResponse {
    /// `"1.0"`.
    pub version: String,
    /// Returned documents.
    pub documents: Option<Vec<Document>>,
    /// `documentErrors`, kept as encoded.
    pub document_errors: Option<Value>,
    /// Status code (0 = OK).
    pub status: u64,
}

/// Largest DeviceResponse accepted (a citizen credential with portrait is well under 64 KiB).
pub const MAX_DEVICE_RESPONSE_LEN: usize = 1024 * 1024;

impl CborForm for DeviceResponse {
    const WHAT: &'static str = "DeviceResponse";
    const MAX_LEN: usize = MAX_DEVICE_RESPONSE_LEN;

    fn from_value(v: &Value) -> Result<Self> {
        const W: &str = "DeviceResponse";
        let m = access::map(W, v)?;
        access::only_keys(W, m, &["version", "documents", "documentErrors", "status"])?;
        let version = access::text(W, access::req(W, m, "version")?)?;
        if version != "1.0" {
            return Err(Error::Unsupported(format!(
                "DeviceResponse version {version:?}"
            )));
        }
        Ok(Self {
            version: version.to_owned(),
            documents: access::get(W, m, "documents")?
                .map(|d| {
                    access::array(W, d)?
                        .iter()
                        .map(Document::from_value)
                        .collect()
                })
                .transpose()?,
            document_errors: access::get(W, m, "documentErrors")?.cloned(),
            status: access::uint(W, access::req(W, m, "status")?)?,
        })
    }

    fn to_value(&self) -> Value {
        let mut e = vec![("version", text(&self.version))];
        if let Some(docs) = &self.documents {
            e.push((
                "documents",
                Value::Array(docs.iter().map(Document::to_value).collect()),
            ));
        }
        if let Some(de) = &self.document_errors {
            e.push(("documentErrors", de.clone()));
        }
        e.push(("status", Value::Integer(self.status.into())));
        text_map(e)
    }
}
