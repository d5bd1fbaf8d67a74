//! ISO/IEC 7816-4 command and response APDUs.
//!
//! Commands in all seven cases (1, 2S, 3S, 4S, 2E, 3E, 4E), command chaining (CLA bit 0x10), the
//! GET RESPONSE / `61xx` rule used by ISO 18013-5 over NFC, and the BER-TLV `53` data object that
//! wraps ENVELOPE payloads. Parsing never panics; lengths are checked against the bytes present.

use std::fmt;

use crate::error::{Error, Result};

/// Largest APDU accepted: extended header (7) + 65535 data + 3 Le bytes.
pub const MAX_APDU_LEN: usize = 4 + 3 + 65535 + 2;

/// CLA bit marking "more commands of this chain follow".
pub const CLA_CHAINING: u8 = 0x10;

/// Instruction bytes used by Civis.
pub mod ins {
    /// SELECT.
    pub const SELECT: u8 = 0xA4;
    /// READ BINARY.
    pub const READ_BINARY: u8 = 0xB0;
    /// UPDATE BINARY.
    pub const UPDATE_BINARY: u8 = 0xD6;
    /// ENVELOPE (ISO 18013-5 data retrieval).
    pub const ENVELOPE: u8 = 0xC3;
    /// GET RESPONSE.
    pub const GET_RESPONSE: u8 = 0xC0;
    /// INTERNAL AUTHENTICATE.
    pub const INTERNAL_AUTHENTICATE: u8 = 0x88;
    /// VERIFY (PIN).
    pub const VERIFY: u8 = 0x20;
    /// GET DATA.
    pub const GET_DATA: u8 = 0xCA;
}

/// A command APDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    /// Class byte.
    pub cla: u8,
    /// Instruction.
    pub ins: u8,
    /// Parameter 1.
    pub p1: u8,
    /// Parameter 2.
    pub p2: u8,
    /// Command data (Nc = its length, at most 65535).
    pub data: Vec<u8>,
    /// Expected response length Ne (1..=65536), `None` if no response data is expected.
    pub le: Option<u32>,
}

impl Command {
    /// A command without data or Le.
    pub fn new(cla: u8, ins: u8, p1: u8, p2: u8) -> Self {
        Self {
            cla,
            ins,
            p1,
            p2,
            data: Vec::new(),
            le: None,
        }
    }

    /// With data.
    pub fn with_data(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.data = data.into();
        self
    }

    /// With Le (Ne).
    pub fn with_le(mut self, le: u32) -> Self {
        self.le = Some(le);
        self
    }

    /// Whether CLA says more chained commands follow.
    pub fn is_chained(&self) -> bool {
        self.cla & CLA_CHAINING != 0
    }

    /// Whether this needs the extended form.
    pub fn is_extended(&self) -> bool {
        self.data.len() > 255 || self.le.is_some_and(|le| le > 256)
    }

    /// Encode, choosing short or extended length.
    pub fn encode(&self) -> Result<Vec<u8>> {
        if self.data.len() > 65535 {
            return Err(Error::invalid(
                "APDU",
                "command data longer than 65535 bytes",
            ));
        }
        if let Some(le) = self.le
            && !(1..=65536).contains(&le)
        {
            return Err(Error::invalid("APDU", "Le must be 1..=65536"));
        }
        let mut out = Vec::with_capacity(self.data.len().saturating_add(9));
        out.extend_from_slice(&[self.cla, self.ins, self.p1, self.p2]);
        let nc = self.data.len();
        if self.is_extended() {
            if nc > 0 {
                out.push(0);
                out.extend_from_slice(&(nc as u16).to_be_bytes());
                out.extend_from_slice(&self.data);
            }
            if let Some(le) = self.le {
                if nc == 0 {
                    out.push(0);
                }
                out.extend_from_slice(&((le & 0xffff) as u16).to_be_bytes());
            }
        } else {
            if nc > 0 {
                out.push(nc as u8);
                out.extend_from_slice(&self.data);
            }
            if let Some(le) = self.le {
                out.push((le & 0xff) as u8);
            }
        }
        Ok(out)
    }

