//! E-voting authentication (specs/evote.md): the election record the chain holds, what a voter
//! must prove, and the election pseudonym a card proves with its VRF key.
//!
//! The card's VRF public key travels as the issuer-signed citizen element `vrf_key`, so the
//! issuer binds it to the credential like any other element, and a card releases it only to a
//! reader whose accreditation grants it. The pseudonym is the VRF output over
//! [`alpha`]`(chain, election)`; the card returns the proof as the device-signed element
//! `org.civis.evote.1/pseudonym`, which the MSO's `keyAuthorizations` allows.

use ciborium::Value;

use crate::cbor::{self, Limits, access, text, text_map};
use crate::cose::{self, Signer};
use crate::error::{Error, Result};
use crate::mdoc::{VerifiedDocument, citizen};
use crate::vrf::{self, OUTPUT_LEN, VrfProof, VrfPublicKey};

/// The device-signed namespace of the pseudonym.
pub const NAMESPACE: &str = "org.civis.evote.1";
/// The device-signed element: the 81-byte VRF proof, from which the pseudonym derives.
pub const PSEUDONYM: &str = "pseudonym";
/// The citizen element carrying the card's VRF public key (SEC1 compressed, 33 bytes).
pub const VRF_KEY: &str = "vrf_key";
/// The `requestInfo` key naming the election the station asks a pseudonym for.
pub const REQUEST_INFO_ELECTION: &str = "org.civis.election";
/// Longest election id (the chain's limit).
pub const MAX_ELECTION_ID: usize = 64;
/// Domain tag of the VRF input.
const ALPHA_DOMAIN: &[u8] = b"civis/evote-pseudonym/v1\0";
/// Largest election record decoded from the chain.
const MAX_RECORD: usize = 64 * 1024;

/// Citizen elements an eligibility rule may not name: they identify the voter.
pub const IDENTIFYING: &[&str] = &[
    "family_name",
    "given_name",
    "birth_date",
    "document_number",
    "portrait",
    VRF_KEY,
];

/// The VRF input of an election pseudonym: the domain tag, the chain id (length-prefixed, so
/// no two (chain, election) pairs give the same bytes) and the election id.
pub fn alpha(chain: &str, election: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(ALPHA_DOMAIN.len() + 2 + chain.len() + election.len());
    a.extend_from_slice(ALPHA_DOMAIN);
    a.extend_from_slice(&u16::try_from(chain.len()).unwrap_or(u16::MAX).to_be_bytes());
    a.extend_from_slice(chain.as_bytes());
    a.extend_from_slice(election.as_bytes());
    a
}

/// The MSO `keyAuthorizations` that let the card device-sign its pseudonym (and nothing else).
pub fn key_authorizations() -> Value {
    text_map(vec![(
        "dataElements",
        Value::Map(vec![(text(NAMESPACE), Value::Array(vec![text(PSEUDONYM)]))]),
    )])
}

/// A valid election id: 1..=64 bytes without control characters.
pub fn valid_election_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ELECTION_ID && !id.chars().any(char::is_control)
}

/// What a second authentication of one voter in one election means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reauth {
    /// Refused: the first authentication stands.
    Refuse,
    /// Accepted and recorded: the last one counts (e.g. a voter may vote again to override a
    /// coerced vote).
    LastCounts,
}

impl Reauth {
    /// The name on the wire and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Refuse => "refuse",
            Self::LastCounts => "last-counts",
        }
    }

    /// From its name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "refuse" => Some(Self::Refuse),
            "last-counts" => Some(Self::LastCounts),
            _ => None,
        }
    }
}

/// An election as the chain records it (`election[id]`, chain-state.md).
#[derive(Debug, Clone, PartialEq)]
pub struct Election {
    /// Election id.
    pub id: String,
    /// `element => required value` over citizen elements; an array value means "one of".
    pub eligibility: Vec<(String, Value)>,
    /// Opening time (Unix seconds, inclusive).
    pub opens: i64,
    /// Closing time (Unix seconds, exclusive).
    pub closes: i64,
    /// The re-authentication policy.
    pub reauth: Reauth,
}

