//! The kiosk accreditation a card checks.
//!
//! A card has no network and no chain. What it trusts is the governance set installed at
//! personalization and followed from the chain (`crate::card::governance`); a kiosk proves what it may read with a **kiosk accreditation**: a COSE_Sign1
//! by a governance key (domain [`Domain::KioskAccreditation`]) over the kiosk's key, the
//! elements it may read per docType and namespace, its purpose and a validity window. The
//! `accredit-kiosk` registry transaction carries the same statement, so the chain records exactly
//! what cards will honour. The kiosk puts it in ReaderAuth's unprotected header under
//! [`READER_AUTH_LABEL`].

use ciborium::Value;
use coset::{CoseSign1, Header, HeaderBuilder};

use crate::cbor::{self, Limits, access, text, text_map};
use crate::cose::{self, Domain, Signer};
use crate::crypto::EcPublicKey;
use crate::did::{Did, DidUrl};
use crate::error::{Error, Result};

/// What an accredited kiosk may read: docType → namespace → elements.
pub type ElementGrants = Vec<(String, Vec<(String, Vec<String>)>)>;

/// The CBOR form of kiosk grants: `{docType: {namespace: [element]}}`.
pub fn grants_value(g: &ElementGrants) -> Value {
    Value::Map(
        g.iter()
            .map(|(dt, nss)| {
                (
                    text(dt),
                    Value::Map(
                        nss.iter()
                            .map(|(ns, els)| {
                                (
                                    text(ns),
                                    Value::Array(els.iter().map(|e| text(e)).collect()),
                                )
                            })
                            .collect(),
                    ),
                )
            })
            .collect(),
    )
}

/// Parse the CBOR form of kiosk grants.
pub fn grants_from_value(v: &Value) -> Result<ElementGrants> {
    const W: &str = "kiosk grants";
    access::map(W, v)?
        .iter()
        .map(|(dt, nss)| {
            let nss = access::map(W, nss)?
                .iter()
                .map(|(ns, els)| {
                    Ok((
                        access::text(W, ns)?.to_owned(),
                        access::array(W, els)?
                            .iter()
                            .map(|e| access::text(W, e).map(str::to_owned))
                            .collect::<Result<_>>()?,
                    ))
                })
                .collect::<Result<_>>()?;
            Ok((access::text(W, dt)?.to_owned(), nss))
        })
        .collect()
}

/// The private COSE header label under which ReaderAuth carries the kiosk accreditation (a
/// COSE_Sign1, as a CBOR array). Private labels are below −65536 (RFC 9052 §16.3).
pub const READER_AUTH_LABEL: i64 = -70_001;

/// Largest encoded accreditation statement accepted (cards hold a few KiB of RAM).
pub const MAX_STATEMENT_LEN: usize = 8 * 1024;

/// What a governance member accredits a kiosk for.
#[derive(Debug, Clone, PartialEq)]
pub struct KioskAccreditation {
    /// The registry chain id the accreditation belongs to.
    pub chain: String,
    /// The kiosk's DID.
    pub kiosk: Did,
    /// The key the kiosk signs ReaderAuth with.
    pub key: EcPublicKey,
    /// What it may read: docType → namespace → elements.
    pub grants: ElementGrants,
    /// Why it reads (shown to the resident; not interpreted by the card).
    pub purpose: String,
    /// Start of validity, Unix seconds.
    pub not_before: i64,
    /// End of validity, Unix seconds (exclusive).
    pub not_after: i64,
}

const W: &str = "kiosk accreditation";

impl KioskAccreditation {
    /// The payload: a CBOR map with text keys.
    pub fn payload(&self) -> Vec<u8> {
        cbor::encode(&text_map(vec![
            ("chain", text(&self.chain)),
            ("kiosk", text(self.kiosk.as_str())),
            ("key", cose::cose_key_value(&self.key)),
            ("grants", grants_value(&self.grants)),
            ("purpose", text(&self.purpose)),
            ("notBefore", Value::Integer(self.not_before.into())),
            ("notAfter", Value::Integer(self.not_after.into())),
        ]))
    }

    /// Decode a statement's payload **without** checking its signature: for a statement whose
    /// trust comes from elsewhere (the chain recorded exactly these bytes after checking it).
    pub fn from_payload(bytes: &[u8]) -> Result<Self> {
        let v = cbor::decode(W, bytes, Limits::new(MAX_STATEMENT_LEN))?;
        let m = access::map(W, &v)?;
        access::only_keys(
            W,
            m,
            &[
                "chain",
                "kiosk",
                "key",
                "grants",
                "purpose",
                "notBefore",
                "notAfter",
            ],
        )?;
        let int = |k: &str| -> Result<i64> {
            access::req(W, m, k)?
                .as_integer()
                .and_then(|i| i64::try_from(i).ok())
                .ok_or_else(|| Error::malformed(W, format!("{k} is not an integer")))
        };
        let a = Self {
            chain: access::text(W, access::req(W, m, "chain")?)?.to_owned(),
            kiosk: Did::parse(access::text(W, access::req(W, m, "kiosk")?)?)?,
            key: cose::cose_key_from_value(access::req(W, m, "key")?)?,
            grants: grants_from_value(access::req(W, m, "grants")?)?,
            purpose: access::text(W, access::req(W, m, "purpose")?)?.to_owned(),
            not_before: int("notBefore")?,
            not_after: int("notAfter")?,
        };
        if a.not_after <= a.not_before {
            return Err(Error::invalid(W, "notAfter is not after notBefore"));
        }
        Ok(a)
    }