    /// Parse any of the seven cases.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        const W: &str = "command APDU";
        if bytes.len() > MAX_APDU_LEN {
            return Err(Error::TooLarge {
                what: W,
                len: bytes.len(),
                limit: MAX_APDU_LEN,
            });
        }
        let (header, body) = bytes
            .split_first_chunk::<4>()
            .ok_or_else(|| Error::malformed(W, "shorter than 4 bytes"))?;
        let [cla, ins, p1, p2] = *header;
        let mut cmd = Self::new(cla, ins, p1, p2);
        let short_le = |b: u8| if b == 0 { 256 } else { u32::from(b) };
        let ext_le = |hi: u8, lo: u8| {
            let v = u32::from(u16::from_be_bytes([hi, lo]));
            if v == 0 { 65536 } else { v }
        };
        match body {
            // Case 1.
            [] => {}
            // Case 2S.
            [le] => cmd.le = Some(short_le(*le)),
            // Extended forms start with a zero byte and are at least 3 bytes long.
            [0, hi, lo, rest @ ..] => {
                let n = usize::from(u16::from_be_bytes([*hi, *lo]));
                if rest.is_empty() {
                    // Case 2E.
                    cmd.le = Some(ext_le(*hi, *lo));
                } else {
                    if n == 0 {
                        return Err(Error::malformed(W, "extended Lc of zero"));
                    }
                    // Case 3E or 4E.
                    let (data, tail) = rest
                        .split_at_checked(n)
                        .ok_or_else(|| Error::malformed(W, "Lc exceeds the data present"))?;
                    cmd.data = data.to_vec();
                    match tail {
                        [] => {}
                        [hi, lo] => cmd.le = Some(ext_le(*hi, *lo)),
                        _ => return Err(Error::malformed(W, "bad extended Le")),
                    }
                }
            }
            [lc, rest @ ..] => {
                let n = usize::from(*lc);
                if n == 0 {
                    return Err(Error::malformed(W, "Lc of zero"));
                }
                let (data, tail) = rest
                    .split_at_checked(n)
                    .ok_or_else(|| Error::malformed(W, "Lc exceeds the data present"))?;
                cmd.data = data.to_vec();
                match tail {
                    [] => {}
                    [le] => cmd.le = Some(short_le(*le)),
                    _ => return Err(Error::malformed(W, "bytes after Le")),
                }
            }
        }
        Ok(cmd)
    }
}

/// A status word.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusWord {
    /// 9000: success.
    Ok,
    /// 61xx: xx more bytes available (00 = 256 or more) via GET RESPONSE.
    MoreData(u8),
    /// 63Cx: verification failed, x tries left.
    VerifyFailed(u8),
    /// 6700: wrong length.
    WrongLength,
    /// 6882: secure messaging not supported.
    SecureMessagingNotSupported,
    /// 6883: last command of the chain expected.
    LastCommandExpected,
    /// 6884: command chaining not supported.
    ChainingNotSupported,
    /// 6982: security status not satisfied.
    SecurityStatusNotSatisfied,
    /// 6983: authentication method blocked.
    AuthenticationBlocked,
    /// 6985: conditions of use not satisfied.
    ConditionsNotSatisfied,
    /// 6A80: incorrect data.
    IncorrectData,
    /// 6A82: file or application not found.
    NotFound,
    /// 6A86: incorrect P1/P2.
    IncorrectP1P2,
    /// 6B00: wrong parameters.
    WrongParameters,
    /// 6D00: instruction not supported.
    InsNotSupported,
    /// 6E00: class not supported.
    ClaNotSupported,
    /// 6F00: no precise diagnosis.
    Unknown,
    /// Any other value.
    Other(u16),
}

impl StatusWord {
    /// From SW1 SW2.
    pub fn from_u16(sw: u16) -> Self {
        let [sw1, sw2] = sw.to_be_bytes();
        match (sw1, sw2) {
            (0x90, 0x00) => Self::Ok,
            (0x61, n) => Self::MoreData(n),
            (0x63, n) if n & 0xf0 == 0xc0 => Self::VerifyFailed(n & 0x0f),
            (0x67, 0x00) => Self::WrongLength,
            (0x68, 0x82) => Self::SecureMessagingNotSupported,
            (0x68, 0x83) => Self::LastCommandExpected,
            (0x68, 0x84) => Self::ChainingNotSupported,
            (0x69, 0x82) => Self::SecurityStatusNotSatisfied,
            (0x69, 0x83) => Self::AuthenticationBlocked,
            (0x69, 0x85) => Self::ConditionsNotSatisfied,
            (0x6a, 0x80) => Self::IncorrectData,
            (0x6a, 0x82) => Self::NotFound,
            (0x6a, 0x86) => Self::IncorrectP1P2,
            (0x6b, 0x00) => Self::WrongParameters,
            (0x6d, 0x00) => Self::InsNotSupported,
            (0x6e, 0x00) => Self::ClaNotSupported,
            (0x6f, 0x00) => Self::Unknown,
            _ => Self::Other(sw),
        }
    }

