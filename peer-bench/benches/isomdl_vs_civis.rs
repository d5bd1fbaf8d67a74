//! Offline verification of one citizen-card presentation by civis-core and by isomdl 0.2.0, in one
//! process, on the same DeviceResponse bytes: issuerAuth with an `x5chain` (a document-signer
//! certificate issued by an IACA root, both generated here from fixed seeds) and a deviceSignature.
//!
//! - civis: `mdoc::verify_bytes` with the IACA as trust anchor (decoding included).
//! - isomdl: decode, device authentication, `ValidationRuleset::Mdl` x5chain validation against a
//!   `TrustAnchorRegistry`, issuer authentication: what its reader runs on a response, called
//!   directly because its high-level reader only accepts docType `org.iso.18013.5.1.mDL`.
//! - two (and three) bare ES256 verifies on civis's backend, the floor.
//!
//! Both sides must accept the genuine response and reject a flipped issuer-signature byte before
//! anything is timed. Then criterion's figures, an interleaved measurement printing `RESULT` lines
//! (targets: civis ≤ 1.2× two ES256 verifies; civis ≥ 3× faster than isomdl), and what each side
//! checks.
//!
//! ```sh
//! cd peer-bench && CARGO_TARGET_DIR=~/.cache/civis/peer-target cargo bench --bench isomdl_vs_civis
//! ```
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    missing_docs,
    dead_code
)]

#[path = "../../core/tests/common/citizen.rs"]
mod citizen;

use std::str::FromStr;
use std::time::{Duration, Instant};

use civis_core::cbor::CborForm;
use civis_core::crypto::SoftwareKey;
use civis_core::mdoc::citizen::DOC_TYPE;
use civis_core::mdoc::{
    self, DeviceResponse, IssueParams, IssuerKeyId, StatusRef, TDate, TrustAnchor, ValidityInfo,
    VerifyContext,
};
use civis_core::x509::Cert;
use criterion::{Criterion, black_box};
use isomdl::definitions::SessionTranscript180135;
use isomdl::definitions::x509::X5Chain;
use isomdl::definitions::x509::trust_anchor::{
    TrustAnchor as IsoAnchor, TrustAnchorRegistry, TrustPurpose,
};
use isomdl::definitions::x509::validation::ValidationRuleset;
use isomdl::definitions::x509::x5chain::X5CHAIN_COSE_HEADER_LABEL;
use isomdl::presentation::authentication::mdoc::{device_authentication, issuer_authentication};
use p256::ecdsa::{DerSignature, SigningKey};
use x509_cert::Certificate;
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::der::asn1::{Ia5String, ObjectIdentifier, UtcTime};
use x509_cert::der::{Decode, Encode, referenced::OwnedToRef};
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, CrlDistributionPoints, ExtendedKeyUsage,
    IssuerAltName, KeyUsage, KeyUsages, SubjectKeyIdentifier,
};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::{Time, Validity};

/// ISO 18013-5 Annex B extended key usage of a document signer (mdlDS).
const MDL_DS_EKU: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.0.18013.5.1.2");

/// An IACA root and a document signer it issued.
struct Pki {
    iaca_der: Vec<u8>,
    ds_der: Vec<u8>,
    ds_key: SoftwareKey,
}

fn signing_key(key: &SoftwareKey) -> SigningKey {
    SigningKey::from_slice(&key.scalar()).unwrap()
}

fn spki(key: &SigningKey) -> SubjectPublicKeyInfoOwned {
    SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).unwrap()
}

/// isomdl judges certificates by the system clock and civis at `citizen::now()`: a window wide
/// enough for both (UTCTime ends in 2049).
fn cert_validity() -> Validity {
    let t = |s: &str| {
        let secs = u64::try_from(citizen::at(s).0).unwrap();
        Time::UtcTime(UtcTime::from_unix_duration(Duration::from_secs(secs)).unwrap())
    };
    Validity {
        not_before: t("2025-01-01T00:00:00Z"),
        not_after: t("2045-01-01T00:00:00Z"),
    }
}

fn uri(s: &str) -> GeneralName {
    GeneralName::UniformResourceIdentifier(Ia5String::new(s).unwrap())
}

