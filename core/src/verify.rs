//! The offline verification engine: presentation + trust snapshot + policy + time → [`Verdict`].
//!
//! Verdicts are three-valued. `Reject` is only given when the evidence proves the credential bad
//! (a broken signature, a revoked entry, an expired MSO). Whatever depends on registry state that
//! the kiosk may not have yet — an unknown issuer, a suspension that may have been lifted — is
//! `Undetermined` when the snapshot is older than the policy allows, never a false `Reject` and
//! never an `Accept`.

use std::collections::BTreeMap;

use crate::crypto::SoftwareKey;
use crate::did::Did;
use crate::mdoc::engagement::SessionTranscript;
use crate::mdoc::request::DeviceRequest;
use crate::mdoc::verify::{
    self as mdoc_verify, IssuerId, TrustAnchor, VerifiedDocument, VerifyContext,
};
use crate::status::{Status, StatusList};
use crate::timestamp::Timestamp;

/// Clock difference tolerated between a snapshot's certified time and the verifier's clock.
pub const MAX_CLOCK_SKEW_SECS: i64 = 300;

pub use crate::verdict::{Refusal, RejectReason, UndeterminedReason};

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
    pub issuer: Did,
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
    /// Issuer keys their DID rotated away from, by DID URL, with the block time of the
    /// rotation: a credential such a key signed after that time is rejected.
    pub retired_keys: BTreeMap<String, Timestamp>,
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
        let ok = accs.iter().any(|a| {
            a.issuer == kid.did && a.doc_types.contains(&doc.doc_type) && now <= a.valid_until
        });
        if !ok && !stale {
            return Err(Refusal::Reject(RejectReason::IssuerNotAccredited(
                doc.doc_type.clone(),
            )));
        }
    }
    // A retirement is final, so even an old snapshot proves it.
    if let IssuerId::Did(kid) = &doc.issuer
        && let Some(at) = snapshot.retired_keys.get(&kid.to_string())
        && doc.validity.signed.at > *at
    {
        return Err(Refusal::Reject(RejectReason::IssuerKeyRetired {
            kid: kid.to_string(),
            at: *at,
        }));
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
