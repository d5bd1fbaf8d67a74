//! Holder logic: stored credentials, the consent decision, and building a `DeviceResponse` with
//! selective disclosure and a device signature. The card applet and phone wallets share it.

use civis_core::cbor::CborForm;
use civis_core::mdoc::response::{ERROR_DATA_NOT_RETURNED, Errors};
use civis_core::mdoc::{
    self, DeviceNameSpaces, DeviceRequest, DeviceResponse, Document, IssuerSigned,
    SessionTranscript,
};

use crate::device_key::{AsSigner, DeviceKey};
use crate::error::Result;

/// Codes in a DeviceResponse's `errors` map. 0 is ISO 18013-5's "data not returned"; Civis
/// defines 1000–1005 so a reader knows *why* (card-applet.md §6).
pub mod codes {
    /// ISO 18013-5: the element is not returned (not held, or the holder declined).
    pub const DATA_NOT_RETURNED: i64 = super::ERROR_DATA_NOT_RETURNED;
    /// The reader's accreditation does not cover the element.
    pub const NOT_ACCREDITED: i64 = 1000;
    /// The request had no valid ReaderAuth with a kiosk accreditation.
    pub const READER_NOT_AUTHENTICATED: i64 = 1001;
    /// The element needs the PIN and none was verified in this session.
    pub const PIN_REQUIRED: i64 = 1002;
    /// A PIN was presented and was wrong.
    pub const PIN_WRONG: i64 = 1003;
    /// The PIN is blocked (unblock with the PUK).
    pub const PIN_BLOCKED: i64 = 1004;
    /// The holder does not allow this element to be retained, and the reader asked to.
    pub const RETENTION_REFUSED: i64 = 1005;
}

/// A credential the holder stores: its docType and the issuer-signed part, all elements.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredCredential {
    /// Document type.
    pub doc_type: String,
    /// Issuer-signed items and the issuer's MSO signature.
    pub issuer_signed: IssuerSigned,
}

impl StoredCredential {
    /// Decode a stored `IssuerSigned` (as [`mdoc::issue::encode_issuer_signed`] writes it) and
    /// take the docType from its MSO.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let issuer_signed = IssuerSigned::from_slice(bytes)?;
        let mso = mdoc::MobileSecurityObject::from_issuer_auth(&issuer_signed.issuer_auth)?;
        Ok(Self {
            doc_type: mso.doc_type.clone(),
            issuer_signed,
        })
    }

    /// The value of `element` of `namespace`, if the credential holds it.
    pub fn element(&self, namespace: &str, element: &str) -> Option<&ciborium::Value> {
        self.issuer_signed
            .name_spaces
            .iter()
            .flatten()
            .filter(|(ns, _)| ns == namespace)
            .flat_map(|(_, items)| items.iter())
            .find(|i| i.inner().element_identifier == element)
            .map(|i| &i.inner().element_value)
    }

    /// Whether the credential holds `element` of `namespace`.
    pub fn holds(&self, namespace: &str, element: &str) -> bool {
        self.issuer_signed
            .name_spaces
            .iter()
            .flatten()
            .any(|(ns, items)| {
                ns == namespace
                    && items
                        .iter()
                        .any(|i| i.inner().element_identifier == element)
            })
    }
}

/// The decision for one requested element.
#[derive(Debug, Clone, PartialEq)]
pub enum Release {
    /// Disclose it.
    Release,
    /// Answer it with a device-signed value the holder computes (the election pseudonym's
    /// proof): it goes into DeviceNameSpaces, which the device signature covers.
    DeviceSigned(ciborium::Value),
    /// Withhold it; the code goes into `errors`.
    Withhold(i64),
}

/// One requested element, as the decision sees it.
#[derive(Debug, Clone, Copy)]
pub struct Requested<'a> {
    /// Index of the DocRequest in the DeviceRequest.
    pub doc_request: usize,
    /// Document type.
    pub doc_type: &'a str,
    /// Namespace.
    pub namespace: &'a str,
    /// Element identifier.
    pub element: &'a str,
    /// The reader's declared intent to retain the value.
    pub intent_to_retain: bool,
}

