//! The NDEF Type 4 Tag application: the capability container and the NDEF file holding the
//! static handover with this power-on's DeviceEngagement.

use civis_core::apdu::{Command, Response, StatusWord};
use civis_core::card::{FILE_CC, FILE_NDEF};
use civis_core::cbor::CborForm;
use civis_core::crypto::SoftwareKey;
use civis_core::mdoc::DeviceEngagement;
use civis_core::ndef::{self, NfcLimits};
use rand_core::CryptoRngCore;

use super::{Card, Engagement, sw};

impl Card {
    pub(super) fn read_binary(&self, cmd: &Command) -> Response {
        let file = match (self.ram.file, &self.ram.engagement) {
            (Some(FILE_CC), Some(e)) => capability_container(e.handover.len()),
            (Some(FILE_NDEF), Some(e)) => {
                let mut f = u16::try_from(e.handover.len())
                    .unwrap_or(u16::MAX)
                    .to_be_bytes()
                    .to_vec();
                f.extend_from_slice(&e.handover);
                f
            }
            _ => return sw(StatusWord::ConditionsNotSatisfied),
        };
        let offset = usize::from(u16::from_be_bytes([cmd.p1 & 0x7F, cmd.p2]));
        if offset > file.len() {
            return sw(StatusWord::WrongParameters);
        }
        let want = usize::try_from(cmd.le.unwrap_or(256)).unwrap_or(usize::MAX);
        let end = offset.saturating_add(want).min(file.len());
        Response::ok(file.get(offset..end).unwrap_or_default().to_vec())
    }
}

pub(super) fn capability_container(ndef_len: usize) -> Vec<u8> {
    // Mapping 2.0, MLe = MLc = 0x7FFF, NDEF file E104 of NLEN + message, read free, no write.
    let max = u16::try_from(ndef_len.saturating_add(2)).unwrap_or(u16::MAX);
    let mut cc = vec![0x00, 0x0F, 0x20, 0x7F, 0xFF, 0x7F, 0xFF, 0x04, 0x06];
    cc.extend_from_slice(&FILE_NDEF.to_be_bytes());
    cc.extend_from_slice(&max.to_be_bytes());
    cc.extend_from_slice(&[0x00, 0xFF]);
    cc
}

pub(super) fn new_engagement(
    limits: NfcLimits,
    rng: &mut impl CryptoRngCore,
) -> civis_core::Result<Engagement> {
    let e_device = SoftwareKey::generate(rng);
    let device_engagement = DeviceEngagement::new(e_device.public_key()).to_vec();
    let handover = ndef::static_handover(&device_engagement, limits)?;
    Ok(Engagement {
        e_device,
        device_engagement,
        handover,
        used: false,
    })
}