impl Election {
    /// Decode the chain's record of election `id`.
    pub fn from_record(id: &str, bytes: &[u8]) -> Result<Self> {
        const W: &str = "election record";
        let v = cbor::decode(W, bytes, Limits::new(MAX_RECORD))?;
        let m = access::map(W, &v)?;
        let eligibility = access::map(W, access::req(W, m, "eligibility")?)?
            .iter()
            .map(|(k, v)| Ok((access::text(W, k)?.to_owned(), v.clone())))
            .collect::<Result<Vec<_>>>()?;
        let int = |k: &str| -> Result<i64> {
            access::req(W, m, k)?
                .as_integer()
                .and_then(|i| i64::try_from(i).ok())
                .ok_or_else(|| Error::invalid(W, format!("{k} must be an integer")))
        };
        // Records written before the policy existed refuse a second authentication.
        let reauth = match access::get(W, m, "reauth")? {
            None => Reauth::Refuse,
            Some(r) => Reauth::parse(access::text(W, r)?)
                .ok_or_else(|| Error::invalid(W, "unknown re-authentication policy"))?,
        };
        Ok(Self {
            id: id.to_owned(),
            eligibility,
            opens: int("opens")?,
            closes: int("closes")?,
            reauth,
        })
    }

    /// Check a rule before it goes on chain or into a station: citizen elements only, each
    /// once, none that identifies the voter, each value of the element's type (arrays of
    /// 1..=256 distinct values), texts non-empty and without control characters.
    pub fn check_rule(eligibility: &[(String, Value)]) -> Result<()> {
        const W: &str = "eligibility";
        for (i, (element, value)) in eligibility.iter().enumerate() {
            if eligibility
                .iter()
                .skip(i.saturating_add(1))
                .any(|(e, _)| e == element)
            {
                return Err(Error::invalid(W, format!("{element} is given twice")));
            }
            if IDENTIFYING.contains(&element.as_str()) {
                return Err(Error::invalid(
                    W,
                    format!("{element} identifies the voter; an election may not ask for it"),
                ));
            }
            let values = match value {
                Value::Array(a) if !a.is_empty() && a.len() <= 256 => a.as_slice(),
                Value::Array(_) => {
                    return Err(Error::invalid(W, format!("{element}: 1 to 256 values")));
                }
                one => std::slice::from_ref(one),
            };
            for (j, v) in values.iter().enumerate() {
                citizen::check_element(element, v)?;
                if let Value::Text(t) = v
                    && (t.is_empty() || t.chars().any(char::is_control))
                {
                    return Err(Error::invalid(
                        W,
                        format!("{element}: a value is empty or has control characters"),
                    ));
                }
                if values.iter().skip(j.saturating_add(1)).any(|o| o == v) {
                    return Err(Error::invalid(W, format!("{element}: a value is repeated")));
                }
            }
        }
        Ok(())
    }

    /// The citizen elements a station requests for this election.
    pub fn elements(&self) -> Vec<String> {
        self.eligibility.iter().map(|(e, _)| e.clone()).collect()
    }

    /// Whether the election is open at `now`.
    pub fn open_at(&self, now: i64) -> bool {
        self.opens <= now && now < self.closes
    }

    /// Check the disclosed citizen elements against the rule; the error says which element
    /// fails, without its value.
    pub fn eligible(&self, doc: &VerifiedDocument) -> std::result::Result<(), String> {
        for (element, required) in &self.eligibility {
            let Some(value) = citizen_value(doc, element) else {
                return Err(format!("{element} was not disclosed"));
            };
            let ok = match required {
                Value::Array(any) => any.contains(value),
                one => one == value,
            };
            if !ok {
                return Err(format!("not eligible ({element})"));
            }
        }
        Ok(())
    }
}

fn citizen_value<'a>(doc: &'a VerifiedDocument, element: &str) -> Option<&'a Value> {
    doc.disclosed
        .iter()
        .filter(|(ns, _)| ns == citizen::NAMESPACE)
        .flat_map(|(_, items)| items.iter())
        .find(|(id, _)| id == element)
        .map(|(_, v)| v)
}

/// An election pseudonym: the VRF output, 32 bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pseudonym(pub [u8; OUTPUT_LEN]);

impl Pseudonym {
    /// Lower-case hex, for reports.
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for Pseudonym {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pseudonym({})", hex::encode(self.0))
    }
}

/// Why a presentation carries no valid pseudonym.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PseudonymError {
    /// The card did not return the VRF key (not granted, or an old credential without one).
    #[error("the credential carries no VRF key")]
    NoKey,
    /// The card did not return a pseudonym (no PIN, not accredited, no VRF key on the card).
    #[error("the card returned no pseudonym")]
    Missing,
    /// The key or the proof does not decode.
    #[error("malformed pseudonym: {0}")]
    Malformed(String),
    /// The proof does not verify for this chain and election under the bound key.
    #[error("the pseudonym's proof does not verify for this election")]
    BadProof,
}

