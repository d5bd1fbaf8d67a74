//! What a kiosk's service asks for and what its verdict needs (specs/kiosk-policies.md). A
//! policy names the citizen elements it requests — and the kiosk shows only those — and judges
//! an accepted presentation: a credential that verifies but does not meet the policy is a
//! reject with the policy's reason. Each policy has a maximum snapshot age: older state gives
//! `undetermined`, never `accept` and never a false `reject` (core's engine decides that).

use ciborium::Value;
use civis_core::chain::light::KioskSnapshot;
use civis_core::chain::table::Table;
use civis_core::evote::{self, Election, Pseudonym};
use civis_core::mdoc::citizen;
use civis_core::mdoc::{ItemsRequest, VerifiedDocument};
use civis_core::verdict::RejectReason;
use civis_core::verify::{Policy as EnginePolicy, Verdict};

/// Default maximum snapshot age: a day.
pub const DEFAULT_MAX_AGE_SECS: i64 = 24 * 3600;

/// A kiosk policy.
#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    /// `age-over-18`: discloses only `age_over_18`, which must be true.
    AgeOver18,
    /// `resident-of:<district>`: `resident_district` must be that district.
    ResidentOf(String),
    /// `service:<name>=<element>,<element>…`: the listed elements must be disclosed.
    Service {
        /// The service's name (shown, logged).
        name: String,
        /// Elements of the citizen namespace it needs.
        elements: Vec<String>,
    },
    /// `evote:<election>`: a polling station. Asks for the election's eligibility elements,
    /// the issuer-bound VRF key and the card's pseudonym for the election (after the PIN);
    /// accepts an eligible voter with a valid pseudonym while the election is open.
    Evote {
        /// The election id.
        election: String,
        /// The chain's record of the election and the chain id, once resolved against the
        /// synced snapshot ([`KioskPolicy::resolve`]).
        resolved: Option<Box<(Election, String)>>,
    },
}

/// A rule with its maximum snapshot age.
#[derive(Debug, Clone, PartialEq)]
pub struct KioskPolicy {
    /// What is asked and judged.
    pub rule: Rule,
    /// Older snapshots give `undetermined`.
    pub max_age_secs: i64,
}

/// Why a policy name does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "policy {0:?}: use age-over-18, resident-of:DISTRICT, service:NAME=ELEMENT,ELEMENT… or \
     evote:ELECTION"
)]
pub struct BadPolicy(pub String);

fn element_name(e: &str) -> bool {
    !e.is_empty()
        && e.len() <= 64
        && e.bytes()
            .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit())
}

impl KioskPolicy {
    /// Parse a policy name (`age-over-18`, `resident-of:Harbour`,
    /// `service:library=family_name,given_name`) with the default maximum age.
    pub fn parse(name: &str) -> Result<Self, BadPolicy> {
        let bad = || BadPolicy(name.chars().take(80).collect());
        let rule = if name == "age-over-18" {
            Rule::AgeOver18
        } else if let Some(d) = name.strip_prefix("resident-of:") {
            if d.is_empty() || d.chars().count() > 64 || d.chars().any(char::is_control) {
                return Err(bad());
            }
            Rule::ResidentOf(d.to_owned())
        } else if let Some(id) = name.strip_prefix("evote:") {
            if !evote::valid_election_id(id) {
                return Err(bad());
            }
            Rule::Evote {
                election: id.to_owned(),
                resolved: None,
            }
        } else if let Some(rest) = name.strip_prefix("service:") {
            let (svc, list) = rest.split_once('=').ok_or_else(bad)?;
            let elements: Vec<String> = list.split(',').map(str::to_owned).collect();
            let ok_name = !svc.is_empty()
                && svc.len() <= 32
                && svc.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
            if !ok_name
                || elements.is_empty()
                || elements.len() > 16
                || !elements.iter().all(|e| element_name(e))
            {
                return Err(bad());
            }
            Rule::Service {
                name: svc.to_owned(),
                elements,
            }
        } else {
            return Err(bad());
        };
        Ok(Self {
            rule,
            max_age_secs: DEFAULT_MAX_AGE_SECS,
        })
    }

