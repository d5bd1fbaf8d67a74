//! The offline verification engine: presentation + trust snapshot + policy + time → [`Verdict`].
//!
//! Verdicts are three-valued. `Reject` is only given when the evidence proves the credential bad
//! (a broken signature, a revoked entry, an expired MSO). Whatever depends on registry state that
//! the kiosk may not have yet — an unknown issuer, a suspension that may have been lifted — is
//! `Undetermined` when the snapshot is older than the policy allows, never a false `Reject` and
//! never an `Accept`.

use std::collections::BTreeMap;
use std::fmt;

use crate::crypto::SoftwareKey;
use crate::mdoc::engagement::SessionTranscript;
use crate::mdoc::request::DeviceRequest;
use crate::mdoc::verify::{
    self as mdoc_verify, IssuerId, TrustAnchor, VerifiedDocument, VerifyContext,
};
use crate::status::{Status, StatusList};
use crate::timestamp::Timestamp;

/// Why a presentation is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RejectReason {
    /// Bytes that are not a valid structure.
    Malformed(String),
    /// The DeviceResponse status is not OK.
    ResponseStatus(u64),
    /// The response carries no document.
    NoDocuments,
    /// No trusted key or root matches the issuer.
    UntrustedIssuer,
    /// The issuer certificate does not chain or is outside its validity.
    Certificate(String),
    /// The issuer's signature over the MSO does not verify.
    IssuerSignature,
    /// An algorithm outside the profile.
    UnsupportedAlgorithm(String),
    /// The document's docType differs from the MSO's.
    DocTypeMismatch {
        /// docType in the MSO.
        expected: String,
        /// docType in the document.
        found: String,
    },
    /// The MSO is not valid yet.
    NotYetValid(Timestamp),
    /// The MSO has expired.
    Expired(Timestamp),
    /// A disclosed element has no digest in the MSO.
    ElementNotInMso {
        /// Namespace.
        namespace: String,
        /// Element identifier.
        element: String,
    },
    /// A disclosed element does not match its digest.
    DigestMismatch {
        /// Namespace.
        namespace: String,
        /// Element identifier.
        element: String,
    },
    /// An element (or document) was disclosed that the reader did not request.
    NotRequested {
        /// Namespace.
        namespace: String,
        /// Element identifier.
        element: String,
    },
    /// A device-signed element the MSO's keyAuthorizations do not allow.
    DeviceSignedNotAuthorized {
        /// Namespace.
        namespace: String,
        /// Element identifier.
        element: String,
    },
    /// The device signature or MAC is missing or wrong (e.g. a cloned credential).
    DeviceAuthentication(String),
    /// The credential is revoked.
    Revoked,
    /// The credential is suspended.
    Suspended,
    /// The status list holds a value Civis does not define.
    UnknownStatus(u8),
    /// The issuer is not accredited for this docType at this time.
    IssuerNotAccredited(String),
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed(m) => write!(f, "malformed: {m}"),
            Self::ResponseStatus(s) => write!(f, "device response status {s}"),
            Self::NoDocuments => f.write_str("no documents in the response"),
            Self::UntrustedIssuer => f.write_str("untrusted issuer: no trust anchor matches"),
            Self::Certificate(m) => write!(f, "issuer certificate: {m}"),
            Self::IssuerSignature => f.write_str("issuer signature does not verify"),
            Self::UnsupportedAlgorithm(m) => write!(f, "unsupported algorithm: {m}"),
            Self::DocTypeMismatch { expected, found } => {
                write!(f, "docType {found:?} does not match the MSO's {expected:?}")
            }
            Self::NotYetValid(t) => write!(f, "not yet valid (valid from {t})"),
            Self::Expired(t) => write!(f, "expired (valid until {t})"),
            Self::ElementNotInMso { namespace, element } => {
                write!(f, "element {namespace}/{element} is not in the MSO")
            }
            Self::DigestMismatch { namespace, element } => {
                write!(f, "element {namespace}/{element} does not match its digest")
            }
            Self::NotRequested { namespace, element } => {
                write!(f, "element {namespace}/{element} was not requested")
            }
            Self::DeviceSignedNotAuthorized { namespace, element } => {
                write!(
                    f,
                    "device-signed element {namespace}/{element} is not authorized by the MSO"
                )
            }
            Self::DeviceAuthentication(m) => write!(f, "device authentication failed: {m}"),
            Self::Revoked => f.write_str("credential revoked"),
            Self::Suspended => f.write_str("credential suspended"),
            Self::UnknownStatus(v) => write!(f, "unknown status value {v}"),
            Self::IssuerNotAccredited(d) => write!(f, "issuer not accredited for {d}"),
        }
    }
}