/// The pseudonym a verified citizen document proves for `election` on `chain`: the proof in the
/// device-signed element, checked against the issuer-signed `vrf_key` (so the issuer's
/// signature binds the key, and the device signature binds the proof to this session).
pub fn pseudonym(
    doc: &VerifiedDocument,
    chain: &str,
    election: &str,
) -> std::result::Result<Pseudonym, PseudonymError> {
    let key = match citizen_value(doc, VRF_KEY) {
        Some(Value::Bytes(b)) => {
            VrfPublicKey::from_sec1(b).map_err(|e| PseudonymError::Malformed(e.to_string()))?
        }
        Some(_) => return Err(PseudonymError::Malformed("vrf_key is not bytes".into())),
        None => return Err(PseudonymError::NoKey),
    };
    let proof = doc
        .device_signed
        .iter()
        .filter(|(ns, _)| ns == NAMESPACE)
        .flat_map(|(_, items)| items.iter())
        .find(|(id, _)| id == PSEUDONYM)
        .map(|(_, v)| v)
        .ok_or(PseudonymError::Missing)?;
    let Value::Bytes(pi) = proof else {
        return Err(PseudonymError::Malformed("the proof is not bytes".into()));
    };
    let proof = VrfProof::from_bytes(pi).map_err(|e| PseudonymError::Malformed(e.to_string()))?;
    vrf::verify(&key, &alpha(chain, election), &proof)
        .map(Pseudonym)
        .map_err(|_| PseudonymError::BadProof)
}

/// Largest signed record set accepted (about a million authentications).
pub const MAX_RECORDS_LEN: usize = 64 * 1024 * 1024;

/// What one polling station recorded in an election, as it hands it to the others: signed with
/// its kiosk key, with its accreditation statement attached, so the receiver checks — against
/// the chain it synced — that an accredited e-voting station wrote it (a forged record would
/// make an honest voter look like a double voter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StationRecords {
    /// Chain id.
    pub chain: String,
    /// Election id.
    pub election: String,
    /// The station: its kiosk DID, as its accreditation names it.
    pub station: String,
    /// Pseudonyms with the time each authenticated (Unix milliseconds), in the station's order.
    pub records: Vec<(Pseudonym, i64)>,
}

/// Why a signed record set is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    /// Not a COSE_Sign1 with the expected content.
    #[error("station records: {0}")]
    Malformed(String),
    /// The attached accreditation is not the one the synced chain records for its kiosk.
    #[error("the station {0} has no such accreditation on the synced chain")]
    NotOnChain(String),
    /// The accreditation does not cover e-voting.
    #[error("the station {0} is not accredited for e-voting")]
    NotEvoting(String),
    /// The signature does not verify under the accredited key.
    #[error("the station records' signature does not verify")]
    Signature,
    /// The records name another chain or station than the accreditation.
    #[error(
        "the records are for chain {chain:?} and station {station:?}, not this chain and the signing station"
    )]
    Mismatch {
        /// Chain named in the records.
        chain: String,
        /// Station named in the records.
        station: String,
    },
}

impl StationRecords {
    fn payload(&self) -> Vec<u8> {
        cbor::encode(&text_map(vec![
            ("chain", text(&self.chain)),
            ("election", text(&self.election)),
            ("station", text(&self.station)),
            (
                "records",
                Value::Array(
                    self.records
                        .iter()
                        .map(|(p, at)| {
                            Value::Array(vec![
                                Value::Bytes(p.0.to_vec()),
                                Value::Integer((*at).into()),
                            ])
                        })
                        .collect(),
                ),
            ),
        ]))
    }

    fn from_payload(bytes: &[u8]) -> Result<Self> {
        const W: &str = "station records";
        let v = cbor::decode(W, bytes, Limits::new(MAX_RECORDS_LEN))?;
        let m = access::map(W, &v)?;
        access::only_keys(W, m, &["chain", "election", "station", "records"])?;
        let records = access::array(W, access::req(W, m, "records")?)?
            .iter()
            .map(|r| match access::array(W, r)? {
                [p, at] => Ok((
                    Pseudonym(
                        access::bytes(W, p)?
                            .try_into()
                            .map_err(|_| Error::malformed(W, "a pseudonym is 32 bytes"))?,
                    ),
                    at.as_integer()
                        .and_then(|i| i64::try_from(i).ok())
                        .ok_or_else(|| Error::malformed(W, "time"))?,
                )),
                _ => Err(Error::malformed(W, "a record is [pseudonym, time]")),
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            chain: access::text(W, access::req(W, m, "chain")?)?.to_owned(),
            election: access::text(W, access::req(W, m, "election")?)?.to_owned(),
            station: access::text(W, access::req(W, m, "station")?)?.to_owned(),
            records,
        })
    }

