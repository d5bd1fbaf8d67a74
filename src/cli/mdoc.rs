//! `civis mdoc verify` and `civis mdoc inspect`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow};
use ciborium::Value;
use civis_core::Timestamp;
use civis_core::cbor::{self, CborForm, Limits};
use civis_core::crypto::SoftwareKey;
use civis_core::did::DidUrl;
use civis_core::jwk::Jwk;
use civis_core::mdoc::json::{name_spaced_to_json, to_json};
use civis_core::mdoc::{DeviceRequest, DeviceResponse, SessionTranscript, TrustAnchor};
use civis_core::status::StatusList;
use civis_core::verify::{
    Policy, Presentation, RejectReason, TrustSnapshot, Verdict, verify_presentation,
};
use civis_core::x509::Cert;
use clap::{Args, Subcommand};
use serde_json::json;

use super::EXIT_USAGE;
use super::input::{maybe_hex, read_bytes};

/// mdoc subcommands.
#[derive(Debug, Subcommand)]
pub enum MdocCommand {
    /// Verify a DeviceResponse offline; prints one JSON line.
    ///
    /// Exit status: 0 accept, 1 reject (malformed input included), 2 undetermined, 64 usage error.
    Verify(VerifyArgs),
    /// Print a CBOR structure (DeviceResponse, DeviceRequest, COSE_Sign1, …) as JSON.
    Inspect {
        /// Raw CBOR or hex text.
        file: PathBuf,
    },
}

/// Flags of `civis mdoc verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The DeviceResponse (raw CBOR or hex).
    #[arg(long)]
    response: PathBuf,
    /// SessionTranscriptBytes (#6.24) or the bare SessionTranscript array (raw CBOR or hex).
    #[arg(long)]
    session_transcript: PathBuf,
    /// A trusted issuer: an IACA certificate (DER or hex) or a did:civis key (JWK JSON with the DID URL as kid).
    #[arg(long = "trust", required = true)]
    trust: Vec<PathBuf>,
    /// The time to verify at (RFC 3339).
    #[arg(long)]
    at: String,
    /// The reader's ephemeral private key (hex scalar), needed to check a deviceMac.
    #[arg(long)]
    reader_key: Option<String>,
    /// The DeviceRequest; without it every disclosed element counts as requested.
    #[arg(long)]
    request: Option<PathBuf>,
    /// A status list for the credential's status reference: URI=FILE (CBOR {bits, lst}).
    #[arg(long = "status-list", value_name = "URI=FILE")]
    status_list: Vec<String>,
}

/// Run an mdoc subcommand; returns the exit code.
pub fn run(cmd: MdocCommand) -> i32 {
    match cmd {
        MdocCommand::Verify(args) => verify(&args),
        MdocCommand::Inspect { file } => match inspect(&file) {
            Ok(out) => {
                println!("{out}");
                0
            }
            Err(e) => {
                eprintln!("civis mdoc inspect: {e:#}");
                1
            }
        },
    }
}

/// Inputs read from disk; reading is a usage matter, decoding a verdict matter.
struct Inputs {
    response: Vec<u8>,
    transcript: Vec<u8>,
    trust: Vec<Vec<u8>>,
    at: Timestamp,
    reader_key: Option<Vec<u8>>,
    request: Option<Vec<u8>>,
    status_lists: Vec<(String, Vec<u8>)>,
}