    /// The policy as logged and shown: a service by its name, not its element list.
    pub fn name(&self) -> String {
        match &self.rule {
            Rule::AgeOver18 => "age-over-18".into(),
            Rule::ResidentOf(d) => format!("resident-of:{d}"),
            Rule::Service { name, .. } => format!("service:{name}"),
            Rule::Evote { election, .. } => format!("evote:{election}"),
        }
    }

    /// For `evote:`, look the election up in the synced snapshot (its record names what a
    /// voter must prove). Other policies need nothing from the chain.
    pub fn resolve(&mut self, snapshot: &KioskSnapshot, chain: &str) -> Result<(), String> {
        let Rule::Evote { election, resolved } = &mut self.rule else {
            return Ok(());
        };
        let record = snapshot
            .tree()
            .get(Table::Election, election.as_bytes())
            .ok_or_else(|| format!("election {election:?} is not on the synced chain"))?;
        let e = Election::from_record(election, record).map_err(|e| e.to_string())?;
        // The chain checks the rule too; a station never asks for what identifies a voter.
        Election::check_rule(&e.eligibility).map_err(|e| e.to_string())?;
        *resolved = Some(Box::new((e, chain.to_owned())));
        Ok(())
    }

    /// The resolved election of an `evote:` policy.
    pub fn election(&self) -> Option<&Election> {
        match &self.rule {
            Rule::Evote {
                resolved: Some(r), ..
            } => Some(&r.0),
            _ => None,
        }
    }

    /// The pseudonym an accepted `evote:` presentation proved.
    pub fn pseudonym(&self, doc: &VerifiedDocument) -> Option<Pseudonym> {
        match &self.rule {
            Rule::Evote {
                election,
                resolved: Some(r),
            } => evote::pseudonym(doc, &r.1, election).ok(),
            _ => None,
        }
    }

    /// The citizen elements this policy requests, and the only ones the kiosk shows.
    pub fn elements(&self) -> Vec<String> {
        match &self.rule {
            Rule::AgeOver18 => vec!["age_over_18".into()],
            Rule::ResidentOf(_) => vec!["resident_district".into()],
            Rule::Service { elements, .. } => elements.clone(),
            Rule::Evote { .. } => {
                let mut els = self.election().map(Election::elements).unwrap_or_default();
                els.push(evote::VRF_KEY.into());
                els
            }
        }
    }

    /// The elements an accept shows: the policy's, except the VRF key.
    fn shown_elements(&self) -> Vec<String> {
        match &self.rule {
            Rule::Evote { .. } => self.election().map(Election::elements).unwrap_or_default(),
            _ => self.elements(),
        }
    }

    /// The request a kiosk sends for this policy (intent to retain: false for every element).
    pub fn items_request(&self) -> ItemsRequest {
        let mut name_spaces = vec![(
            citizen::NAMESPACE.into(),
            self.elements().into_iter().map(|e| (e, false)).collect(),
        )];
        let mut request_info = None;
        if let Rule::Evote { election, .. } = &self.rule {
            // The pseudonym is device-signed; the election it is for rides in requestInfo,
            // which the ReaderAuth signature covers.
            name_spaces.push((
                evote::NAMESPACE.into(),
                vec![(evote::PSEUDONYM.into(), false)],
            ));
            request_info = Some(Value::Map(vec![(
                Value::Text(evote::REQUEST_INFO_ELECTION.into()),
                Value::Text(election.clone()),
            )]));
        }
        ItemsRequest {
            doc_type: citizen::DOC_TYPE.into(),
            name_spaces,
            request_info,
        }
    }

    /// The engine's policy: the snapshot age this kiosk policy tolerates.
    pub fn engine(&self) -> EnginePolicy {
        EnginePolicy {
            max_state_age_secs: Some(self.max_age_secs),
        }
    }