/// Why no verdict could be reached from the evidence at hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UndeterminedReason {
    /// Registry state is older than the policy allows.
    StaleTrustState {
        /// Age of the snapshot in seconds.
        age_secs: i64,
        /// The policy's maximum.
        max_secs: i64,
    },
    /// The credential names a status list the snapshot does not hold.
    StatusListUnavailable(String),
    /// The credential's index is outside its status list.
    StatusIndexOutOfRange(u64),
    /// A deviceMac cannot be checked without the reader's ephemeral key.
    MacKeyUnavailable,
    /// The snapshot is dated after the verification time: the kiosk clock is wrong.
    SnapshotFromTheFuture {
        /// How far ahead, in seconds.
        ahead_secs: i64,
    },
}

/// Clock difference tolerated between a snapshot's certified time and the verifier's clock.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

impl fmt::Display for UndeterminedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::StaleTrustState { age_secs, max_secs } => {
                write!(
                    f,
                    "registry state is {age_secs} s old (policy allows {max_secs} s)"
                )
            }
            Self::StatusListUnavailable(uri) => write!(f, "status list {uri} not available"),
            Self::StatusIndexOutOfRange(i) => write!(f, "status index {i} outside its list"),
            Self::MacKeyUnavailable => {
                f.write_str("deviceMac present but no reader key to check it")
            }
            Self::SnapshotFromTheFuture { ahead_secs } => {
                write!(
                    f,
                    "registry state is dated {ahead_secs} s after the verification time (clock wrong?)"
                )
            }
        }
    }
}

/// A non-accepting outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Proven bad.
    Reject(RejectReason),
    /// Not decidable from the evidence.
    Undetermined(UndeterminedReason),
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every check passed.
    Accept(Vec<VerifiedDocument>),
    /// Proven bad.
    Reject(RejectReason),
    /// Not decidable from the evidence.
    Undetermined(UndeterminedReason),
}

impl Verdict {
    /// `accept`, `reject` or `undetermined`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Accept(_) => "accept",
            Self::Reject(_) => "reject",
            Self::Undetermined(_) => "undetermined",
        }
    }

    /// The reason text, when not accepted.
    pub fn reason(&self) -> Option<String> {
        match self {
            Self::Accept(_) => None,
            Self::Reject(r) => Some(r.to_string()),
            Self::Undetermined(r) => Some(r.to_string()),
        }
    }
}

impl From<Refusal> for Verdict {
    fn from(r: Refusal) -> Self {
        match r {
            Refusal::Reject(r) => Self::Reject(r),
            Refusal::Undetermined(u) => Self::Undetermined(u),
        }
    }
}

/// An issuer's accreditation as the registry records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accreditation {
    /// The issuer's DID (every key the DID has had is covered).
    pub issuer: String,
    /// docTypes the issuer may issue.
    pub doc_types: Vec<String>,
    /// End of the accreditation.
    pub valid_until: Timestamp,
}

/// The registry state a kiosk verifies against, as plain data.
#[derive(Debug, Clone, Default)]
pub struct TrustSnapshot {
    /// Trusted issuer keys and IACA roots.
    pub anchors: Vec<TrustAnchor>,
    /// Issuer accreditations (matched by issuer DID); `None` means no accreditation registry
    /// (standalone use).
    pub accreditations: Option<Vec<Accreditation>>,
    /// Status lists by URI.
    pub status_lists: BTreeMap<String, StatusList>,
    /// The time the snapshot's state was certified; `None` when it is static (files).
    pub as_of: Option<Timestamp>,
}

/// What a verifier requires.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Maximum age of the snapshot in seconds; `None` for static trust (no registry).
    pub max_state_age_secs: Option<i64>,
}

impl Default for Policy {
    fn default() -> Self {
        // A kiosk that synced within a day may decide on its own.
        Self {
            max_state_age_secs: Some(24 * 3600),
        }
    }
}

