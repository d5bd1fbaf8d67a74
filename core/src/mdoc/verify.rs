//! `verify`: checks one DeviceResponse end to end.
//!
//! Issuer signature (through a DID key named by `kid`, or an `x5chain` chaining to a trusted IACA),
//! every disclosed digest, the validity window at the given time, the device signature or MAC over
//! the session transcript, the docType, and that only requested elements were disclosed. Time,
//! trust anchors and the reader's key are parameters.

use ciborium::Value;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::engagement::SessionTranscript;
use super::mso::{MobileSecurityObject, StatusRef, ValidityInfo};
use super::request::DeviceRequest;
use super::response::{DeviceAuth, DeviceResponse, Document, Errors, NameSpaced};
use crate::cbor::{self, CborForm, Limits};
use crate::cose::{self, Domain};
use crate::crypto::{EcPublicKey, SoftwareKey};
use crate::did::DidUrl;
use crate::error::Error;
use crate::session;
use crate::timestamp::Timestamp;
use crate::verdict::{Refusal, RejectReason, UndeterminedReason};
use crate::x509::Cert;

/// A key or certificate the verifier trusts to sign credentials.
#[derive(Debug, Clone)]
pub enum TrustAnchor {
    /// An IACA root: issuerAuth must carry an `x5chain` whose leaf it signed.
    Iaca(Box<Cert>),
    /// A `did:civis` issuer key, matched by `kid` (the DID URL) in issuerAuth.
    DidKey {
        /// The DID URL, e.g. `did:civis:…#key-1`.
        kid: DidUrl,
        /// The key.
        key: EcPublicKey,
    },
}

/// Who signed a verified document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IssuerId {
    /// The DID URL of the issuer key.
    Did(DidUrl),
    /// The subject of the document-signer certificate.
    Certificate(String),
}

/// What the verifier needs besides the response.
#[derive(Debug, Clone, Copy)]
pub struct VerifyContext<'a> {
    /// The session transcript both sides used.
    pub transcript: &'a SessionTranscript,
    /// Trusted issuer keys and roots.
    pub anchors: &'a [TrustAnchor],
    /// The time to judge validity at.
    pub at: Timestamp,
    /// The reader's ephemeral private key, needed to check a deviceMac.
    pub reader_key: Option<&'a SoftwareKey>,
    /// The request; without it every disclosed element counts as requested.
    pub request: Option<&'a DeviceRequest>,
}

/// A document that passed every check.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedDocument {
    /// Its document type.
    pub doc_type: String,
    /// Who issued it.
    pub issuer: IssuerId,
    /// Issuer-signed elements, namespace by namespace.
    pub disclosed: NameSpaced<Value>,
    /// Device-signed elements.
    pub device_signed: NameSpaced<Value>,
    /// Elements the holder did not return, with their codes.
    pub errors: Option<Errors>,
    /// The MSO validity window.
    pub validity: ValidityInfo,
    /// The MSO's status-list reference.
    pub status: Option<StatusRef>,
    /// The device key the MSO binds.
    pub device_key: EcPublicKey,
}

fn cert_message(e: Error) -> String {
    match e {
        Error::Certificate(m) => m,
        other => other.to_string(),
    }
}

fn reject(r: RejectReason) -> Refusal {
    Refusal::Reject(r)
}

fn malformed(e: Error) -> Refusal {
    reject(RejectReason::Malformed(e.to_string()))
}

/// Decode and verify a DeviceResponse; never panics, whatever the bytes.
pub fn verify_bytes(
    response: &[u8],
    ctx: &VerifyContext<'_>,
) -> Result<Vec<VerifiedDocument>, Refusal> {
    let resp = DeviceResponse::from_slice(response).map_err(malformed)?;
    verify(&resp, ctx)
}

/// Verify every document of a decoded DeviceResponse.
pub fn verify(
    resp: &DeviceResponse,
    ctx: &VerifyContext<'_>,
) -> Result<Vec<VerifiedDocument>, Refusal> {
    if resp.status != 0 {
        return Err(reject(RejectReason::ResponseStatus(resp.status)));
    }
    let docs = resp.documents.as_deref().unwrap_or_default();
    if docs.is_empty() {
        return Err(reject(RejectReason::NoDocuments));
    }
    docs.iter().map(|d| verify_document(d, ctx)).collect()
}