    /// SW1 SW2 as a number.
    pub fn to_u16(self) -> u16 {
        match self {
            Self::Ok => 0x9000,
            Self::MoreData(n) => 0x6100 | u16::from(n),
            Self::VerifyFailed(n) => 0x63c0 | u16::from(n & 0x0f),
            Self::WrongLength => 0x6700,
            Self::SecureMessagingNotSupported => 0x6882,
            Self::LastCommandExpected => 0x6883,
            Self::ChainingNotSupported => 0x6884,
            Self::SecurityStatusNotSatisfied => 0x6982,
            Self::AuthenticationBlocked => 0x6983,
            Self::ConditionsNotSatisfied => 0x6985,
            Self::IncorrectData => 0x6a80,
            Self::NotFound => 0x6a82,
            Self::IncorrectP1P2 => 0x6a86,
            Self::WrongParameters => 0x6b00,
            Self::InsNotSupported => 0x6d00,
            Self::ClaNotSupported => 0x6e00,
            Self::Unknown => 0x6f00,
            Self::Other(sw) => sw,
        }
    }
}

impl fmt::Display for StatusWord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04X}", self.to_u16())
    }
}

/// A response APDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Response data.
    pub data: Vec<u8>,
    /// Status word.
    pub sw: StatusWord,
}

impl Response {
    /// A bare status word.
    pub fn status(sw: StatusWord) -> Self {
        Self {
            data: Vec::new(),
            sw,
        }
    }

    /// Data with 9000.
    pub fn ok(data: impl Into<Vec<u8>>) -> Self {
        Self {
            data: data.into(),
            sw: StatusWord::Ok,
        }
    }

    /// Parse: data followed by SW1 SW2.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > 65536 + 2 {
            return Err(Error::TooLarge {
                what: "response APDU",
                len: bytes.len(),
                limit: 65538,
            });
        }
        let (data, sw) = bytes
            .split_last_chunk::<2>()
            .ok_or_else(|| Error::malformed("response APDU", "shorter than 2 bytes"))?;
        Ok(Self {
            data: data.to_vec(),
            sw: StatusWord::from_u16(u16::from_be_bytes(*sw)),
        })
    }

    /// Encode.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = self.data.clone();
        out.extend_from_slice(&self.sw.to_u16().to_be_bytes());
        out
    }
}

/// Split `data` into chained commands of at most `max_chunk` bytes; all but the last carry
/// [`CLA_CHAINING`], the last carries `le`.
pub fn chain(
    cla: u8,
    ins: u8,
    p1: u8,
    p2: u8,
    data: &[u8],
    max_chunk: usize,
    le: Option<u32>,
) -> Vec<Command> {
    let max_chunk = max_chunk.clamp(1, 65535);
    if data.is_empty() {
        let mut c = Command::new(cla, ins, p1, p2);
        c.le = le;
        return vec![c];
    }
    let n = data.len().div_ceil(max_chunk);
    data.chunks(max_chunk)
        .enumerate()
        .map(|(i, chunk)| {
            let last = i.saturating_add(1) == n;
            let mut c = Command::new(if last { cla } else { cla | CLA_CHAINING }, ins, p1, p2)
                .with_data(chunk);
            if last {
                c.le = le;
            }
            c
        })
        .collect()
}

/// The GET RESPONSE command for `le` bytes.
pub fn get_response(le: u32) -> Command {
    Command::new(0x00, ins::GET_RESPONSE, 0, 0).with_le(le)
}

/// Card side: hands out a long reply in pieces under the `61xx` rule of ISO 18013-5 §8.3.3.1.2.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResponseChunker {
    pending: Vec<u8>,
    offset: usize,
}

impl ResponseChunker {
    /// Start sending `data`; returns the first response for a command that asked for `le` bytes.
    pub fn start(&mut self, data: Vec<u8>, le: u32) -> Response {
        self.pending = data;
        self.offset = 0;
        self.next(le)
    }

    /// Whether bytes remain for GET RESPONSE.
    pub fn has_pending(&self) -> bool {
        self.offset < self.pending.len()
    }

    /// The next piece for a GET RESPONSE asking for `le` bytes.
    pub fn next(&mut self, le: u32) -> Response {
        let le = usize::try_from(le).unwrap_or(65536).max(1);
        let avail = self.pending.len().saturating_sub(self.offset);
        let take = avail.min(le);
        let end = self.offset.saturating_add(take);
        let data = self
            .pending
            .get(self.offset..end)
            .unwrap_or_default()
            .to_vec();
        self.offset = end;
        let left = avail.saturating_sub(take);
        let sw = match left {
            0 => {
                self.pending.clear();
                self.offset = 0;
                StatusWord::Ok
            }
            1..=255 => StatusWord::MoreData(left as u8),
            _ => StatusWord::MoreData(0),
        };
        Response { data, sw }
    }
}

/// Largest content of a `53` data object (three length bytes).
pub const MAX_DO53_LEN: usize = 0xff_ffff;

