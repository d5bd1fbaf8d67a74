//! Why a verification did not accept: the reasons behind `reject` and `undetermined`.
//!
//! A leaf module: the mdoc checks ([`crate::mdoc::verify`]) and the engine that adds registry
//! state and policy ([`crate::verify`]) both speak these types, and neither depends on the other
//! for them.

use std::fmt;

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
    /// An element the kiosk's policy needs was not disclosed.
    ElementNotDisclosed {
        /// Namespace.
        namespace: String,
        /// Element identifier.
        element: String,
    },
    /// The disclosed elements do not meet the kiosk's policy (e.g. under 18, another district).
    PolicyUnmet(String),
    /// The election is not open now (e-voting).
    ElectionClosed {
        /// Opening time (Unix seconds).
        opens: i64,
        /// Closing time (Unix seconds, exclusive).
        closes: i64,
    },
    /// No valid election pseudonym: missing (no PIN, an old card), or its proof does not
    /// verify under the issuer-bound VRF key for this election.
    Pseudonym(String),
    /// This voter (pseudonym) already authenticated in this election, and the election refuses
    /// a second authentication.
    AlreadyAuthenticated,
    /// The issuer key had been rotated out (retired on chain) before the credential says it
    /// was signed.
    IssuerKeyRetired {
        /// The key's DID URL.
        kid: String,
        /// When the chain retired it.
        at: Timestamp,
    },
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
            Self::ElementNotDisclosed { namespace, element } => {
                write!(f, "element {namespace}/{element} was not disclosed")
            }
            Self::PolicyUnmet(why) => write!(f, "policy not met: {why}"),
            Self::ElectionClosed { opens, closes } => {
                write!(
                    f,
                    "the election is not open (open from {opens} until {closes})"
                )
            }
            Self::Pseudonym(why) => write!(f, "election pseudonym: {why}"),
            Self::AlreadyAuthenticated => f.write_str("already authenticated in this election"),
            Self::IssuerKeyRetired { kid, at } => write!(
                f,
                "issuer key {kid} was rotated out at {} before the credential was signed",
                at.0
            ),
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
