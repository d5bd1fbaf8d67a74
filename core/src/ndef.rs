//! NDEF records and the ISO 18013-5 NFC static handover (a Handover Select message carrying the
//! DeviceEngagement and the NFC carrier's size limits).
//!
//! The message is what a Type 4 Tag application serves in its NDEF file; its exact bytes are the
//! `Handover` of the SessionTranscript, so the reader keeps them as read.

use crate::error::{Error, Result};

/// Largest NDEF message accepted (the NDEF file of a T4T is at most 32 KiB here).
pub const MAX_MESSAGE_LEN: usize = 32 * 1024;

const MB: u8 = 0x80;
const ME: u8 = 0x40;
const CF: u8 = 0x20;
const SR: u8 = 0x10;
const IL: u8 = 0x08;

/// TNF 1: NFC Forum well-known type.
pub const TNF_WELL_KNOWN: u8 = 1;
/// TNF 4: NFC Forum external type.
pub const TNF_EXTERNAL: u8 = 4;

/// Type of the DeviceEngagement record.
pub const TYPE_DEVICE_ENGAGEMENT: &[u8] = b"iso.org:18013:deviceengagement";
/// Type of the NFC carrier configuration record.
pub const TYPE_NFC_CARRIER: &[u8] = b"iso.org:18013:nfc";
/// Connection Handover version written and accepted (1.5).
pub const HANDOVER_VERSION: u8 = 0x15;

/// One NDEF record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Type name format (3 bits).
    pub tnf: u8,
    /// Record type.
    pub record_type: Vec<u8>,
    /// Record id (empty if none).
    pub id: Vec<u8>,
    /// Payload.
    pub payload: Vec<u8>,
}

impl Record {
    fn encode_into(&self, out: &mut Vec<u8>, first: bool, last: bool) -> Result<()> {
        let type_len = u8::try_from(self.record_type.len())
            .map_err(|_| Error::invalid("NDEF record", "type longer than 255 bytes"))?;
        let id_len = u8::try_from(self.id.len())
            .map_err(|_| Error::invalid("NDEF record", "id longer than 255 bytes"))?;
        let short = self.payload.len() < 256;
        let mut header = self.tnf & 0x07;
        if first {
            header |= MB;
        }
        if last {
            header |= ME;
        }
        if short {
            header |= SR;
        }
        if !self.id.is_empty() {
            header |= IL;
        }
        out.push(header);
        out.push(type_len);
        if short {
            out.extend_from_slice(&[self.payload.len() as u8]);
        } else {
            let len = u32::try_from(self.payload.len())
                .map_err(|_| Error::invalid("NDEF record", "payload too long"))?;
            out.extend_from_slice(&len.to_be_bytes());
        }
        if !self.id.is_empty() {
            out.push(id_len);
        }
        out.extend_from_slice(&self.record_type);
        out.extend_from_slice(&self.id);
        out.extend_from_slice(&self.payload);
        Ok(())
    }
}

/// Encode records as one NDEF message (MB on the first, ME on the last).
pub fn encode(records: &[Record]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let n = records.len();
    for (i, r) in records.iter().enumerate() {
        r.encode_into(&mut out, i == 0, i + 1 == n)?;
    }
    Ok(out)
}

/// Parse an NDEF message. Chunked records (CF) are refused: no mdoc handover uses them.
pub fn parse(bytes: &[u8]) -> Result<Vec<Record>> {
    const W: &str = "NDEF message";
    if bytes.len() > MAX_MESSAGE_LEN {
        return Err(Error::TooLarge {
            what: W,
            len: bytes.len(),
            limit: MAX_MESSAGE_LEN,
        });
    }
    let mut rest = bytes;
    let mut take = |n: usize| -> Result<&[u8]> {
        let (head, tail) = rest
            .split_at_checked(n)
            .ok_or_else(|| Error::malformed(W, "truncated record"))?;
        rest = tail;
        Ok(head)
    };
    let mut records = Vec::new();
    loop {
        let [header] = take(1)? else {
            return Err(Error::malformed(W, "truncated record"));
        };
        let header = *header;
        if records.is_empty() != (header & MB != 0) {
            return Err(Error::malformed(W, "message begin flag misplaced"));
        }
        if header & CF != 0 {
            return Err(Error::Unsupported("chunked NDEF records".into()));
        }
        let [type_len] = take(1)? else {
            return Err(Error::malformed(W, "truncated record"));
        };
        let type_len = usize::from(*type_len);
        let payload_len = if header & SR != 0 {
            let [l] = take(1)? else {
                return Err(Error::malformed(W, "truncated record"));
            };
            usize::from(*l)
        } else {
            let l = take(4)?;
            let l = u32::from_be_bytes([
                *l.first().unwrap_or(&0),
                *l.get(1).unwrap_or(&0),
                *l.get(2).unwrap_or(&0),
                *l.get(3).unwrap_or(&0),
            ]);
            usize::try_from(l).map_err(|_| Error::malformed(W, "payload length"))?
        };
        let id_len = if header & IL != 0 {
            let [l] = take(1)? else {
                return Err(Error::malformed(W, "truncated record"));
            };
            usize::from(*l)
        } else {
            0
        };
        let record_type = take(type_len)?.to_vec();
        let id = take(id_len)?.to_vec();
        let payload = take(payload_len)?.to_vec();
        records.push(Record {
            tnf: header & 0x07,
            record_type,
            id,
            payload,
        });
        if header & ME != 0 {
            break;
        }
    }
    if !rest.is_empty() {
        return Err(Error::malformed(W, "bytes after the message end"));
    }
    Ok(records)
}