/// Wrap `data` in the BER-TLV data object `53`.
pub fn do53_wrap(data: &[u8]) -> Result<Vec<u8>> {
    let n = data.len();
    if n > MAX_DO53_LEN {
        return Err(Error::TooLarge {
            what: "DO 53 content",
            len: n,
            limit: MAX_DO53_LEN,
        });
    }
    let mut out = Vec::with_capacity(n.saturating_add(5));
    out.push(0x53);
    match n {
        0..=0x7f => out.push(n as u8),
        0x80..=0xff => out.extend_from_slice(&[0x81, n as u8]),
        0x100..=0xffff => {
            out.push(0x82);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0x83);
            out.extend_from_slice(&(n as u32).to_be_bytes()[1..]);
        }
    }
    out.extend_from_slice(data);
    Ok(out)
}

/// Unwrap a complete `53` data object; the length must match the bytes exactly.
pub fn do53_unwrap(bytes: &[u8]) -> Result<&[u8]> {
    const W: &str = "DO 53";
    let rest = match bytes {
        [0x53, rest @ ..] => rest,
        _ => return Err(Error::malformed(W, "tag is not 53")),
    };
    let (len, data) = match rest {
        [n, data @ ..] if *n < 0x80 => (usize::from(*n), data),
        [0x81, n, data @ ..] => (usize::from(*n), data),
        [0x82, a, b, data @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), data),
        [0x83, a, b, c, data @ ..] => (
            usize::try_from(u32::from_be_bytes([0, *a, *b, *c])).unwrap_or(usize::MAX),
            data,
        ),
        _ => return Err(Error::malformed(W, "bad length")),
    };
    if len != data.len() {
        return Err(Error::malformed(W, "length does not match the data"));
    }
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_cases_round_trip() {
        let cases = [
            Command::new(0, 0xa4, 4, 0),
            Command::new(0, 0xb0, 0, 0).with_le(15),
            Command::new(0, 0xb0, 0, 0).with_le(256),
            Command::new(0, 0xa4, 4, 0).with_data(vec![1, 2, 3]),
            Command::new(0, 0xa4, 4, 0)
                .with_data(vec![1, 2, 3])
                .with_le(256),
            Command::new(0, 0xb0, 0, 2).with_le(65536),
            Command::new(0, 0xc3, 0, 0).with_data(vec![7; 1000]),
            Command::new(0, 0xc3, 0, 0)
                .with_data(vec![7; 300])
                .with_le(0xfef8),
            Command::new(0, 0xc3, 0, 0)
                .with_data(vec![7; 3])
                .with_le(1000),
        ];
        for c in cases {
            let bytes = c.encode().unwrap();
            assert_eq!(
                Command::parse(&bytes).unwrap(),
                c,
                "{}",
                hex::encode(&bytes)
            );
        }
    }

    #[test]
    fn parses_android_forms() {
        // SELECT with Le=00, READ BINARY with extended Le and no Lc.
        let sel = Command::parse(&hex::decode("00A4040007D276000085010100").unwrap()).unwrap();
        assert_eq!(sel.data, hex::decode("D2760000850101").unwrap());
        assert_eq!(sel.le, Some(256));
        let rb = Command::parse(&hex::decode("00B000020000CE").unwrap()).unwrap();
        assert_eq!((rb.p2, rb.le, rb.data.len()), (2, Some(0xce), 0));
    }

    #[test]
    fn refuses_inconsistent_lengths() {
        for h in [
            "00A4",
            "00A4040005010203",
            "00A404000301020304FF",
            "00A40400000005AA",
            "00A404000000",
        ] {
            assert!(Command::parse(&hex::decode(h).unwrap()).is_err(), "{h}");
        }
    }

    #[test]
    fn chunker_follows_61xx_rule() {
        let mut ch = ResponseChunker::default();
        let r = ch.start(vec![1; 600], 256);
        assert_eq!((r.data.len(), r.sw), (256, StatusWord::MoreData(0)));
        let r = ch.next(256);
        assert_eq!((r.data.len(), r.sw), (256, StatusWord::MoreData(88)));
        let r = ch.next(88);
        assert_eq!((r.data.len(), r.sw), (88, StatusWord::Ok));
        assert!(!ch.has_pending());
    }

    #[test]
    fn chaining_and_do53() {
        let data = do53_wrap(&[9; 600]).unwrap();
        let cmds = chain(0, ins::ENVELOPE, 0, 0, &data, 255, Some(256));
        assert_eq!(cmds.len(), 3);
        assert!(cmds[0].is_chained() && cmds[1].is_chained() && !cmds[2].is_chained());
        assert_eq!(cmds[2].le, Some(256));
        let joined: Vec<u8> = cmds.iter().flat_map(|c| c.data.clone()).collect();
        assert_eq!(do53_unwrap(&joined).unwrap(), &[9; 600][..]);
        assert!(do53_unwrap(&joined[..joined.len() - 1]).is_err());
    }
}