/// Build the DeviceResponse for `request`: for each DocRequest whose docType the holder has, the
/// elements `decide` releases are disclosed (original item bytes, so digests match), the rest
/// are listed in `errors`; elements `decide` answers with [`Release::DeviceSigned`] go into the
/// document's DeviceNameSpaces; the device key signs `DeviceAuthentication` over `transcript`.
///
/// `gate` may refuse a whole DocRequest (by index) with a code: it then gets no Document — no
/// MSO, no device signature, nothing that identifies the holder — only a `documentErrors`
/// entry. A docType the holder lacks goes into `documentErrors` with code 0.
pub fn respond(
    credentials: &[StoredCredential],
    request: &DeviceRequest,
    transcript: &SessionTranscript,
    key: &dyn DeviceKey,
    gate: &dyn Fn(usize) -> Option<i64>,
    decide: &mut dyn FnMut(Requested<'_>) -> Release,
) -> Result<DeviceResponse> {
    Ok(respond_released(credentials, request, transcript, key, gate, decide)?.0)
}

/// What each DocRequest (by index) got: the (namespace, element) pairs released, issuer-signed
/// ones in request order, then device-signed ones. DocRequests without a Document are absent.
pub type Released = Vec<(usize, Vec<(String, String)>)>;

/// [`respond`], also saying what was released to each DocRequest (the card's read log).
pub fn respond_released(
    credentials: &[StoredCredential],
    request: &DeviceRequest,
    transcript: &SessionTranscript,
    key: &dyn DeviceKey,
    gate: &dyn Fn(usize) -> Option<i64>,
    decide: &mut dyn FnMut(Requested<'_>) -> Release,
) -> Result<(DeviceResponse, Released)> {
    let mut given: Released = Vec::new();
    let mut documents = Vec::new();
    let mut refused: Vec<(String, i64)> = Vec::new();
    for (index, doc_request) in request.doc_requests.iter().enumerate() {
        let items = doc_request.items_request.inner();
        // documentErrors is a map: one entry per docType, the first refusal's code.
        let mut refuse = |code: i64| {
            if !refused.iter().any(|(d, _)| *d == items.doc_type) {
                refused.push((items.doc_type.clone(), code));
            }
        };
        if let Some(code) = gate(index) {
            refuse(code);
            continue;
        }
        let Some(credential) = credentials.iter().find(|c| c.doc_type == items.doc_type) else {
            refuse(codes::DATA_NOT_RETURNED);
            continue;
        };
        let mut released: Vec<(String, String)> = Vec::new();
        let mut device_signed = DeviceNameSpaces::default();
        let mut device_released: Vec<(String, String)> = Vec::new();
        let mut errors: Errors = Vec::new();
        for (ns, elements) in &items.name_spaces {
            let mut ns_errors = Vec::new();
            for (element, intent) in elements {
                // The decision comes first, so a reader learns which elements the credential
                // holds only for elements it may read.
                let decision = match decide(Requested {
                    doc_request: index,
                    doc_type: &items.doc_type,
                    namespace: ns,
                    element,
                    intent_to_retain: *intent,
                }) {
                    Release::Release if !credential.holds(ns, element) => {
                        Release::Withhold(codes::DATA_NOT_RETURNED)
                    }
                    d => d,
                };
                match decision {
                    Release::Release => released.push((ns.clone(), element.clone())),
                    Release::DeviceSigned(value) => {
                        device_released.push((ns.clone(), element.clone()));
                        match device_signed.0.iter_mut().find(|(n, _)| n == ns) {
                            Some((_, els)) => els.push((element.clone(), value)),
                            None => device_signed
                                .0
                                .push((ns.clone(), vec![(element.clone(), value)])),
                        }
                    }
                    Release::Withhold(code) => ns_errors.push((element.clone(), code)),
                }
            }
            if !ns_errors.is_empty() {
                errors.push((ns.clone(), ns_errors));
            }
        }
        let issuer_signed = mdoc::select(&credential.issuer_signed, |ns, el| {
            released.iter().any(|(n, e)| n == ns && e == el)
        });
        let device_signed =
            mdoc::sign_device(&AsSigner(key), transcript, &items.doc_type, device_signed)?;
        let mut all = released.clone();
        all.extend(device_released);
        given.push((index, all));
        documents.push(Document {
            doc_type: items.doc_type.clone(),
            issuer_signed,
            device_signed,
            errors: (!errors.is_empty()).then_some(errors),
        });
    }
    let document_errors = (!refused.is_empty()).then(|| {
        ciborium::Value::Map(
            refused
                .into_iter()
                .map(|(d, code)| {
                    (
                        ciborium::Value::Text(d),
                        ciborium::Value::Integer(code.into()),
                    )
                })
                .collect(),
        )
    });
    Ok((
        DeviceResponse {
            version: "1.0".into(),
            documents: (!documents.is_empty()).then_some(documents),
            document_errors,
            status: 0,
        },
        given,
    ))
}

/// What a phone wallet asks its user (or policy) before presenting.
pub trait Consent {
    /// Decide one requested element; `purpose` is the reader's declared purpose when it proved
    /// an accreditation.
    fn decide(&mut self, item: Requested<'_>, purpose: Option<&str>) -> Release;
}

/// A phone wallet's credential store and presentation policy.
#[derive(Debug, Clone, Default)]
pub struct Wallet {
    /// Stored credentials.
    pub credentials: Vec<StoredCredential>,
    /// Elements the holder never lets a reader retain: a request for one of them with
    /// intent-to-retain is refused with [`codes::RETENTION_REFUSED`].
    pub never_retain: Vec<(String, String)>,
}

impl Wallet {
    /// Answer a kiosk's QR engagement: the requested elements the policy and `consent` allow,
    /// device-signed over the engagement's transcript, sealed for the kiosk's key.
    pub fn present_qr(
        &self,
        engagement: &civis_core::qr::KioskEngagement,
        key: &dyn DeviceKey,
        consent: &mut dyn Consent,
        rng: &mut impl rand_core::CryptoRngCore,
    ) -> Result<civis_core::qr::QrPresentation> {
        let request = DeviceRequest {
            version: "1.0".into(),
            doc_requests: vec![civis_core::mdoc::DocRequest {
                items_request: civis_core::cbor::Tagged::new(engagement.request.clone()),
                reader_auth: None,
            }],
        };
        let response = self.present(&request, &engagement.transcript(), key, None, consent)?;
        Ok(civis_core::qr::QrPresentation::seal(
            engagement,
            &response.to_vec(),
            rng,
        )?)
    }

    /// Present for `request`: the retention policy first, then the consent hook.
    pub fn present(
        &self,
        request: &DeviceRequest,
        transcript: &SessionTranscript,
        key: &dyn DeviceKey,
        purpose: Option<&str>,
        consent: &mut dyn Consent,
    ) -> Result<DeviceResponse> {
        respond(
            &self.credentials,
            request,
            transcript,
            key,
            &|_| None,
            &mut |item| {
                let barred = self
                    .never_retain
                    .iter()
                    .any(|(ns, el)| ns == item.namespace && el == item.element);
                if item.intent_to_retain && barred {
                    Release::Withhold(codes::RETENTION_REFUSED)
                } else {
                    consent.decide(item, purpose)
                }
            },
        )
    }
}