/// A presentation as the kiosk received it.
#[derive(Debug, Clone, Copy)]
pub struct Presentation<'a> {
    /// DeviceResponse bytes.
    pub device_response: &'a [u8],
    /// The session transcript.
    pub transcript: &'a SessionTranscript,
    /// The kiosk's ephemeral key (for deviceMac).
    pub reader_key: Option<&'a SoftwareKey>,
    /// The kiosk's request.
    pub request: Option<&'a DeviceRequest>,
}

/// Verify a presentation offline.
pub fn verify_presentation(
    p: &Presentation<'_>,
    snapshot: &TrustSnapshot,
    policy: &Policy,
    now: Timestamp,
) -> Verdict {
    // A snapshot certified after "now" means a wrong clock (or a forged one); nothing built on
    // it can be trusted either way.
    if let Some(as_of) = snapshot.as_of
        && as_of.secs_since(now) > MAX_CLOCK_SKEW_SECS
    {
        return Verdict::Undetermined(UndeterminedReason::SnapshotFromTheFuture {
            ahead_secs: as_of.secs_since(now),
        });
    }
    let stale = match (policy.max_state_age_secs, snapshot.as_of) {
        (Some(max), Some(as_of)) if now.secs_since(as_of) > max => {
            Some(UndeterminedReason::StaleTrustState {
                age_secs: now.secs_since(as_of),
                max_secs: max,
            })
        }
        (Some(max), None) => Some(UndeterminedReason::StaleTrustState {
            age_secs: i64::MAX,
            max_secs: max,
        }),
        _ => None,
    };
    let ctx = VerifyContext {
        transcript: p.transcript,
        anchors: &snapshot.anchors,
        at: now,
        reader_key: p.reader_key,
        request: p.request,
    };
    let docs = match mdoc_verify::verify_bytes(p.device_response, &ctx) {
        Ok(docs) => docs,
        // An unknown issuer may have been registered after a stale snapshot was taken.
        Err(Refusal::Reject(RejectReason::UntrustedIssuer)) => {
            return match stale {
                Some(reason) => Verdict::Undetermined(reason),
                None => Verdict::Reject(RejectReason::UntrustedIssuer),
            };
        }
        Err(r) => return r.into(),
    };
    for doc in &docs {
        if let Err(r) = check_registry(doc, snapshot, now, stale.is_some()) {
            return r.into();
        }
    }
    match stale {
        Some(reason) => Verdict::Undetermined(reason),
        None => Verdict::Accept(docs),
    }
}

fn check_registry(
    doc: &VerifiedDocument,
    snapshot: &TrustSnapshot,
    now: Timestamp,
    stale: bool,
) -> Result<(), Refusal> {
    if let (Some(accs), IssuerId::Did(kid)) = (&snapshot.accreditations, &doc.issuer) {
        let did = kid.split_once('#').map_or(kid.as_str(), |(d, _)| d);
        let ok = accs.iter().any(|a| {
            a.issuer == did && a.doc_types.contains(&doc.doc_type) && now <= a.valid_until
        });
        if !ok && !stale {
            return Err(Refusal::Reject(RejectReason::IssuerNotAccredited(
                doc.doc_type.clone(),
            )));
        }
    }
    if let Some(status) = &doc.status {
        let list = snapshot.status_lists.get(&status.uri).ok_or_else(|| {
            Refusal::Undetermined(UndeterminedReason::StatusListUnavailable(
                status.uri.clone(),
            ))
        })?;
        let value = list.get(status.idx).ok_or(Refusal::Undetermined(
            UndeterminedReason::StatusIndexOutOfRange(status.idx),
        ))?;
        match Status::from_value(value) {
            Some(Status::Valid) => {}
            // Revocation is final, so even an old snapshot proves it.
            Some(Status::Invalid) => return Err(Refusal::Reject(RejectReason::Revoked)),
            // A suspension may have been lifted since a stale snapshot.
            Some(Status::Suspended) if !stale => {
                return Err(Refusal::Reject(RejectReason::Suspended));
            }
            Some(Status::Suspended) => {}
            None => return Err(Refusal::Reject(RejectReason::UnknownStatus(value))),
        }
    }
    Ok(())
}
