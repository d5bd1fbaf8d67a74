//! What one presentation came to at the kiosk: the verdict, a stable reason code (what the
//! screen explains and the database counts), and the policy's elements to show. Built from the
//! engine's verdict or from an intake failure; nothing in it outlives the verdict screen.

use ciborium::Value;
use civis_core::mdoc::citizen;
use civis_core::verdict::{RejectReason, UndeterminedReason};
use civis_core::verify::Verdict;

use crate::policy::{KioskPolicy, Rule};

/// The reasons a resident is told, each with a stable code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Accepted (no reason shown).
    Accepted,
    /// The status list says revoked.
    Revoked,
    /// The status list says suspended.
    Suspended,
    /// Past its validity.
    Expired,
    /// Before its validity.
    NotYetValid,
    /// Issuer unknown, not accredited for the docType, its key not valid when it signed, or
    /// the issuer signature does not verify.
    IssuerNotTrusted,
    /// Device authentication failed: a copy on another card or phone.
    NotThisDevice,
    /// An element the policy needs was not disclosed.
    NotShared,
    /// The card refused the kiosk's accreditation (`documentErrors` 1001): it does not follow
    /// the chain's governance set as the kiosk does (another chain, or a set that diverged),
    /// which is for staff, not the resident.
    KioskNotRecognised,
    /// `age-over-18` unmet.
    NotOver18,
    /// `resident-of` unmet.
    NotResident,
    /// Malformed, tampered or not what was asked.
    Unreadable,
    /// A QR answer that does not open under the engagement on screen (replayed, or made for
    /// another kiosk).
    WrongCode,
    /// The card link failed mid-read.
    CardError,
    /// The snapshot is older than the policy allows.
    Stale,
    /// Any other undetermined verdict.
    CannotCheck,
    /// `evote:` — the election's eligibility rule is not met.
    NotEligible,
    /// `evote:` — the election is not open now.
    ElectionClosed,
    /// `evote:` — no valid pseudonym (no PIN entered, or a card without e-voting).
    NoPseudonym,
    /// `evote:` — this voter already authenticated in this election.
    AlreadyAuthenticated,
    /// `evote:` — accepted, replacing an earlier authentication (the last one counts).
    Reauthenticated,
}

impl Reason {
    /// Stable code (JSON, the database, tests).
    pub fn code(self) -> &'static str {
        match self {
            Reason::Accepted => "accepted",
            Reason::Revoked => "revoked",
            Reason::Suspended => "suspended",
            Reason::Expired => "expired",
            Reason::NotYetValid => "not_yet_valid",
            Reason::IssuerNotTrusted => "issuer_not_trusted",
            Reason::NotThisDevice => "not_this_device",
            Reason::NotShared => "not_shared",
            Reason::KioskNotRecognised => "kiosk_not_recognised",
            Reason::NotOver18 => "not_over_18",
            Reason::NotResident => "not_resident",
            Reason::Unreadable => "unreadable",
            Reason::WrongCode => "wrong_code",
            Reason::CardError => "card_error",
            Reason::Stale => "stale",
            Reason::CannotCheck => "cannot_check",
            Reason::NotEligible => "not_eligible",
            Reason::ElectionClosed => "election_closed",
            Reason::NoPseudonym => "no_pseudonym",
            Reason::AlreadyAuthenticated => "already_authenticated",
            Reason::Reauthenticated => "reauthenticated",
        }
    }

    /// The reason of an engine reject under `policy`.
    pub fn of_reject(r: &RejectReason, policy: &KioskPolicy) -> Self {
        use RejectReason as R;
        match r {
            R::Revoked => Reason::Revoked,
            R::Suspended => Reason::Suspended,
            R::Expired(_) => Reason::Expired,
            R::NotYetValid(_) => Reason::NotYetValid,
            R::UntrustedIssuer
            | R::Certificate(_)
            | R::IssuerSignature
            | R::UnsupportedAlgorithm(_)
            | R::IssuerNotAccredited(_)
            | R::IssuerKeyRetired { .. }
            | R::UnknownStatus(_) => Reason::IssuerNotTrusted,
            R::DeviceAuthentication(_) => Reason::NotThisDevice,
            R::ElementNotDisclosed { .. } | R::NoDocuments => Reason::NotShared,
            R::PolicyUnmet(_) => match policy.rule {
                Rule::AgeOver18 => Reason::NotOver18,
                Rule::ResidentOf(_) => Reason::NotResident,
                Rule::Service { .. } => Reason::NotShared,
                Rule::Evote { .. } => Reason::NotEligible,
            },
            R::ElectionClosed { .. } => Reason::ElectionClosed,
            R::Pseudonym(_) => Reason::NoPseudonym,
            R::AlreadyAuthenticated => Reason::AlreadyAuthenticated,
            R::Malformed(_)
            | R::ResponseStatus(_)
            | R::DocTypeMismatch { .. }
            | R::ElementNotInMso { .. }
            | R::DigestMismatch { .. }
            | R::NotRequested { .. }
            | R::DeviceSignedNotAuthorized { .. } => Reason::Unreadable,
        }
    }
}

/// The verdict's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Green.
    Accept,
    /// Red.
    Reject,
    /// Amber.
    Undetermined,
}

impl Kind {
    /// `accept`, `reject` or `undetermined`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Accept => "accept",
            Kind::Reject => "reject",
            Kind::Undetermined => "undetermined",
        }
    }
}

/// One presentation's result at the kiosk.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Accept, reject or undetermined.
    pub kind: Kind,
    /// Why.
    pub reason: Reason,
    /// The engine's detail, for the operator's CLI output; never stored.
    pub detail: Option<String>,
    /// The policy's elements as disclosed, in the policy's order (accept only).
    pub shown: Vec<(String, Value)>,
    /// The time of the snapshot the verdict rests on (for "synced at").
    pub state_time: Option<i64>,
}

impl Outcome {
    /// The outcome of the engine's verdict (already judged by `policy`).
    pub fn of_verdict(verdict: &Verdict, policy: &KioskPolicy, state_time: Option<i64>) -> Self {
        match verdict {
            Verdict::Accept(docs) => {
                let shown = docs
                    .iter()
                    .find(|d| d.doc_type == citizen::DOC_TYPE)
                    .map(|d| {
                        policy
                            .shown(d)
                            .into_iter()
                            .map(|(k, v)| (k, v.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                Self {
                    kind: Kind::Accept,
                    reason: Reason::Accepted,
                    detail: None,
                    shown,
                    state_time,
                }
            }
            Verdict::Reject(r) => Self {
                kind: Kind::Reject,
                reason: Reason::of_reject(r, policy),
                detail: Some(r.to_string()),
                shown: Vec::new(),
                state_time,
            },
            Verdict::Undetermined(u) => Self {
                kind: Kind::Undetermined,
                reason: match u {
                    UndeterminedReason::StaleTrustState { .. } => Reason::Stale,
                    _ => Reason::CannotCheck,
                },
                detail: Some(u.to_string()),
                shown: Vec::new(),
                state_time,
            },
        }
    }

    /// A result that never reached the engine: a reject for an unreadable or foreign code, an
    /// undetermined for a card link that failed mid-read (tap again).
    pub fn refused(reason: Reason, detail: impl Into<String>) -> Self {
        Self {
            kind: if reason == Reason::CardError {
                Kind::Undetermined
            } else {
                Kind::Reject
            },
            reason,
            detail: Some(detail.into()),
            shown: Vec::new(),
            state_time: None,
        }
    }
}