/// The NFC carrier's limits: longest command data and response data the mdoc handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NfcLimits {
    /// Maximum command data length (255..=65535).
    pub max_command: u32,
    /// Maximum response data length (256..=65536).
    pub max_response: u32,
}

impl NfcLimits {
    /// Short APDUs only: 255-byte commands, 256-byte responses (the 18013-5 minimums).
    pub const SHORT: Self = Self {
        max_command: 255,
        max_response: 256,
    };
    /// Extended length: 65535-byte commands, 65536-byte responses.
    pub const EXTENDED: Self = Self {
        max_command: 65535,
        max_response: 65536,
    };
}

fn length_field(kind: u8, value: u32) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let significant: &[u8] = match value {
        0..=0xFF => bytes.get(3..).unwrap_or(&[]),
        0x100..=0xFFFF => bytes.get(2..).unwrap_or(&[]),
        _ => bytes.get(1..).unwrap_or(&[]),
    };
    let mut out = vec![(significant.len() + 1) as u8, kind];
    out.extend_from_slice(significant);
    out
}

/// The static Handover Select message for NFC data retrieval: `Hs` (version 1.5, one `ac` record
/// pointing at the `nfc` carrier, auxiliary data `mdoc`), the DeviceEngagement record (id
/// `mdoc`) and the NFC carrier record (id `nfc`).
pub fn static_handover(device_engagement: &[u8], limits: NfcLimits) -> Result<Vec<u8>> {
    let ac = Record {
        tnf: TNF_WELL_KNOWN,
        record_type: b"ac".to_vec(),
        id: Vec::new(),
        payload: [&[0x01, 0x03][..], b"nfc", &[0x01, 0x04], b"mdoc"].concat(),
    };
    let mut hs_payload = vec![HANDOVER_VERSION];
    hs_payload.extend(encode(&[ac])?);
    let mut carrier = vec![0x01];
    carrier.extend(length_field(0x01, limits.max_command));
    carrier.extend(length_field(0x02, limits.max_response));
    encode(&[
        Record {
            tnf: TNF_WELL_KNOWN,
            record_type: b"Hs".to_vec(),
            id: Vec::new(),
            payload: hs_payload,
        },
        Record {
            tnf: TNF_EXTERNAL,
            record_type: TYPE_DEVICE_ENGAGEMENT.to_vec(),
            id: b"mdoc".to_vec(),
            payload: device_engagement.to_vec(),
        },
        Record {
            tnf: TNF_EXTERNAL,
            record_type: TYPE_NFC_CARRIER.to_vec(),
            id: b"nfc".to_vec(),
            payload: carrier,
        },
    ])
}

/// What a reader takes from a static handover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    /// The DeviceEngagement bytes, as read.
    pub device_engagement: Vec<u8>,
    /// The NFC carrier's limits, if the message has an NFC carrier record.
    pub limits: Option<NfcLimits>,
}

