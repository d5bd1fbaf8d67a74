//! `civis demo`: the life of a citizen credential, in-process, printed step by step.
//!
//! Today it covers what civis-core provides: a did:civis issuer, minting onto a device key,
//! a kiosk request and session transcript, selective disclosure, offline verification against a
//! trust snapshot, and the refusals (revoked, tampered, stale registry state, clone).
//! The registry chain and the card over PC/SC join it as their issues land.

use std::collections::BTreeMap;
use std::time::Instant;

use ciborium::Value;
use civis_core::Timestamp;
use civis_core::cbor::{CborForm, Tagged};
use civis_core::crypto::SoftwareKey;
use civis_core::did::{DidDocument, KeyCommitment};
use civis_core::mdoc::citizen::{self, CitizenRecord};
use civis_core::mdoc::{
    self, DeviceEngagement, DeviceNameSpaces, DeviceRequest, DeviceResponse, DocRequest, Document,
    IssueParams, IssuerKeyId, ItemsRequest, SessionTranscript, StatusRef, TDate, ValidityInfo,
};
use civis_core::status::{Bits, Status, StatusList};
use civis_core::verify::{
    Accreditation, Policy, Presentation, TrustSnapshot, Verdict, verify_presentation,
};
use clap::Args;
use rand_core::OsRng;

/// Flags of `civis demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Print the presentation bytes as hex too.
    #[arg(long)]
    verbose: bool,
}

fn step(n: u32, text: &str) {
    println!("\n[{n}] {text}");
}

fn show(v: &Verdict) -> String {
    match v {
        Verdict::Accept(docs) => {
            let els: Vec<String> = docs
                .iter()
                .flat_map(|d| d.disclosed.iter().flat_map(|(_, e)| e.iter()))
                .map(|(k, v)| format!("{k}={}", mdoc::json::to_json(v)))
                .collect();
            format!("ACCEPT  {}", els.join(", "))
        }
        other => format!(
            "{}  ({})",
            other.name().to_uppercase(),
            other.reason().unwrap_or_default()
        ),
    }
}

/// Run the demo; returns the exit code.
pub fn run(args: &DemoArgs) -> i32 {
    match demo(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("civis demo failed: {e}");
            1
        }
    }
}