    /// Sign with the station's kiosk key, its accreditation `statement` attached.
    pub fn sign(&self, key: &dyn Signer, statement: &[u8]) -> Result<Vec<u8>> {
        let statement = cose::decode_sign1_within(statement, crate::kiosk::MAX_STATEMENT_LEN)?;
        let mut unprotected = coset::Header::default();
        unprotected.rest.push((
            coset::Label::Int(crate::kiosk::READER_AUTH_LABEL),
            cose::sign1_to_value(&statement),
        ));
        let sign1 = cose::sign1(
            key,
            cose::Domain::EvoteRecords,
            coset::HeaderBuilder::new(),
            unprotected,
            Some(self.payload()),
            None,
        )?;
        Ok(cose::encode_sign1(&sign1))
    }

    /// Check signed records for `chain`: the attached accreditation must be exactly the one
    /// `recorded` (the synced chain's kiosk table) holds for its kiosk DID and grant the
    /// pseudonym; the signature must verify under its key; the records must name this chain and
    /// that kiosk. Never panics on any bytes.
    pub fn verify(
        bytes: &[u8],
        chain: &str,
        recorded: impl Fn(&str) -> Option<Vec<u8>>,
    ) -> std::result::Result<Self, RecordsError> {
        let bad = |e: Error| RecordsError::Malformed(e.to_string());
        let sign1 = cose::decode_sign1_within(bytes, MAX_RECORDS_LEN).map_err(bad)?;
        let statement = crate::kiosk::attached(&sign1)
            .map_err(bad)?
            .ok_or_else(|| RecordsError::Malformed("no accreditation attached".into()))?;
        let statement = cose::encode_sign1(&statement);
        let acc = crate::kiosk::statement_unverified(&statement).map_err(bad)?;
        let kiosk = acc.kiosk.to_string();
        if recorded(&kiosk).as_deref() != Some(&statement[..]) {
            return Err(RecordsError::NotOnChain(kiosk));
        }
        if !acc.allows(citizen::DOC_TYPE, NAMESPACE, PSEUDONYM) {
            return Err(RecordsError::NotEvoting(kiosk));
        }
        cose::verify_sign1(&sign1, &acc.key, cose::Domain::EvoteRecords, None)
            .map_err(|_| RecordsError::Signature)?;
        let payload = sign1
            .payload
            .as_deref()
            .ok_or_else(|| RecordsError::Malformed("no payload".into()))?;
        let records = Self::from_payload(payload).map_err(bad)?;
        // A signing station still cannot plant records outside any election, or before 1970.
        if !valid_election_id(&records.election) {
            return Err(RecordsError::Malformed(
                "the election id is not 1 to 64 bytes without control characters".into(),
            ));
        }
        if records.records.iter().any(|(_, at)| *at < 0) {
            return Err(RecordsError::Malformed(
                "a record's time is negative".into(),
            ));
        }
        if records.chain != chain || acc.chain != chain || records.station != kiosk {
            return Err(RecordsError::Mismatch {
                chain: records.chain,
                station: records.station,
            });
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn alpha_is_unambiguous_and_domain_separated() {
        assert_ne!(alpha("ab", "c"), alpha("a", "bc"));
        assert!(alpha("civis", "e").starts_with(b"civis/evote-pseudonym/v1\0"));
    }

    #[test]
    fn rules_naming_identifying_elements_or_wrong_types_are_refused() {
        let ok = vec![
            ("age_over_18".to_owned(), Value::Bool(true)),
            (
                "resident_district".to_owned(),
                Value::Array(vec![text("Harbour"), text("Old Town")]),
            ),
        ];
        Election::check_rule(&ok).unwrap();
        for bad in [
            vec![("birth_date".to_owned(), Value::Bool(true))],
            vec![("family_name".to_owned(), text("x"))],
            vec![("age_over_18".to_owned(), text("yes"))],
            vec![("resident_district".to_owned(), Value::Array(vec![]))],
            vec![("shoe_size".to_owned(), Value::Bool(true))],
            vec![("resident_district".to_owned(), text(""))],
            vec![("resident_district".to_owned(), text("\u{1b}[2J"))],
            vec![(
                "resident_district".to_owned(),
                Value::Array(vec![text("A"), text("A")]),
            )],
            vec![
                ("age_over_18".to_owned(), Value::Bool(true)),
                ("age_over_18".to_owned(), Value::Bool(false)),
            ],
        ] {
            assert!(Election::check_rule(&bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_record_without_a_policy_refuses_and_unknown_policies_are_errors() {
        let rec = |extra: Vec<(&'static str, Value)>| {
            let mut m = vec![
                ("eligibility", Value::Map(vec![])),
                ("opens", Value::Integer(1.into())),
                ("closes", Value::Integer(2.into())),
            ];
            m.extend(extra);
            cbor::encode(&text_map(m))
        };
        let e = Election::from_record("e", &rec(vec![])).unwrap();
        assert_eq!(e.reauth, Reauth::Refuse);
        let e = Election::from_record("e", &rec(vec![("reauth", text("last-counts"))])).unwrap();
        assert_eq!(e.reauth, Reauth::LastCounts);
        assert!(Election::from_record("e", &rec(vec![("reauth", text("twice"))])).is_err());
        assert!(Election::from_record("e", b"\xff").is_err());
        assert!(e.open_at(1) && !e.open_at(2) && !e.open_at(0));
    }

    mod records {
        use super::super::*;
        use crate::crypto::SoftwareKey;
        use crate::did::{Did, KeyCommitment};
        use crate::kiosk::KioskAccreditation;
        use rand_core::OsRng;

        fn did(k: &SoftwareKey) -> Did {
            Did::from_inception(k.public_key(), &KeyCommitment::to(k.public_key()))
        }

        fn statement(gov: &SoftwareKey, kiosk: &SoftwareKey, evote: bool) -> Vec<u8> {
            let mut nss = vec![(citizen::NAMESPACE.to_owned(), vec!["age_over_18".into()])];
            if evote {
                nss.push((NAMESPACE.into(), vec![PSEUDONYM.into()]));
            }
            KioskAccreditation {
                chain: "c".into(),
                kiosk: did(kiosk),
                key: kiosk.public_key().clone(),
                grants: vec![(citizen::DOC_TYPE.into(), nss)],
                purpose: "polling station".into(),
                not_before: 0,
                not_after: 10,
            }
            .sign(&did(gov).key_url(1), gov)
            .unwrap()
        }

        #[test]
        fn only_an_accredited_evoting_station_on_chain_can_hand_over_records() {
            let gov = SoftwareKey::generate(&mut OsRng);
            let station = SoftwareKey::generate(&mut OsRng);
            let st = statement(&gov, &station, true);
            let name = did(&station).to_string();
            let records = StationRecords {
                chain: "c".into(),
                election: "e".into(),
                station: name.clone(),
                records: vec![(Pseudonym([7; 32]), 1), (Pseudonym([8; 32]), 2)],
            };
            let signed = records.sign(&station, &st).unwrap();
            let on_chain = |d: &str| (d == name).then(|| st.clone());
            assert_eq!(
                StationRecords::verify(&signed, "c", on_chain).unwrap(),
                records
            );
            // Every single-bit change is refused, without a panic.
            for i in 0..signed.len() {
                for bit in [0x01u8, 0x80] {
                    let mut bad = signed.clone();
                    bad[i] ^= bit;
                    assert!(StationRecords::verify(&bad, "c", on_chain).is_err(), "{i}");
                }
            }
            for cut in [0, 1, signed.len() / 2, signed.len() - 1] {
                assert!(StationRecords::verify(&signed[..cut], "c", on_chain).is_err());
            }
            // Another chain; a statement the chain does not hold.
            assert!(matches!(
                StationRecords::verify(&signed, "other", on_chain),
                Err(RecordsError::Mismatch { .. })
            ));
            assert!(matches!(
                StationRecords::verify(&signed, "c", |_| None),
                Err(RecordsError::NotOnChain(_))
            ));
            // Signed by another key under this station's statement.
            let thief = SoftwareKey::generate(&mut OsRng);
            let forged = records.sign(&thief, &st).unwrap();
            assert_eq!(
                StationRecords::verify(&forged, "c", on_chain),
                Err(RecordsError::Signature)
            );
            // A station claiming another's name.
            let claim = StationRecords {
                station: "did:civis:someone-else".into(),
                ..records.clone()
            }
            .sign(&station, &st)
            .unwrap();
            assert!(matches!(
                StationRecords::verify(&claim, "c", on_chain),
                Err(RecordsError::Mismatch { .. })
            ));
            // A kiosk on chain but not accredited for e-voting.
            let counter = SoftwareKey::generate(&mut OsRng);
            let plain = statement(&gov, &counter, false);
            let counter_name = did(&counter).to_string();
            let signed = StationRecords {
                station: counter_name.clone(),
                ..records
            }
            .sign(&counter, &plain)
            .unwrap();
            assert!(matches!(
                StationRecords::verify(&signed, "c", |d: &str| (d == counter_name)
                    .then(|| plain.clone())),
                Err(RecordsError::NotEvoting(_))
            ));
        }
    }
}
