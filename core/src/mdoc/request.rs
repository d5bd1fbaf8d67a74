//! `DeviceRequest`: what a reader asks for, optionally authenticated with ReaderAuth.

use ciborium::Value;

use super::response::NameSpaced;
use super::signed::Sign1;
use crate::cbor::{CborForm, Tagged, access, text, text_map};
use crate::error::{Error, Result};

/// `ItemsRequest = {"docType": tstr, "nameSpaces": {ns => {element => IntentToRetain}}, ? "requestInfo"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemsRequest {
    /// Requested document type.
    pub doc_type: String,
    /// namespace → [(element, intent to retain)].
    pub name_spaces: NameSpaced<bool>,
    /// `requestInfo`, kept as encoded.
    pub request_info: Option<Value>,
}

impl ItemsRequest {
    /// Whether `element` of `namespace` is requested.
    pub fn requests(&self, namespace: &str, element: &str) -> bool {
        self.name_spaces
            .iter()
            .any(|(ns, els)| ns == namespace && els.iter().any(|(e, _)| e == element))
    }
}

impl CborForm for ItemsRequest {
    const WHAT: &'static str = "ItemsRequest";
    const MAX_LEN: usize = 64 * 1024;

    fn from_value(v: &Value) -> Result<Self> {
        const W: &str = "ItemsRequest";
        let m = access::map(W, v)?;
        let mut name_spaces = Vec::new();
        for (ns, els) in access::map(W, access::req(W, m, "nameSpaces")?)? {
            let mut items = Vec::new();
            for (id, retain) in access::map(W, els)? {
                let retain = retain
                    .as_bool()
                    .ok_or_else(|| Error::malformed(W, "IntentToRetain is not a bool"))?;
                items.push((access::text(W, id)?.to_owned(), retain));
            }
            name_spaces.push((access::text(W, ns)?.to_owned(), items));
        }
        Ok(Self {
            doc_type: access::text(W, access::req(W, m, "docType")?)?.to_owned(),
            name_spaces,
            request_info: access::get(W, m, "requestInfo")?.cloned(),
        })
    }

    fn to_value(&self) -> Value {
        let ns = Value::Map(
            self.name_spaces
                .iter()
                .map(|(ns, els)| {
                    (
                        text(ns),
                        Value::Map(
                            els.iter()
                                .map(|(e, r)| (text(e), Value::Bool(*r)))
                                .collect(),
                        ),
                    )
                })
                .collect(),
        );
        let mut e = vec![("docType", text(&self.doc_type)), ("nameSpaces", ns)];
        if let Some(ri) = &self.request_info {
            e.push(("requestInfo", ri.clone()));
        }
        text_map(e)
    }
}

/// `DocRequest = {"itemsRequest": ItemsRequestBytes, ? "readerAuth": COSE_Sign1}`.
#[derive(Debug, Clone, PartialEq)]
pub struct DocRequest {
    /// The request (tag-24 bytes, signed over by readerAuth).
    pub items_request: Tagged<ItemsRequest>,
    /// Reader authentication over ReaderAuthentication.
    pub reader_auth: Option<Sign1>,
}

/// `DeviceRequest = {"version": tstr, "docRequests": [+ DocRequest]}`.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceRequest {
    /// `"1.0"`.
    pub version: String,
    /// One request per document type.
    pub doc_requests: Vec<DocRequest>,
}

impl DeviceRequest {
    /// The request for a document type, if any.
    pub fn for_doc_type(&self, doc_type: &str) -> Option<&ItemsRequest> {
        self.doc_requests
            .iter()
            .map(|d| d.items_request.inner())
            .find(|r| r.doc_type == doc_type)
    }
}

impl CborForm for DeviceRequest {
    const WHAT: &'static str = "DeviceRequest";
    const MAX_LEN: usize = 256 * 1024;

    fn from_value(v: &Value) -> Result<Self> {
        const W: &str = "DeviceRequest";
        let m = access::map(W, v)?;
        let doc_requests = access::array(W, access::req(W, m, "docRequests")?)?
            .iter()
            .map(|d| {
                let dm = access::map(W, d)?;
                Ok(DocRequest {
                    items_request: Tagged::from_value(access::req(W, dm, "itemsRequest")?)?,
                    reader_auth: access::get(W, dm, "readerAuth")?
                        .map(Sign1::from_value)
                        .transpose()?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        if doc_requests.is_empty() {
            return Err(Error::malformed(W, "no docRequests"));
        }
        Ok(Self {
            version: access::text(W, access::req(W, m, "version")?)?.to_owned(),
            doc_requests,
        })
    }

    fn to_value(&self) -> Value {
        let reqs = self
            .doc_requests
            .iter()
            .map(|d| {
                let mut e = vec![("itemsRequest", d.items_request.to_value())];
                if let Some(ra) = &d.reader_auth {
                    e.push(("readerAuth", ra.to_value()));
                }
                text_map(e)
            })
            .collect();
        text_map(vec![
            ("version", text(&self.version)),
            ("docRequests", Value::Array(reqs)),
        ])
    }
}
