//! Intake: getting a presentation from a citizen card at the kiosk, over any card transport
//! (an NFC reader through `nfc1`, the in-process card in tests). The kiosk asks for the
//! policy's elements only, under its accredited ReaderAuth key, in one session per tap.

use civis_core::cose::Signer;
use civis_core::mdoc::{DeviceRequest, SessionTranscript, reader_auth};
use civis_firmware_bridge::CardTransport;
use civis_firmware_bridge::reader::{CardClient, MdocSession};
use rand_core::CryptoRngCore;

use crate::policy::KioskPolicy;

/// What one tap gave: the DeviceResponse bytes, and the transcript and request they answer.
#[derive(Debug)]
pub struct Tap {
    /// DeviceResponse bytes.
    pub response: Vec<u8>,
    /// The session's transcript.
    pub transcript: SessionTranscript,
    /// The request the kiosk sent.
    pub request: DeviceRequest,
}

/// Read the card on `client` for `policy`: engagement, a session, one ReaderAuth request signed
/// with the kiosk's key and carrying its accreditation `statement`, the answer; the session is
/// ended before returning.
pub fn read_card<T: CardTransport>(
    client: &mut CardClient<T>,
    policy: &KioskPolicy,
    kiosk_key: &dyn Signer,
    statement: &[u8],
    rng: &mut impl CryptoRngCore,
) -> Result<Tap, civis_firmware_bridge::Error> {
    let engaged = client.read_engagement()?;
    let (mut session, e_reader, e_bytes) = MdocSession::start(&engaged, rng);
    let transcript = session.transcript().clone();
    let request = DeviceRequest {
        version: "1.0".into(),
        doc_requests: vec![reader_auth::sign_with_accreditation(
            policy.items_request(),
            &transcript,
            kiosk_key,
            statement,
        )?],
    };
    let response = session.establish(client, e_reader.public_key(), e_bytes, &request)?;
    // Ending the session is courtesy: the answer is already in hand.
    let _ = session.end(client);
    Ok(Tap {
        response,
        transcript,
        request,
    })
}
