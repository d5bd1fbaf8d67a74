//! Command and response APDU parsing: never panics; a parsed command re-encodes to bytes that
//! parse to the same command.
#![no_main]

use civis_core::apdu::{self, Command, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(cmd) = Command::parse(data) {
        let bytes = cmd.encode().expect("a parsed command encodes");
        assert_eq!(Command::parse(&bytes).expect("re-parse"), cmd);
    }
    let _ = Response::parse(data);
    let _ = apdu::do53_unwrap(data);
});