/// Find the issuer key: a DID key named by `kid`, else an `x5chain` leaf issued by a trusted IACA.
fn issuer_key(doc: &Document, ctx: &VerifyContext<'_>) -> Result<(EcPublicKey, IssuerId), Refusal> {
    let auth = &doc.issuer_signed.issuer_auth.cose;
    // A kid that is not a DID URL names no DID key; the x5chain path may still apply.
    if let Some(kid) = cose::kid(auth)
        .and_then(|k| std::str::from_utf8(k).ok())
        .and_then(|k| DidUrl::parse(k).ok())
    {
        for anchor in ctx.anchors {
            if let TrustAnchor::DidKey { kid: k, key } = anchor
                && *k == kid
            {
                return Ok((key.clone(), IssuerId::Did(k.clone())));
            }
        }
    }
    let chain = cose::x5chain(auth).map_err(malformed)?;
    if let Some(leaf) = chain.first() {
        let leaf =
            Cert::from_der(leaf).map_err(|e| reject(RejectReason::Certificate(cert_message(e))))?;
        let mut last_err = None;
        for anchor in ctx.anchors {
            // Only a root the leaf names can fail it; a leaf naming no trusted root is untrusted.
            if let TrustAnchor::Iaca(root) = anchor
                && leaf.names_issuer(root)
            {
                match leaf.verify_issued_by(root, ctx.at) {
                    Ok(()) => {
                        return Ok((
                            leaf.public_key().clone(),
                            IssuerId::Certificate(leaf.subject()),
                        ));
                    }
                    Err(e) => last_err = Some(e),
                }
            }
        }
        if let Some(e) = last_err {
            return Err(reject(RejectReason::Certificate(cert_message(e))));
        }
    }
    Err(reject(RejectReason::UntrustedIssuer))
}