/// The Annex B extensions both certificates carry: a CRL distribution point and an issuer
/// alternative name (isomdl requires both, on the DS and the IACA).
fn add_common_extensions<S>(b: &mut CertificateBuilder<'_, S>)
where
    S: x509_cert::spki::DynSignatureAlgorithmIdentifier + p256::ecdsa::signature::Keypair,
    S::VerifyingKey: x509_cert::spki::EncodePublicKey,
{
    b.add_extension(&CrlDistributionPoints(vec![DistributionPoint {
        distribution_point: Some(DistributionPointName::FullName(vec![uri(
            "https://iaca.civis.example/crl",
        )])),
        reasons: None,
        crl_issuer: None,
    }]))
    .unwrap();
    b.add_extension(&IssuerAltName(vec![uri("https://iaca.civis.example")]))
        .unwrap();
}

/// Deterministic certificates (fixed keys, RFC 6979 signatures) with exactly the extensions
/// ISO 18013-5 Annex B asks for, so that isomdl's `ValidationRuleset::Mdl` reports no error.
/// "XC" is a user-assigned ISO 3166 code; both subjects carry the same countryName.
fn pki() -> Pki {
    let iaca_key = signing_key(&citizen::key("iaca root"));
    let ds_soft = citizen::key("document signer");
    let ds_key = signing_key(&ds_soft);
    let iaca_name = Name::from_str("CN=Civis Test IACA,O=Civis,C=XC").unwrap();
    let ds_name = Name::from_str("CN=Civis Test Document Signer,O=Civis,C=XC").unwrap();
    let iaca_spki = spki(&iaca_key);
    let ds_spki = spki(&ds_key);

    // Manual profile: the stock Root/Leaf profiles add a pathLen-less basicConstraints and
    // nonRepudiation, which Annex B (and isomdl) refuse.
    let mut b = CertificateBuilder::new(
        Profile::Manual { issuer: None },
        SerialNumber::new(&[0x01]).unwrap(),
        cert_validity(),
        iaca_name.clone(),
        iaca_spki.clone(),
        &iaca_key,
    )
    .unwrap();
    b.add_extension(&SubjectKeyIdentifier::try_from(iaca_spki.owned_to_ref()).unwrap())
        .unwrap();
    b.add_extension(&BasicConstraints {
        ca: true,
        path_len_constraint: Some(0),
    })
    .unwrap();
    b.add_extension(&KeyUsage(KeyUsages::KeyCertSign | KeyUsages::CRLSign))
        .unwrap();
    add_common_extensions(&mut b);
    let iaca: Certificate = b.build::<DerSignature>().unwrap();

    let mut b = CertificateBuilder::new(
        Profile::Manual {
            issuer: Some(iaca_name),
        },
        SerialNumber::new(&[0x02]).unwrap(),
        cert_validity(),
        ds_name,
        ds_spki.clone(),
        &iaca_key,
    )
    .unwrap();
    b.add_extension(&SubjectKeyIdentifier::try_from(ds_spki.owned_to_ref()).unwrap())
        .unwrap();
    b.add_extension(&AuthorityKeyIdentifier::try_from(iaca_spki.owned_to_ref()).unwrap())
        .unwrap();
    b.add_extension(&KeyUsage(KeyUsages::DigitalSignature.into()))
        .unwrap();
    b.add_extension(&ExtendedKeyUsage(vec![MDL_DS_EKU]))
        .unwrap();
    add_common_extensions(&mut b);
    let ds: Certificate = b.build::<DerSignature>().unwrap();

    Pki {
        iaca_der: iaca.to_der().unwrap(),
        ds_der: ds.to_der().unwrap(),
        ds_key: ds_soft,
    }
}

/// The golden citizen presentation (same record, salts, device key, transcript, request and
/// deviceSignature as `core/tests/common/citizen.rs`), re-issued by the document signer with an
/// `x5chain` instead of a DID `kid`. The deviceSignature covers only the transcript, docType and
/// device namespaces, so the fixture's one still holds.
fn x5chain_response(f: &citizen::Fixture, pki: &Pki) -> DeviceResponse {
    let name_spaces = citizen::record().to_name_spaces("2026-01-01").unwrap();
    let params = IssueParams {
        doc_type: DOC_TYPE,
        name_spaces: &name_spaces,
        device_key: f.device_key.public_key(),
        validity: ValidityInfo {
            signed: TDate::new(citizen::at("2026-01-01T00:00:00Z")),
            valid_from: TDate::new(citizen::at("2026-01-01T00:00:00Z")),
            valid_until: TDate::new(citizen::at("2031-01-01T00:00:00Z")),
            expected_update: None,
        },
        status: Some(StatusRef {
            idx: 42,
            uri: f.status_uri.clone(),
        }),
        key_authorizations: None,
    };
    let mut rng = citizen::SeededRng::new("citizen golden salts");
    let issuer_signed = mdoc::issue(
        &params,
        &pki.ds_key,
        &IssuerKeyId::X5Chain(vec![pki.ds_der.clone()]),
        &mut rng,
    )
    .unwrap();
    let mut response = f.response.clone();
    let doc = &mut response.documents.as_mut().unwrap()[0];
    doc.issuer_signed = mdoc::select(&issuer_signed, |_, e| citizen::DISCLOSED.contains(&e));
    response
}

/// What isomdl's reader runs on a decrypted response (`reader_utils::validate_response`, same
/// order), without the document and registry clones it makes there. `reader::parse` would find
/// the x5chain the same way, but it refuses any docType but the mDL's.
fn isomdl_verify(
    bytes: &[u8],
    transcript: &SessionTranscript180135,
    anchors: &TrustAnchorRegistry,
) -> Result<(), String> {
    let resp: isomdl::definitions::DeviceResponse =
        isomdl::cbor::from_slice(bytes).map_err(|e| format!("decode: {e}"))?;
    let doc = resp
        .documents
        .as_ref()
        .and_then(|d| d.first())
        .ok_or("no document")?;
    let x5chain = doc
        .issuer_signed
        .issuer_auth
        .unprotected
        .rest
        .iter()
        .find(|(l, _)| *l == coset_isomdl::Label::Int(X5CHAIN_COSE_HEADER_LABEL))
        .map(|(_, v)| X5Chain::from_cbor(v.clone()))
        .ok_or("no x5chain in the unprotected header")?
        .map_err(|e| format!("x5chain: {e}"))?;
    device_authentication(doc, transcript.clone()).map_err(|e| format!("device auth: {e}"))?;
    let outcome = ValidationRuleset::Mdl.validate(&x5chain, anchors);
    if !outcome.success() {
        return Err(format!("x5chain validation: {:?}", outcome.errors));
    }
    issuer_authentication(x5chain, &doc.issuer_signed).map_err(|e| format!("issuer auth: {e}"))
}

/// A copy of `bytes` with one bit flipped inside the (unique) occurrence of `needle`.
fn flip_within(bytes: &[u8], needle: &[u8]) -> Vec<u8> {
    let hits: Vec<usize> = bytes
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(hits.len(), 1, "needle must occur exactly once");
    let mut out = bytes.to_vec();
    out[hits[0] + needle.len() / 2] ^= 0x01;
    out
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let f = citizen::fixture();
    let pki = pki();
    let response = x5chain_response(&f, &pki);
    let bytes = response.to_vec();
    let doc = &response.documents.as_ref().unwrap()[0];

    // civis side.
    let anchors = vec![TrustAnchor::Iaca(Box::new(
        Cert::from_der(&pki.iaca_der).unwrap(),
    ))];
    let ctx = VerifyContext {
        transcript: &f.transcript,
        anchors: &anchors,
        at: citizen::now(),
        reader_key: None,
        request: Some(&f.request),
    };
    // isomdl side: the same transcript bytes, read as its own type.
    let iso_transcript: SessionTranscript180135 =
        isomdl::cbor::from_slice(f.transcript.bytes()).unwrap();
    let iso_anchors = TrustAnchorRegistry {
        anchors: vec![IsoAnchor {
            certificate: Certificate::from_der(&pki.iaca_der).unwrap(),
            purpose: TrustPurpose::Iaca,
        }],
    };

    // The x5chain sits where isomdl looks for it: unprotected header, label 33.
    let sign1 = &doc.issuer_signed.issuer_auth.cose;
    let x5 = coset::Label::Int(civis_core::cose::X5CHAIN);
    assert!(sign1.unprotected.rest.iter().any(|(l, _)| *l == x5));
    assert!(!sign1.protected.header.rest.iter().any(|(l, _)| *l == x5));

    // Both must accept the genuine response...
    let docs = mdoc::verify_bytes(&bytes, &ctx).unwrap();
    let digests = docs[0].disclosed[0].1.len();
    assert_eq!(digests, citizen::DISCLOSED.len());
    isomdl_verify(&bytes, &iso_transcript, &iso_anchors).unwrap();
    // ...and both must refuse a flipped issuer-signature byte.
    let bad_sig = flip_within(&bytes, &sign1.signature);
    assert!(mdoc::verify_bytes(&bad_sig, &ctx).is_err());
    let e = isomdl_verify(&bad_sig, &iso_transcript, &iso_anchors).unwrap_err();
    assert!(e.starts_with("issuer auth"), "{e}");
    // A flipped salt byte in one disclosed item: civis recomputes the digest and refuses;
    // isomdl 0.2.0 recomputes no digest and accepts (recorded, not a goal).
    let item = &doc.issuer_signed.name_spaces.as_ref().unwrap()[0].1[0];
    let bad_item = flip_within(&bytes, &item.inner().random);
    let civis_item = mdoc::verify_bytes(&bad_item, &ctx).unwrap_err();
    let iso_item = isomdl_verify(&bad_item, &iso_transcript, &iso_anchors);
    println!(
        "CHECK genuine: civis accepts, isomdl accepts; flipped issuer signature: both refuse; \
         flipped salt of `{}`: civis refuses ({civis_item:?}), isomdl {}",
        item.inner().element_identifier,
        if iso_item.is_ok() {
            "accepts"
        } else {
            "refuses"
        },
    );

    let msg = vec![0x5a; 600];
    let sig = pki.ds_key.sign_es256(&msg);
    let pk = pki.ds_key.public_key().clone();
    let es256 = || pk.verify_es256(black_box(&msg), black_box(&sig)).unwrap();
    let two = || {
        es256();
        es256();
    };
    let three = || {
        es256();
        es256();
        es256();
    };
    let civis = || {
        black_box(mdoc::verify_bytes(black_box(&bytes), &ctx).unwrap());
    };
    let iso = || {
        isomdl_verify(black_box(&bytes), &iso_transcript, &iso_anchors).unwrap();
    };

    let mut c = Criterion::default().configure_from_args();
    c.bench_function("peer/civis_verify_x5chain", |b| b.iter(civis));
    c.bench_function("peer/isomdl_verify_x5chain", |b| b.iter(iso));
    c.bench_function("peer/two_bare_es256_verifies", |b| b.iter(two));
    c.bench_function("peer/three_bare_es256_verifies", |b| b.iter(three));
    c.final_summary();

    // Interleave batches so that frequency drift hits all alike; compare medians.
    let runs: [&dyn Fn(); 4] = [&civis, &iso, &two, &three];
    let batch = 100;
    let mut t: [Vec<f64>; 4] = Default::default();
    for _ in 0..40 {
        for (run, times) in runs.iter().zip(t.iter_mut()) {
            let start = Instant::now();
            for _ in 0..batch {
                run();
            }
            times.push(start.elapsed().as_secs_f64() / f64::from(batch));
        }
    }
    let [m_civis, m_iso, m_two, m_three] = t.map(|mut v| median(&mut v));
    let us = |s: f64| s * 1e6;
    println!(
        "RESULT civis mdoc::verify_bytes (x5chain, deviceSignature) median {:.1} us",
        us(m_civis)
    );
    println!(
        "RESULT isomdl 0.2.0 decode+device auth+x5chain validation+issuer auth median {:.1} us",
        us(m_iso)
    );
    println!(
        "RESULT two ES256 verifies median {:.1} us; three median {:.1} us",
        us(m_two),
        us(m_three)
    );
    println!(
        "RESULT ratio civis / two ES256 {:.2} (target <= 1.20); civis / three ES256 {:.2}",
        m_civis / m_two,
        m_civis / m_three
    );
    println!(
        "RESULT speedup isomdl / civis {:.2}x (target >= 3.00)",
        m_iso / m_civis
    );

    println!("WORK per verification (x5chain variant, one document, {digests} elements):");
    println!("  civis : ECDSA verifies 3 (issuerAuth, DS cert by IACA, deviceSignature; ring)");
    println!("          SHA-256 digests {digests} (every disclosed item, against the MSO)");
    println!(
        "          MSO validFrom/validUntil and both certificates' validity at the given time"
    );
    println!("          docType MSO = document; elements requested; element types; deviceSigned");
    println!("          elements authorised; deviceMac supported (reader key)");
    println!(
        "  isomdl: ECDSA verifies 3 (issuerAuth, DS cert by IACA, deviceSignature; p256 crate)"
    );
    println!("          SHA-256 digests 0 (items are decoded, never hashed against the MSO)");
    println!(
        "          certificates' validity against the system clock; SHA-1 SKI of DS and IACA;"
    );
    println!(
        "          AKI = IACA SKI; Annex B extensions (EKU, KeyUsage, basicConstraints, CRL DP,"
    );
    println!("          IssuerAltName, disallowed ones); countryName (and state) DS = IACA");
    println!("          no MSO validity window, no MSO docType check, no request check,");
    println!("          MSO decoded for the device key only; deviceMac unsupported");
}
