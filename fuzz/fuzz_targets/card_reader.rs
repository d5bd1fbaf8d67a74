//! The reader side against a lying card: every answer APDU comes from the input (split at
//! each 0xFF byte), and the reader reads the engagement, opens a session, sends a request and reads
//! the card info. Never panics, whatever the card says.
#![no_main]

use civis_firmware_bridge::CardTransport;
use civis_firmware_bridge::reader::{CardClient, MdocSession};
use libfuzzer_sys::fuzz_target;

struct Script<'a>(std::vec::IntoIter<&'a [u8]>);

impl CardTransport for Script<'_> {
    fn transmit(&mut self, _command: &[u8]) -> civis_firmware_bridge::Result<Vec<u8>> {
        self.0
            .next()
            .map(<[u8]>::to_vec)
            .ok_or_else(|| civis_firmware_bridge::Error::Link("no more answers".into()))
    }
}

#[path = "common/rng.rs"]
mod rng;
use rng::Counter;

fuzz_target!(|data: &[u8]| {
    let answers: Vec<&[u8]> = data.split(|b| *b == 0xFF).collect();
    let mut client = CardClient::new(Script(answers.into_iter()));
    if let Ok(engaged) = client.read_engagement() {
        let (mut session, e_reader, e_bytes) = MdocSession::start(&engaged, &mut Counter(3));
        let request = civis_core::mdoc::DeviceRequest {
            version: "1.0".into(),
            doc_requests: Vec::new(),
        };
        let _ = session.establish(&mut client, e_reader.public_key(), e_bytes, &request);
    }
    let _ = client.info();
});