fn parse_limits(payload: &[u8]) -> Result<NfcLimits> {
    const W: &str = "NFC carrier record";
    let (version, mut rest) = payload
        .split_first()
        .ok_or_else(|| Error::malformed(W, "empty"))?;
    if *version != 0x01 {
        return Err(Error::Unsupported(format!("NFC carrier version {version}")));
    }
    let (mut command, mut response) = (None, None);
    while let Some((&len, tail)) = rest.split_first() {
        let len = usize::from(len);
        let (field, tail) = tail
            .split_at_checked(len)
            .ok_or_else(|| Error::malformed(W, "truncated field"))?;
        rest = tail;
        let (kind, value) = field
            .split_first()
            .ok_or_else(|| Error::malformed(W, "empty field"))?;
        if value.is_empty() || value.len() > 3 {
            return Err(Error::malformed(W, "length value of 1..3 bytes expected"));
        }
        let v = value.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b));
        match kind {
            0x01 => command = Some(v),
            0x02 => response = Some(v),
            _ => {}
        }
    }
    let limits = NfcLimits {
        max_command: command.ok_or_else(|| Error::malformed(W, "no max command length"))?,
        max_response: response.ok_or_else(|| Error::malformed(W, "no max response length"))?,
    };
    if !(255..=65535).contains(&limits.max_command) || !(256..=65536).contains(&limits.max_response)
    {
        return Err(Error::invalid(W, "limits outside 255..65535 / 256..65536"));
    }
    Ok(limits)
}

/// Parse a static Handover Select message. Records are found by type, not position (some
/// wallets put other carriers first); the Hs record must be first and of version 1.5.
pub fn parse_static_handover(bytes: &[u8]) -> Result<Handover> {
    const W: &str = "Handover Select";
    let records = parse(bytes)?;
    let hs = records
        .first()
        .filter(|r| r.tnf == TNF_WELL_KNOWN && r.record_type == b"Hs")
        .ok_or_else(|| Error::malformed(W, "first record is not Hs"))?;
    if hs.payload.first() != Some(&HANDOVER_VERSION) {
        return Err(Error::Unsupported(
            "Connection Handover version other than 1.5".into(),
        ));
    }
    let find = |t: &[u8]| {
        records
            .iter()
            .find(|r| r.tnf == TNF_EXTERNAL && r.record_type == t)
    };
    let de = find(TYPE_DEVICE_ENGAGEMENT)
        .ok_or_else(|| Error::malformed(W, "no DeviceEngagement record"))?;
    Ok(Handover {
        device_engagement: de.payload.clone(),
        limits: find(TYPE_NFC_CARRIER)
            .map(|r| parse_limits(&r.payload))
            .transpose()?,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn static_handover_has_the_documented_bytes_and_parses_back() {
        let de = vec![0xA2; 88];
        let msg = static_handover(&de, NfcLimits::EXTENDED).unwrap();
        // Hs with one ac record for the nfc carrier (notes: NFC-only form).
        let hs = [
            &[0x91, 0x02, 0x11][..],
            b"Hs",
            &[0x15, 0xD1, 0x02, 0x0B],
            b"ac",
            &[0x01, 0x03],
            b"nfc",
            &[0x01, 0x04],
            b"mdoc",
        ]
        .concat();
        assert_eq!(&msg[..hs.len()], &hs[..]);
        assert_eq!(&msg[hs.len()..hs.len() + 4], &[0x1C, 0x1E, 88, 0x04]);
        let tail = [
            &[0x5C, 0x11, 0x0A, 0x03][..],
            b"iso.org:18013:nfc",
            b"nfc",
            &[0x01, 0x03, 0x01, 0xFF, 0xFF, 0x04, 0x02, 0x01, 0x00, 0x00],
        ]
        .concat();
        assert!(msg.ends_with(&tail));
        let h = parse_static_handover(&msg).unwrap();
        assert_eq!(h.device_engagement, de);
        assert_eq!(h.limits, Some(NfcLimits::EXTENDED));
        let short = parse_static_handover(&static_handover(&de, NfcLimits::SHORT).unwrap());
        assert_eq!(short.unwrap().limits, Some(NfcLimits::SHORT));
    }

    #[test]
    fn truncated_and_trailing_bytes_are_refused() {
        let msg = static_handover(&[1, 2, 3], NfcLimits::SHORT).unwrap();
        for n in 0..msg.len() {
            assert!(
                parse_static_handover(&msg[..n]).is_err(),
                "prefix {n} accepted"
            );
        }
        let mut longer = msg.clone();
        longer.push(0);
        assert!(parse(&longer).is_err());
    }

    #[test]
    fn records_are_found_by_type_not_position() {
        let de = vec![7u8; 300];
        let msg = static_handover(&de, NfcLimits::SHORT).unwrap();
        let mut records = parse(&msg).unwrap();
        records.swap(1, 2);
        let h = parse_static_handover(&encode(&records).unwrap()).unwrap();
        assert_eq!(
            h.device_engagement, de,
            "a long (non-SR) record round-trips"
        );
    }
}