fn verify_document(doc: &Document, ctx: &VerifyContext<'_>) -> Result<VerifiedDocument, Refusal> {
    let auth = &doc.issuer_signed.issuer_auth.cose;
    cose::check_alg(auth).map_err(|e| match e {
        Error::Unsupported(m) => reject(RejectReason::UnsupportedAlgorithm(m)),
        other => malformed(other),
    })?;
    if auth.payload.is_none() {
        return Err(malformed(Error::malformed("issuerAuth", "no MSO payload")));
    }
    let (issuer_key, issuer) = issuer_key(doc, ctx)?;
    cose::verify_sign1(auth, &issuer_key, Domain::IsoIssuerAuth, None)
        .map_err(|_| reject(RejectReason::IssuerSignature))?;

    // The payload is MobileSecurityObjectBytes = #6.24(bstr .cbor MSO).
    let payload = auth.payload.as_deref().unwrap_or_default();
    let wrapped = cbor::decode(
        "MobileSecurityObjectBytes",
        payload,
        Limits::new(MobileSecurityObject::MAX_LEN),
    )
    .map_err(malformed)?;
    let mso_bytes =
        cbor::access::tag24("MobileSecurityObjectBytes", &wrapped).map_err(malformed)?;
    let mso = MobileSecurityObject::from_slice(mso_bytes).map_err(malformed)?;

    if mso.doc_type != doc.doc_type {
        return Err(reject(RejectReason::DocTypeMismatch {
            expected: mso.doc_type.clone(),
            found: doc.doc_type.clone(),
        }));
    }
    if ctx.at < mso.validity.valid_from.at {
        return Err(reject(RejectReason::NotYetValid(
            mso.validity.valid_from.at,
        )));
    }
    if ctx.at > mso.validity.valid_until.at {
        return Err(reject(RejectReason::Expired(mso.validity.valid_until.at)));
    }

    let request = match ctx.request {
        Some(req) => Some(req.for_doc_type(&doc.doc_type).ok_or_else(|| {
            reject(RejectReason::NotRequested {
                namespace: String::new(),
                element: format!("document {}", doc.doc_type),
            })
        })?),
        None => None,
    };

    let mut disclosed = Vec::new();
    for (ns, items) in doc.issuer_signed.name_spaces.as_deref().unwrap_or_default() {
        let mut seen = Vec::with_capacity(items.len());
        let mut values = Vec::with_capacity(items.len());
        for item in items {
            let inner = item.inner();
            let element = &inner.element_identifier;
            if seen.contains(&inner.digest_id) {
                return Err(malformed(Error::invalid(
                    "IssuerSignedItem",
                    "digestID repeated in a namespace",
                )));
            }
            seen.push(inner.digest_id);
            let expected = mso.digest(ns, inner.digest_id).ok_or_else(|| {
                reject(RejectReason::ElementNotInMso {
                    namespace: ns.clone(),
                    element: element.clone(),
                })
            })?;
            if mso.digest_algorithm.digest(&item.tagged_bytes()) != expected {
                return Err(reject(RejectReason::DigestMismatch {
                    namespace: ns.clone(),
                    element: element.clone(),
                }));
            }
            if let Some(req) = request
                && !req.requests(ns, element)
            {
                return Err(reject(RejectReason::NotRequested {
                    namespace: ns.clone(),
                    element: element.clone(),
                }));
            }
            if mso.doc_type == super::citizen::DOC_TYPE && ns == super::citizen::NAMESPACE {
                super::citizen::check_element(element, &inner.element_value).map_err(malformed)?;
            }
            values.push((element.clone(), inner.element_value.clone()));
        }
        disclosed.push((ns.clone(), values));
    }

    let device_key = mso.device_public_key().map_err(malformed)?;
    let ds = &doc.device_signed;
    let da_bytes = ctx
        .transcript
        .device_authentication_bytes(&doc.doc_type, &ds.name_spaces);
    match &ds.device_auth {
        DeviceAuth::Signature(sig) => {
            cose::check_alg(&sig.cose)
                .map_err(|e| reject(RejectReason::DeviceAuthentication(e.to_string())))?;
            cose::verify_sign1(
                &sig.cose,
                &device_key,
                Domain::IsoDeviceAuth,
                Some(&da_bytes),
            )
            .map_err(|e| reject(RejectReason::DeviceAuthentication(e.to_string())))?;
        }
        DeviceAuth::Mac(mac) => {
            let Some(reader_key) = ctx.reader_key else {
                return Err(Refusal::Undetermined(UndeterminedReason::MacKeyUnavailable));
            };
            verify_device_mac(mac, reader_key, &device_key, ctx.transcript, &da_bytes)?;
        }
    }

    for (ns, els) in &ds.name_spaces.inner().0 {
        for (el, _) in els {
            if !mso.device_may_sign(ns, el) {
                return Err(reject(RejectReason::DeviceSignedNotAuthorized {
                    namespace: ns.clone(),
                    element: el.clone(),
                }));
            }
            if let Some(req) = request
                && !req.requests(ns, el)
            {
                return Err(reject(RejectReason::NotRequested {
                    namespace: ns.clone(),
                    element: el.clone(),
                }));
            }
        }
    }

    Ok(VerifiedDocument {
        doc_type: doc.doc_type.clone(),
        issuer,
        disclosed,
        device_signed: ds.name_spaces.inner().0.clone(),
        errors: doc.errors.clone(),
        validity: mso.validity.clone(),
        status: mso.status.clone(),
        device_key,
    })
}

fn verify_device_mac(
    mac: &super::signed::Mac0,
    reader_key: &SoftwareKey,
    device_key: &EcPublicKey,
    transcript: &SessionTranscript,
    da_bytes: &[u8],
) -> Result<(), Refusal> {
    use coset::iana;
    let fail = |m: &str| reject(RejectReason::DeviceAuthentication(m.to_owned()));
    match &mac.cose.protected.header.alg {
        Some(coset::RegisteredLabelWithPrivate::Assigned(iana::Algorithm::HMAC_256_256)) => {}
        _ => {
            return Err(fail(
                "deviceMac algorithm must be HMAC 256/256 in the protected header",
            ));
        }
    }
    if mac.cose.payload.is_some() {
        return Err(fail("deviceMac payload must be detached"));
    }
    let key = session::emac_key(reader_key, device_key, &transcript.tagged_bytes());
    let tbs = coset::mac_structure_data(
        coset::MacContext::CoseMac0,
        mac.cose.protected.clone(),
        b"",
        da_bytes,
    );
    let mut h = <Hmac<Sha256> as Mac>::new_from_slice(key.as_ref()).map_err(|_| fail("EMacKey"))?;
    h.update(&tbs);
    h.verify_slice(&mac.cose.tag)
        .map_err(|_| fail("deviceMac does not verify"))
}
