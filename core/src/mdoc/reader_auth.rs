//! ReaderAuth: the reader's COSE_Sign1 over `ReaderAuthenticationBytes`, with its certificate in
//! `x5chain` checked against a trusted reader root. (Civis kiosks will also carry a
//! governance-signed kiosk accreditation; that arrives with the registry and card issues.)

use super::engagement::SessionTranscript;
use super::request::DocRequest;
use crate::cose::{self, Domain};
use crate::error::{Error, Result};
use crate::timestamp::Timestamp;
use crate::x509::Cert;

/// Verify a DocRequest's readerAuth against `roots` at `at`; returns the reader's certificate.
pub fn verify(
    doc_request: &DocRequest,
    transcript: &SessionTranscript,
    roots: &[Cert],
    at: Timestamp,
) -> Result<Cert> {
    let auth = doc_request
        .reader_auth
        .as_ref()
        .ok_or_else(|| Error::invalid("ReaderAuth", "the request is not reader-authenticated"))?;
    if auth.cose.payload.is_some() {
        return Err(Error::malformed(
            "ReaderAuth",
            "payload must be detached (nil)",
        ));
    }
    cose::check_alg(&auth.cose)?;
    let chain = cose::x5chain(&auth.cose)?;
    let leaf = Cert::from_der(
        chain
            .first()
            .ok_or_else(|| Error::malformed("ReaderAuth", "no x5chain"))?,
    )?;
    let root = roots
        .iter()
        .find(|r| leaf.names_issuer(r))
        .ok_or_else(|| Error::Certificate("reader certificate names no trusted root".into()))?;
    leaf.verify_issued_by(root, at)?;
    let payload = transcript.reader_authentication_bytes(&doc_request.items_request);
    cose::verify_sign1(
        &auth.cose,
        leaf.public_key(),
        Domain::IsoReaderAuth,
        Some(&payload),
    )?;
    Ok(leaf)
}