fn read_inputs(args: &VerifyArgs) -> Result<Inputs> {
    let at = Timestamp::parse_rfc3339(&args.at).map_err(|e| anyhow!("--at: {e}"))?;
    let reader_key = args
        .reader_key
        .as_deref()
        .map(|h| hex::decode(h.trim()).context("--reader-key must be hex"))
        .transpose()?;
    let status_lists = args
        .status_list
        .iter()
        .map(|s| {
            let (uri, file) = s
                .rsplit_once('=')
                .ok_or_else(|| anyhow!("--status-list takes URI=FILE"))?;
            Ok((uri.to_owned(), read_bytes(file.as_ref())?))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Inputs {
        response: read_bytes(&args.response)?,
        transcript: read_bytes(&args.session_transcript)?,
        trust: args
            .trust
            .iter()
            .map(|p| std::fs::read(p).with_context(|| format!("cannot read {}", p.display())))
            .collect::<Result<_>>()?,
        at,
        reader_key,
        request: args.request.as_deref().map(read_bytes).transpose()?,
        status_lists,
    })
}

fn anchor(raw: &[u8]) -> std::result::Result<TrustAnchor, String> {
    let text = std::str::from_utf8(raw).unwrap_or("").trim_start();
    if text.starts_with('{') {
        let jwk = Jwk::from_json(text).map_err(|e| e.to_string())?;
        let kid = jwk
            .kid
            .clone()
            .ok_or("trust JWK has no kid (the issuer's DID URL)")?;
        let kid = DidUrl::parse(&kid).map_err(|e| format!("trust JWK kid: {e}"))?;
        return Ok(TrustAnchor::DidKey {
            kid,
            key: jwk.public_key().map_err(|e| e.to_string())?,
        });
    }
    Cert::from_der(&maybe_hex(raw.to_vec()))
        .map(|c| TrustAnchor::Iaca(Box::new(c)))
        .map_err(|e| match e {
            civis_core::Error::Certificate(m) => format!("trust certificate: {m}"),
            other => format!("trust certificate: {other}"),
        })
}

fn malformed(m: impl Into<String>) -> Verdict {
    Verdict::Reject(RejectReason::Malformed(m.into()))
}

fn decide(inputs: &Inputs) -> (Verdict, Option<String>) {
    let doc_type = DeviceResponse::from_slice(&inputs.response)
        .ok()
        .and_then(|r| {
            r.documents
                .and_then(|d| d.first().map(|d| d.doc_type.clone()))
        });
    let transcript = match SessionTranscript::from_bytes(&inputs.transcript) {
        Ok(t) => t,
        Err(e) => return (malformed(format!("session transcript: {e}")), doc_type),
    };
    let mut anchors = Vec::new();
    for raw in &inputs.trust {
        match anchor(raw) {
            Ok(a) => anchors.push(a),
            Err(e) => return (malformed(e), doc_type),
        }
    }
    let reader_key = match inputs
        .reader_key
        .as_deref()
        .map(SoftwareKey::from_scalar)
        .transpose()
    {
        Ok(k) => k,
        Err(e) => return (malformed(format!("reader key: {e}")), doc_type),
    };
    let request = match inputs
        .request
        .as_deref()
        .map(DeviceRequest::from_slice)
        .transpose()
    {
        Ok(r) => r,
        Err(e) => return (malformed(format!("request: {e}")), doc_type),
    };
    let mut status_lists = BTreeMap::new();
    for (uri, bytes) in &inputs.status_lists {
        match StatusList::from_cbor(bytes) {
            Ok(l) => {
                status_lists.insert(uri.clone(), l);
            }
            Err(e) => return (malformed(format!("status list {uri}: {e}")), doc_type),
        }
    }
    let snapshot = TrustSnapshot {
        anchors,
        accreditations: None,
        status_lists,
        as_of: None,
        retired_keys: Default::default(),
    };
    // Static trust from files: no registry state whose age could matter.
    let policy = Policy {
        max_state_age_secs: None,
    };
    let presentation = Presentation {
        device_response: &inputs.response,
        transcript: &transcript,
        reader_key: reader_key.as_ref(),
        request: request.as_ref(),
    };
    (
        verify_presentation(&presentation, &snapshot, &policy, inputs.at),
        doc_type,
    )
}

fn verify(args: &VerifyArgs) -> i32 {
    let inputs = match read_inputs(args) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("civis mdoc verify: {e:#}");
            return EXIT_USAGE;
        }
    };
    let (verdict, doc_type) = decide(&inputs);
    let mut disclosed = serde_json::Map::new();
    if let Verdict::Accept(docs) = &verdict {
        for d in docs {
            if let serde_json::Value::Object(m) = name_spaced_to_json(&d.disclosed) {
                disclosed.extend(m);
            }
        }
    }
    let out = json!({
        "verdict": verdict.name(),
        "reason": verdict.reason(),
        "doc_type": doc_type,
        "disclosed": disclosed,
    });
    println!("{out}");
    match verdict {
        Verdict::Accept(_) => 0,
        Verdict::Reject(_) => 1,
        Verdict::Undetermined(_) => 2,
    }
}

/// CBOR as JSON for reading: byte strings as hex, tag-24 contents decoded in place, and a byte
/// string that itself holds a tag-24 item (the MSO inside issuerAuth) decoded too.
fn explain(v: &Value) -> serde_json::Value {
    match v {
        Value::Tag(24, inner) => match &**inner {
            Value::Bytes(b) => match cbor::decode("embedded CBOR", b, Limits::new(1 << 20)) {
                Ok(decoded) => json!({"tag24": explain(&decoded)}),
                Err(_) => json!({"tag24_bytes": hex::encode(b)}),
            },
            other => json!({"tag24": explain(other)}),
        },
        Value::Tag(t, inner) => json!({"tag": t, "value": explain(inner)}),
        Value::Bytes(b) => match cbor::decode("embedded CBOR", b, Limits::new(1 << 20)) {
            Ok(decoded @ Value::Tag(24, _)) => explain(&decoded),
            Ok(decoded @ Value::Map(_)) if b.len() <= 64 => json!({"cbor": explain(&decoded)}),
            _ => json!(format!("h'{}'", hex::encode(b))),
        },
        Value::Array(a) => serde_json::Value::Array(a.iter().map(explain).collect()),
        Value::Map(m) => {
            let mut out = serde_json::Map::new();
            for (k, v) in m {
                let key = match k {
                    Value::Text(t) => t.clone(),
                    other => to_json(other).to_string(),
                };
                out.insert(key, explain(v));
            }
            serde_json::Value::Object(out)
        }
        other => to_json(other),
    }
}

fn inspect(file: &std::path::Path) -> Result<String> {
    let bytes = read_bytes(file)?;
    let value = cbor::decode("input", &bytes, Limits::new(16 << 20))?;
    let kind = if DeviceResponse::from_slice(&bytes).is_ok() {
        "DeviceResponse"
    } else if DeviceRequest::from_slice(&bytes).is_ok() {
        "DeviceRequest"
    } else if civis_core::mdoc::SessionEstablishment::from_slice(&bytes).is_ok() {
        "SessionEstablishment"
    } else if civis_core::mdoc::DeviceEngagement::from_slice(&bytes).is_ok() {
        "DeviceEngagement"
    } else if civis_core::cose::decode_sign1(&bytes).is_ok() {
        "COSE_Sign1"
    } else if SessionTranscript::from_bytes(&bytes).is_ok() {
        "SessionTranscript"
    } else if StatusList::from_cbor(&bytes).is_ok() {
        "StatusList"
    } else {
        "CBOR"
    };
    Ok(serde_json::to_string_pretty(
        &json!({"kind": kind, "structure": explain(&value)}),
    )?)
}
