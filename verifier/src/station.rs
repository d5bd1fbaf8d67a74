//! The kiosk's state between taps, sans IO: the engagement QR on screen, the verdict on screen
//! and when it goes away. The screen server, the card reader loop and the CLI all verify
//! through [`judge`], so a presentation gets the same verdict whichever way it came in.

use civis_core::Timestamp;
use civis_core::crypto::SoftwareKey;
use civis_core::mdoc::{DeviceRequest, SessionTranscript};
use civis_core::qr::{KioskEngagement, QrPresentation};
use civis_core::verdict::UndeterminedReason;
use civis_core::verify::{Presentation, TrustSnapshot, Verdict, verify_presentation};
use rand_core::CryptoRngCore;

use crate::outcome::{Outcome, Reason};
use crate::policy::KioskPolicy;

/// The state a verdict rests on: the verified snapshot's trust, with its height and time.
#[derive(Debug, Clone)]
pub struct Trust {
    /// Issuer keys, accreditations and status lists.
    pub trust: TrustSnapshot,
    /// The certified height.
    pub height: u64,
    /// The certified header's time (what "synced at" means to a resident).
    pub state_time: i64,
}

/// Verify one presentation for `policy` against `trust` (none: never synced, so
/// undetermined) at `now`, and judge it by the policy.
pub fn judge(
    policy: &KioskPolicy,
    trust: Option<&Trust>,
    response: &[u8],
    transcript: &SessionTranscript,
    request: Option<&DeviceRequest>,
    now: i64,
) -> (Verdict, Outcome) {
    let verdict = match trust {
        None => never_synced(policy),
        Some(t) => {
            let p = Presentation {
                device_response: response,
                transcript,
                reader_key: None,
                request,
            };
            policy.judge(
                verify_presentation(&p, &t.trust, &policy.engine(), Timestamp(now)),
                now,
            )
        }
    };
    let mut outcome = Outcome::of_verdict(&verdict, policy, trust.map(|t| t.state_time));
    if outcome.reason == Reason::NotShared && refused_the_reader(response) {
        outcome.reason = Reason::KioskNotRecognised;
    }
    (verdict, outcome)
}

/// `documentErrors` code of a DocRequest the card refused because the reader's accreditation
/// did not verify (card-applet.md §6).
pub const READER_NOT_AUTHENTICATED: i64 = 1001;

/// Whether the card answered with no document because it refused the reader: every error
/// code in `documentErrors` is 1001. Then "not shared" would blame the resident for what is
/// the kiosk's (or the card's governance set's) problem.
fn refused_the_reader(response: &[u8]) -> bool {
    use civis_core::cbor::CborForm as _;
    let Ok(r) = civis_core::mdoc::DeviceResponse::from_slice(response) else {
        return false;
    };
    if r.documents.as_ref().is_some_and(|d| !d.is_empty()) {
        return false;
    }
    match r.document_errors.as_ref().and_then(ciborium::Value::as_map) {
        Some(m) if !m.is_empty() => m.iter().all(|(_, code)| {
            code.as_integer()
                .and_then(|i| i64::try_from(i).ok())
                .is_some_and(|c| c == READER_NOT_AUTHENTICATED)
        }),
        _ => false,
    }
}

/// The outcome when the kiosk has never synced: no state to decide on.
pub fn unsynced(policy: &KioskPolicy) -> Outcome {
    Outcome::of_verdict(&never_synced(policy), policy, None)
}

/// Undetermined: no snapshot at all is older than any policy allows.
fn never_synced(policy: &KioskPolicy) -> Verdict {
    Verdict::Undetermined(UndeterminedReason::StaleTrustState {
        age_secs: i64::MAX,
        max_secs: policy.max_age_secs,
    })
}

struct Engagement {
    shown: KioskEngagement,
    key: SoftwareKey,
    text: String,
}

impl Engagement {
    fn fresh(policy: &KioskPolicy, rng: &mut impl CryptoRngCore) -> Self {
        let (shown, key) = KioskEngagement::new(policy.items_request(), rng);
        let text = shown.to_text();
        Self { shown, key, text }
    }
}

/// One kiosk's screen state.
pub struct Station {
    policy: KioskPolicy,
    verdict_secs: i64,
    engagement: Engagement,
    engaged_at: Option<i64>,
    current: Option<(Outcome, i64)>,
    seq: u64,
    engagement_id: u64,
}

impl std::fmt::Debug for Station {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never prints the verdict's elements.
        f.debug_struct("Station")
            .field("policy", &self.policy)
            .field("seq", &self.seq)
            .finish_non_exhaustive()
    }
}

impl Station {
    /// A station for `policy` whose verdict screens last `verdict_secs`.
    pub fn new(policy: KioskPolicy, verdict_secs: i64, rng: &mut impl CryptoRngCore) -> Self {
        let engagement = Engagement::fresh(&policy, rng);
        Self {
            policy,
            verdict_secs: verdict_secs.max(1),
            engagement,
            engaged_at: None,
            current: None,
            seq: 0,
            engagement_id: 0,
        }
    }

    /// The engagement QR's text (`CVE1:…`) on screen now.
    pub fn engagement_text(&self) -> &str {
        &self.engagement.text
    }