fn demo(args: &DemoArgs) -> Result<(), civis_core::Error> {
    let mut rng = OsRng;
    // The demo's clock: a fixed day, so the output reads the same every run.
    let now = Timestamp::parse_rfc3339("2026-06-01T12:00:00Z")?;

    step(
        1,
        "The Civil Registry creates its issuer identity (did:civis, with a pre-rotation commitment)",
    );
    let issuer_key = SoftwareKey::generate(&mut rng);
    let next_key = SoftwareKey::generate(&mut rng);
    let doc = DidDocument::inception(
        issuer_key.public_key(),
        &KeyCommitment::to(next_key.public_key()),
    );
    let kid = doc.id.key_url(1).to_string();
    println!("    issuer DID      {}", doc.id);
    println!("    signing key     {kid}");

    step(
        2,
        "A citizen card generates its device key; the registry mints a citizen credential onto it",
    );
    let card_key = SoftwareKey::generate(&mut rng);
    let record = CitizenRecord {
        family_name: "Jansen".into(),
        given_name: "Mira".into(),
        birth_date: "1990-04-12".into(),
        resident_city: "Civitas".into(),
        resident_district: "Harbour".into(),
        document_number: "CIV-000042".into(),
        issue_date: "2026-01-01".into(),
        expiry_date: "2031-01-01".into(),
        issuing_authority: "Civitas Civil Registry".into(),
        portrait: None,
    };
    let name_spaces = record.to_name_spaces("2026-01-01")?;
    let status_uri = format!("{}/status/1", doc.id);
    let params = IssueParams {
        doc_type: citizen::DOC_TYPE,
        name_spaces: &name_spaces,
        device_key: card_key.public_key(),
        validity: ValidityInfo {
            signed: TDate::new(Timestamp::parse_rfc3339("2026-01-01T00:00:00Z")?),
            valid_from: TDate::new(Timestamp::parse_rfc3339("2026-01-01T00:00:00Z")?),
            valid_until: TDate::new(Timestamp::parse_rfc3339("2031-01-01T00:00:00Z")?),
            expected_update: None,
        },
        status: Some(StatusRef {
            idx: 7,
            uri: status_uri.clone(),
        }),
        key_authorizations: None,
    };
    let issuer_signed = mdoc::issue(
        &params,
        &issuer_key,
        &IssuerKeyId::Kid(kid.clone()),
        &mut rng,
    )?;
    let stored = mdoc::issue::encode_issuer_signed(&issuer_signed);
    println!(
        "    {} elements, each salted and digested; {} bytes stored on the card; status list entry 7",
        name_spaces.iter().map(|(_, e)| e.len()).sum::<usize>(),
        stored.len()
    );

    step(
        3,
        "A kiosk asks for three elements; the card discloses only those and signs the session",
    );
    let reader_key = SoftwareKey::generate(&mut rng);
    let device_eph = SoftwareKey::generate(&mut rng);
    let engagement = DeviceEngagement::new(device_eph.public_key());
    let reader_cose_key =
        civis_core::cbor::encode(&civis_core::cose::cose_key_value(reader_key.public_key()));
    let transcript = SessionTranscript::new(
        Some(&engagement.to_vec()),
        Some(&reader_cose_key),
        Value::Array(vec![Value::Bytes(b"demo handover".to_vec()), Value::Null]),
    );
    let wanted = ["given_name", "age_over_18", "resident_district"];
    let request = DeviceRequest {
        version: "1.0".into(),
        doc_requests: vec![DocRequest {
            items_request: Tagged::new(ItemsRequest {
                doc_type: citizen::DOC_TYPE.into(),
                name_spaces: vec![(
                    citizen::NAMESPACE.into(),
                    wanted.iter().map(|e| ((*e).to_owned(), false)).collect(),
                )],
                request_info: None,
            }),
            reader_auth: None,
        }],
    };
    let present = |key: &SoftwareKey| -> Result<Vec<u8>, civis_core::Error> {
        let device_signed = mdoc::sign_device(
            key,
            &transcript,
            citizen::DOC_TYPE,
            DeviceNameSpaces::default(),
        )?;
        Ok(DeviceResponse {
            version: "1.0".into(),
            documents: Some(vec![Document {
                doc_type: citizen::DOC_TYPE.into(),
                issuer_signed: mdoc::select(&issuer_signed, |_, e| wanted.contains(&e)),
                device_signed,
                errors: None,
            }]),
            document_errors: None,
            status: 0,
        }
        .to_vec())
    };
    let response = present(&card_key)?;
    println!("    DeviceResponse: {} bytes", response.len());
    if args.verbose {
        println!("    {}", hex::encode(&response));
    }

    step(
        4,
        "The kiosk verifies offline against the registry state it synced an hour ago",
    );
    let mut list = StatusList::new(Bits::new(2)?, 1024)?;
    let mut lists = BTreeMap::new();
    lists.insert(status_uri.clone(), list.clone());
    let snapshot = TrustSnapshot {
        anchors: vec![mdoc::TrustAnchor::DidKey {
            kid: kid.clone(),
            key: issuer_key.public_key().clone(),
        }],
        accreditations: Some(vec![Accreditation {
            issuer: doc.id.to_string(),
            doc_types: vec![citizen::DOC_TYPE.into()],
            valid_until: Timestamp::parse_rfc3339("2030-01-01T00:00:00Z")?,
        }]),
        status_lists: lists,
        as_of: Some(now.plus_secs(-3600)),
    };
    let policy = Policy::default();
    let check = |bytes: &[u8], snap: &TrustSnapshot| {
        let p = Presentation {
            device_response: bytes,
            transcript: &transcript,
            reader_key: None,
            request: Some(&request),
        };
        verify_presentation(&p, snap, &policy, now)
    };
    let started = Instant::now();
    let verdict = check(&response, &snapshot);
    let took = started.elapsed();
    println!("    {}", show(&verdict));
    println!("    (verified in {:.2} ms)", took.as_secs_f64() * 1e3);
    let accepted = matches!(verdict, Verdict::Accept(_));

    step(
        5,
        "The registry revokes the credential; the kiosk's next snapshot carries the new list",
    );
    list.set(7, Status::Invalid.value())?;
    let mut revoked = snapshot.clone();
    revoked.status_lists.insert(status_uri.clone(), list);
    println!("    {}", show(&check(&response, &revoked)));

    step(6, "Someone edits a disclosed value in transit");
    let mut tampered = response.clone();
    if let Some(b) = tampered
        .windows(7)
        .position(|w| w == b"Harbour")
        .and_then(|pos| tampered.get_mut(pos))
    {
        *b = b'h';
    }
    println!("    {}", show(&check(&tampered, &snapshot)));

    step(
        7,
        "The credential is copied onto another card with a different key (a clone)",
    );
    let clone_key = SoftwareKey::generate(&mut rng);
    println!("    {}", show(&check(&present(&clone_key)?, &snapshot)));

    step(
        8,
        "A kiosk that has been offline for three days cannot vouch for current registry state",
    );
    let mut stale = snapshot.clone();
    stale.as_of = Some(now.plus_secs(-3 * 24 * 3600));
    println!("    {}", show(&check(&response, &stale)));

    println!();
    if accepted {
        println!("demo complete: one accept, and every refusal for the right reason.");
        Ok(())
    } else {
        Err(civis_core::Error::invalid(
            "demo",
            "the honest presentation was not accepted",
        ))
    }
}