    /// Sign as governance member `member` (whose key is `key`); returns the COSE_Sign1 bytes.
    pub fn sign(&self, member: &DidUrl, key: &dyn Signer) -> Result<Vec<u8>> {
        let sign1 = cose::sign1(
            key,
            Domain::KioskAccreditation,
            HeaderBuilder::new().key_id(member.to_string().into_bytes()),
            Header::default(),
            Some(self.payload()),
            None,
        )?;
        Ok(cose::encode_sign1(&sign1))
    }

    /// Decode a statement and check its signature under `root`.
    pub fn verify(bytes: &[u8], root: &EcPublicKey) -> Result<Self> {
        let sign1 = cose::decode_sign1_within(bytes, MAX_STATEMENT_LEN)?;
        Self::verify_sign1(&sign1, root)
    }

    /// Check a decoded statement's signature under `root` and decode its payload.
    pub fn verify_sign1(sign1: &CoseSign1, root: &EcPublicKey) -> Result<Self> {
        cose::check_alg(sign1)?;
        cose::verify_sign1(sign1, root, Domain::KioskAccreditation, None)?;
        let payload = sign1
            .payload
            .as_deref()
            .ok_or_else(|| Error::malformed(W, "no payload"))?;
        Self::from_payload(payload)
    }

    /// Whether the kiosk may read `element` of `namespace` in `doc_type`.
    pub fn allows(&self, doc_type: &str, namespace: &str, element: &str) -> bool {
        self.grants.iter().any(|(dt, nss)| {
            dt == doc_type
                && nss
                    .iter()
                    .any(|(ns, els)| ns == namespace && els.iter().any(|e| e == element))
        })
    }

    /// Whether the window contains `at` (Unix seconds).
    pub fn valid_at(&self, at: i64) -> bool {
        self.not_before <= at && at < self.not_after
    }
}

/// A statement's accreditation, decoded **without** checking the signature (see
/// [`KioskAccreditation::from_payload`]).
pub fn statement_unverified(bytes: &[u8]) -> Result<KioskAccreditation> {
    let sign1 = cose::decode_sign1_within(bytes, MAX_STATEMENT_LEN)?;
    let payload = sign1
        .payload
        .as_deref()
        .ok_or_else(|| Error::malformed(W, "no payload"))?;
    KioskAccreditation::from_payload(payload)
}

/// The signer named by a statement's protected `kid` (a governance DID URL), unverified.
pub fn statement_signer(bytes: &[u8]) -> Result<DidUrl> {
    let sign1 = cose::decode_sign1_within(bytes, MAX_STATEMENT_LEN)?;
    let kid = cose::kid(&sign1).ok_or_else(|| Error::malformed(W, "no protected kid"))?;
    DidUrl::parse(std::str::from_utf8(kid).map_err(|_| Error::malformed(W, "kid is not UTF-8"))?)
}

/// Put an accreditation statement into a ReaderAuth unprotected header.
pub fn attach(unprotected: &mut Header, statement: &[u8]) -> Result<()> {
    let sign1 = cose::decode_sign1_within(statement, MAX_STATEMENT_LEN)?;
    unprotected.rest.push((
        coset::Label::Int(READER_AUTH_LABEL),
        cose::sign1_to_value(&sign1),
    ));
    Ok(())
}

/// The accreditation a ReaderAuth carries in its unprotected header, if any (decoded, not
/// verified).
pub fn attached(reader_auth: &CoseSign1) -> Result<Option<CoseSign1>> {
    let Some((_, v)) = reader_auth
        .unprotected
        .rest
        .iter()
        .find(|(l, _)| *l == coset::Label::Int(READER_AUTH_LABEL))
    else {
        return Ok(None);
    };
    let len = cbor::encode(v).len();
    if len > MAX_STATEMENT_LEN {
        return Err(Error::TooLarge {
            what: W,
            len,
            limit: MAX_STATEMENT_LEN,
        });
    }
    cose::sign1_from_value(v.clone()).map(Some)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::crypto::SoftwareKey;
    use crate::did::KeyCommitment;
    use rand_core::OsRng;

    fn sample(key: &EcPublicKey) -> KioskAccreditation {
        KioskAccreditation {
            chain: "civis-test".into(),
            kiosk: Did::from_inception(key, &KeyCommitment::to(key)),
            key: key.clone(),
            grants: vec![(
                "org.civis.citizen.1".into(),
                vec![(
                    "org.civis.citizen.1".into(),
                    vec!["age_over_18".into(), "resident_city".into()],
                )],
            )],
            purpose: "age check".into(),
            not_before: 1_700_000_000,
            not_after: 1_900_000_000,
        }
    }

    #[test]
    fn signs_and_verifies_under_the_root_only() {
        let gov = SoftwareKey::generate(&mut OsRng);
        let other = SoftwareKey::generate(&mut OsRng);
        let kiosk = SoftwareKey::generate(&mut OsRng);
        let a = sample(kiosk.public_key());
        let member =
            Did::from_inception(gov.public_key(), &KeyCommitment::to(gov.public_key())).key_url(0);
        let bytes = a.sign(&member, &gov).unwrap();
        assert_eq!(
            KioskAccreditation::verify(&bytes, gov.public_key()).unwrap(),
            a
        );
        assert!(KioskAccreditation::verify(&bytes, other.public_key()).is_err());
        assert_eq!(statement_signer(&bytes).unwrap(), member);
        assert!(a.allows("org.civis.citizen.1", "org.civis.citizen.1", "age_over_18"));
        assert!(!a.allows("org.civis.citizen.1", "org.civis.citizen.1", "birth_date"));
        assert!(a.valid_at(1_800_000_000) && !a.valid_at(1_900_000_000));
        // A flipped payload byte breaks the signature.
        let mut bad = bytes.clone();
        let pos = bad.len() - 80;
        bad[pos] ^= 1;
        assert!(KioskAccreditation::verify(&bad, gov.public_key()).is_err());
    }
}