    /// Changes whenever the screen does (the page redraws on a new value).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// A phone's answer (`CVP1:…`), read by the camera or a scanner. An answer that opens
    /// under the engagement on screen uses it up: the next one is fresh, so the same answer
    /// shown again (a replay) does not open.
    pub fn qr(
        &mut self,
        text: &str,
        trust: Option<&Trust>,
        now: i64,
        rng: &mut impl CryptoRngCore,
    ) -> Outcome {
        let opened = QrPresentation::from_text(text.trim())
            .map_err(|e| (Reason::Unreadable, e.to_string()))
            .and_then(|p| {
                p.open(&self.engagement.shown, &self.engagement.key)
                    .map_err(|e| match e {
                        // Only a failed decryption means "not sealed for this screen".
                        civis_core::Error::Decrypt => (Reason::WrongCode, e.to_string()),
                        other => (Reason::Unreadable, other.to_string()),
                    })
            });
        let outcome = match opened {
            Err((reason, detail)) => Outcome::refused(reason, detail),
            Ok(response) => {
                let transcript = self.engagement.shown.transcript();
                self.replace_engagement(rng);
                judge(&self.policy, trust, &response, &transcript, None, now).1
            }
        };
        self.show(outcome.clone(), now);
        outcome
    }

    /// Put `outcome` on screen until `now + verdict_secs`.
    pub fn show(&mut self, outcome: Outcome, now: i64) {
        self.current = Some((outcome, now.saturating_add(self.verdict_secs)));
        self.seq += 1;
    }

    /// The verdict on screen at `now`, if any; a verdict past its time is dropped (with the
    /// elements it showed).
    pub fn current(&mut self, now: i64) -> Option<&Outcome> {
        if self
            .current
            .as_ref()
            .is_some_and(|(_, until)| now >= *until)
        {
            self.clear();
        }
        self.current.as_ref().map(|(o, _)| o)
    }

    /// Mark a change of what the screen shows outside the verdict (a card being read).
    pub fn bump(&mut self) {
        self.seq += 1;
    }

    /// Back to the idle screen now ("Done").
    pub fn clear(&mut self) {
        if self.current.take().is_some() {
            self.seq += 1;
        }
    }

    /// Renew the engagement once it has been on screen for `max_secs` (from the first call
    /// that saw it): an answer photographed long ago then no longer opens. Returns whether it
    /// changed.
    pub fn expire_engagement(
        &mut self,
        now: i64,
        max_secs: i64,
        rng: &mut impl CryptoRngCore,
    ) -> bool {
        let since = *self.engaged_at.get_or_insert(now);
        if now.saturating_sub(since) < max_secs || self.current.is_some() {
            return false;
        }
        self.renew_engagement(rng);
        true
    }

    /// A new engagement (the screen's QR changes), e.g. after the engagement was shown for a
    /// long time.
    pub fn renew_engagement(&mut self, rng: &mut impl CryptoRngCore) {
        self.replace_engagement(rng);
        self.seq += 1;
    }

    /// A fresh engagement in place of the one on screen (the screen's `seq` moves with the
    /// verdict or renewal that caused it).
    fn replace_engagement(&mut self, rng: &mut impl CryptoRngCore) {
        self.engaged_at = None;
        self.engagement = Engagement::fresh(&self.policy, rng);
        self.engagement_id += 1;
    }

    /// Changes whenever the engagement QR does.
    pub fn engagement_id(&self) -> u64 {
        self.engagement_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Kind;
    use civis_core::cbor::CborForm as _;

    fn response(errors: Option<ciborium::Value>) -> Vec<u8> {
        civis_core::mdoc::DeviceResponse {
            version: "1.0".into(),
            documents: None,
            document_errors: errors,
            status: 0,
        }
        .to_vec()
    }

    #[test]
    fn a_card_that_refused_the_reader_is_not_the_residents_fault() {
        let policy = KioskPolicy::parse("age-over-18").unwrap();
        let trust = Trust {
            trust: civis_core::verify::TrustSnapshot {
                anchors: Vec::new(),
                accreditations: Some(Vec::new()),
                status_lists: Default::default(),
                as_of: Some(civis_core::timestamp::Timestamp(1_000)),
                retired_keys: Default::default(),
            },
            height: 1,
            state_time: 1_000,
        };
        let transcript =
            SessionTranscript::new(Some(&[1; 8]), Some(&[2; 8]), ciborium::Value::Null);
        let errors = |code: i64| {
            Some(ciborium::Value::Map(vec![(
                ciborium::Value::Text(civis_core::mdoc::citizen::DOC_TYPE.into()),
                ciborium::Value::Integer(code.into()),
            )]))
        };
        let judged = |bytes: &[u8]| judge(&policy, Some(&trust), bytes, &transcript, None, 1_000).1;
        let refused = judged(&response(errors(READER_NOT_AUTHENTICATED)));
        assert_eq!(refused.reason, Reason::KioskNotRecognised);
        assert_eq!(refused.kind, Kind::Reject);
        // Any other refusal, or none at all, stays "not shared".
        assert_eq!(judged(&response(errors(1000))).reason, Reason::NotShared);
        assert_eq!(judged(&response(None)).reason, Reason::NotShared);
    }
}