    /// Judge the engine's verdict at `now`: an accept stands only if a citizen document meets
    /// the policy; a reject or undetermined stands as it is.
    pub fn judge(&self, verdict: Verdict, now: i64) -> Verdict {
        let Verdict::Accept(docs) = verdict else {
            return verdict;
        };
        let Some(doc) = docs.iter().find(|d| d.doc_type == citizen::DOC_TYPE) else {
            return Verdict::Reject(RejectReason::NoDocuments);
        };
        match self.meets(doc, now) {
            Ok(()) => Verdict::Accept(docs),
            Err(r) => Verdict::Reject(r),
        }
    }

    fn meets(&self, doc: &VerifiedDocument, now: i64) -> Result<(), RejectReason> {
        let get = |element: &str| {
            doc.disclosed
                .iter()
                .filter(|(ns, _)| ns == citizen::NAMESPACE)
                .flat_map(|(_, items)| items.iter())
                .find(|(id, _)| id == element)
                .map(|(_, v)| v)
                .ok_or_else(|| RejectReason::ElementNotDisclosed {
                    namespace: citizen::NAMESPACE.into(),
                    element: element.into(),
                })
        };
        match &self.rule {
            Rule::AgeOver18 => match get("age_over_18")? {
                Value::Bool(true) => Ok(()),
                _ => Err(RejectReason::PolicyUnmet("not over 18".into())),
            },
            Rule::ResidentOf(district) => match get("resident_district")? {
                Value::Text(d) if d == district => Ok(()),
                _ => Err(RejectReason::PolicyUnmet(format!(
                    "not a resident of {district}"
                ))),
            },
            Rule::Service { elements, .. } => {
                for e in elements {
                    get(e)?;
                }
                Ok(())
            }
            Rule::Evote { election, resolved } => {
                let Some(r) = resolved else {
                    return Err(RejectReason::PolicyUnmet(format!(
                        "election {election} is not on the synced chain"
                    )));
                };
                let (record, chain) = (&r.0, &r.1);
                if !record.open_at(now) {
                    return Err(RejectReason::ElectionClosed {
                        opens: record.opens,
                        closes: record.closes,
                    });
                }
                record.eligible(doc).map_err(RejectReason::PolicyUnmet)?;
                evote::pseudonym(doc, chain, election)
                    .map(drop)
                    .map_err(|e| RejectReason::Pseudonym(e.to_string()))
            }
        }
    }

    /// The disclosed elements this policy shows (and nothing else), as `(element, value)`.
    pub fn shown<'a>(&self, doc: &'a VerifiedDocument) -> Vec<(String, &'a Value)> {
        let wanted = self.shown_elements();
        doc.disclosed
            .iter()
            .filter(|(ns, _)| ns == citizen::NAMESPACE)
            .flat_map(|(_, items)| items.iter())
            .filter(|(id, _)| wanted.contains(id))
            .map(|(id, v)| (id.clone(), v))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_parse_to_rules_and_bad_names_are_refused() {
        assert_eq!(
            KioskPolicy::parse("age-over-18").unwrap().rule,
            Rule::AgeOver18
        );
        assert_eq!(
            KioskPolicy::parse("resident-of:Old Town").unwrap().rule,
            Rule::ResidentOf("Old Town".into())
        );
        let s = KioskPolicy::parse("service:library=family_name,given_name").unwrap();
        assert_eq!(s.elements(), ["family_name", "given_name"]);
        for bad in [
            "",
            "age-over-21",
            "resident-of:",
            "resident-of:a\nb",
            "service:x",
            "service:=a",
            "service:x=",
            "service:x=Family",
            "service:x=a,,b",
        ] {
            assert!(KioskPolicy::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            KioskPolicy::parse("age-over-18")
                .unwrap()
                .items_request()
                .name_spaces[0]
                .1,
            [("age_over_18".to_owned(), false)]
        );
    }
}
