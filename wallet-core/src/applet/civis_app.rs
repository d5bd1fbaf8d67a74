//! The Civis application: card info, INTERNAL AUTHENTICATE, governance rotations, and
//! personalization under the batch transport key until LOCK.

use ciborium::Value;
use civis_core::apdu::{Response, StatusWord};
use civis_core::card::governance::{GovernanceSet, RotationRefused};
use civis_core::card::renewal;
use civis_core::card::{
    self, CHALLENGE_LEN, CREDENTIAL_SLOTS, CardInfo, GetData, MAX_CREDENTIAL_LEN, PERSO_MAC_LEN,
    PIN_TRIES, PUK_TRIES,
};
use civis_core::crypto::{EcPublicKey, SoftwareKey};
use civis_core::evote;
use civis_core::mdoc::citizen;
use civis_core::vrf::{VrfPublicKey, VrfSecretKey};
use rand_core::CryptoRngCore;

use super::secrets::valid_digits;
use super::{Card, CardState, Secret, VERSION, sw};
use crate::holder::StoredCredential;

impl Card {
    pub(super) fn info(&self, state: &CardState) -> CardInfo {
        CardInfo {
            version: VERSION.into(),
            serial: state.serial,
            locked: state.locked,
            perso_counter: state.perso_counter,
            public_key: state.public_key().map(|k| k.uncompressed().to_vec()),
            vrf_key: state.vrf_public_key().map(|k| k.to_bytes().to_vec()),
            pin_tries: state.pin.as_ref().map(|p| p.tries_left),
            puk_tries: state.puk.as_ref().map(|p| p.tries_left),
            credentials: state
                .credentials
                .iter()
                .enumerate()
                .filter(|(_, c)| c.is_some())
                .filter_map(|(i, _)| u8::try_from(i).ok())
                .collect(),
            has_root: state.governance.is_some(),
            time_floor: state.time_floor,
        }
    }

    /// GET DATA: the facts in the clear before LOCK (the factory needs them), sealed to the
    /// batch's transport key after it, under a fresh nonce: a locked card shows a stranger
    /// nothing that is the same at two reads.
    pub(super) fn get_data(&self, state: &CardState, rng: &mut impl CryptoRngCore) -> GetData {
        let info = self.info(state);
        if state.locked {
            GetData::Sealed(card::sealed_info::seal(&state.transport_key, &info, rng))
        } else {
            GetData::Open(info)
        }
    }

    /// INTERNAL AUTHENTICATE outside a session: only before LOCK. A locked card's signatures
    /// would let anyone recognise it (an ECDSA signature gives away its public key), so a locked
    /// card proves its key only to an accredited reader, inside the session (§5.4).
    pub(super) fn internal_authenticate(&self, challenge: &[u8]) -> Response {
        if self.state.locked {
            return sw(StatusWord::SecurityStatusNotSatisfied);
        }
        let Some(key) = &self.state.card_key else {
            return sw(StatusWord::ConditionsNotSatisfied);
        };
        if !CHALLENGE_LEN.contains(&challenge.len()) {
            return sw(StatusWord::WrongLength);
        }
        Response::ok(
            key.sign_es256(&card::internal_authenticate_message(challenge))
                .to_vec(),
        )
    }

    /// Personalization: only before LOCK (RENEW CREDENTIAL only after), and every command MAC'd
    /// under the transport key with the current counter (which then advances, so nothing can
    /// be replayed).
    pub(super) fn personalize(
        &mut self,
        header: [u8; 4],
        data: &[u8],
        next: &mut CardState,
        rng: &mut impl CryptoRngCore,
    ) -> Response {
        // Before LOCK a credential is written with PUT CREDENTIAL; after it only a renewal
        // sealed to the card key replaces one.
        if next.locked != (header[1] == card::ins::RENEW_CREDENTIAL) {
            return sw(StatusWord::ConditionsNotSatisfied);
        }
        let Some(split) = data.len().checked_sub(PERSO_MAC_LEN) else {
            return sw(StatusWord::SecurityStatusNotSatisfied);
        };
        let (body, mac) = data.split_at(split);
        if !next
            .transport_key
            .check(&next.serial, next.perso_counter, header, body, mac)
        {
            return sw(StatusWord::SecurityStatusNotSatisfied);
        }
        let before = next.clone();
        // The counter never wraps: a card that used up 2^32 MACs personalizes no more.
        let Some(advanced) = next.perso_counter.checked_add(1) else {
            return sw(StatusWord::ConditionsNotSatisfied);
        };
        let result = if header[1] == card::ins::RENEW_CREDENTIAL {
            renew_credential(header, body, next)
        } else {
            perso_command(header, body, next, rng)
        };
        match result {
            Ok(data) => {
                next.perso_counter = advanced;
                Response::ok(data)
            }
            Err(status) => {
                // A refused command (after its MAC passed) changes nothing but still uses up
                // its counter value.
                *next = before;
                next.perso_counter = advanced;
                sw(status)
            }
        }
    }
}

/// Apply a governance member's `rotate-key` transaction. Anyone may push one: it is public
/// chain data and checks itself, so the card needs no reader authentication for it, and the
/// answer for a rotation the card already had is the same as for a new one.
pub(super) fn rotate_governance(data: &[u8], next: &mut CardState) -> Response {
    let Some(governance) = next.governance.as_mut() else {
        return sw(StatusWord::ConditionsNotSatisfied);
    };
    match governance.rotate(data) {
        Ok(_) => sw(StatusWord::Ok),
        Err(RotationRefused::Gap) => sw(StatusWord::ConditionsNotSatisfied),
        Err(RotationRefused::NotApplicable | RotationRefused::Forged) => {
            sw(StatusWord::SecurityStatusNotSatisfied)
        }
    }
}

/// Only a credential bound to this card's key (and, when it names one, to this card's VRF key)
/// is stored: anything else could never be presented, and storing it would waste a slot.
fn bound_to(
    bytes: &[u8],
    card_key: &EcPublicKey,
    vrf_key: Option<&VrfPublicKey>,
) -> Result<(), StatusWord> {
    let credential = StoredCredential::from_bytes(bytes).map_err(|_| StatusWord::IncorrectData)?;
    if let Some(named) = credential.element(citizen::NAMESPACE, evote::VRF_KEY) {
        let ours = vrf_key.map(|k| Value::Bytes(k.to_bytes().to_vec()));
        if ours.as_ref() != Some(named) {
            return Err(StatusWord::IncorrectData);
        }
    }
    let bound = civis_core::mdoc::MobileSecurityObject::from_issuer_auth(
        &credential.issuer_signed.issuer_auth,
    )
    .and_then(|m| m.device_public_key())
    .map_err(|_| StatusWord::IncorrectData)?;
    if &bound == card_key {
        Ok(())
    } else {
        Err(StatusWord::IncorrectData)
    }
}

/// RENEW CREDENTIAL on a locked card, after the MAC passed: open the body sealed to the card
/// key for this counter and slot, store the credential in place of the old one (the one state
/// write is the whole change, so a tear leaves the old credential), and sign a receipt.
fn renew_credential(
    header: [u8; 4],
    body: &[u8],
    next: &mut CardState,
) -> Result<Vec<u8>, StatusWord> {
    let [_, _, slot, p2] = header;
    if slot >= CREDENTIAL_SLOTS || p2 != 0 {
        return Err(StatusWord::IncorrectP1P2);
    }
    let Some(key) = &next.card_key else {
        return Err(StatusWord::ConditionsNotSatisfied);
    };
    let counter = next.perso_counter;
    let credential = renewal::open(key, &next.serial, counter, slot, body)
        .map_err(|_| StatusWord::IncorrectData)?;
    bound_to(&credential, key.public_key(), next.vrf_public_key())?;
    let receipt = key.sign_es256(&renewal::receipt_message(
        &next.serial,
        counter,
        slot,
        &credential,
    ));
    if let Some(s) = next.credentials.get_mut(usize::from(slot)) {
        *s = Some(credential);
    }
    Ok(receipt.to_vec())
}

/// The personalization commands proper, after the MAC passed.
fn perso_command(
    header: [u8; 4],
    body: &[u8],
    next: &mut CardState,
    rng: &mut impl CryptoRngCore,
) -> Result<Vec<u8>, StatusWord> {
    let [_, ins, p1, p2] = header;
    match ins {
        card::ins::GENERATE_KEY => {
            if next.card_key.is_some() {
                return Err(StatusWord::ConditionsNotSatisfied);
            }
            // The VRF key is a second, separate key: the card key signs (device authentication,
            // INTERNAL AUTHENTICATE), the VRF key only proves election pseudonyms.
            let key = SoftwareKey::generate(rng);
            let vrf = VrfSecretKey::generate(rng);
            let mut public = key.public_key().uncompressed().to_vec();
            public.extend_from_slice(&vrf.public_key().to_bytes());
            next.card_key = Some(key);
            next.vrf_key = Some(vrf);
            Ok(public)
        }
        card::ins::PUT_DATA => {
            match u16::from_be_bytes([p1, p2]) {
                card::item::PIN => {
                    let pin = std::str::from_utf8(body).map_err(|_| StatusWord::IncorrectData)?;
                    if !valid_digits(pin, 4..=12) {
                        return Err(StatusWord::IncorrectData);
                    }
                    next.pin = Some(Secret {
                        hash: Secret::hash("pin", &next.serial, body),
                        tries_left: PIN_TRIES,
                    });
                }
                card::item::PUK => {
                    let puk = std::str::from_utf8(body).map_err(|_| StatusWord::IncorrectData)?;
                    if !valid_digits(puk, 8..=16) {
                        return Err(StatusWord::IncorrectData);
                    }
                    next.puk = Some(Secret {
                        hash: Secret::hash("puk", &next.serial, body),
                        tries_left: PUK_TRIES,
                    });
                }
                card::item::GOVERNANCE => {
                    next.governance = Some(
                        GovernanceSet::from_inception_value(body)
                            .map_err(|_| StatusWord::IncorrectData)?,
                    );
                }
                card::item::PIN_ELEMENTS => {
                    next.pin_elements = card::pin_elements_from_bytes(body)
                        .map_err(|_| StatusWord::IncorrectData)?;
                }
                _ => return Err(StatusWord::IncorrectP1P2),
            }
            Ok(Vec::new())
        }
        card::ins::PUT_CREDENTIAL => {
            let slot = usize::from(p1);
            if p1 >= CREDENTIAL_SLOTS || p2 != 0 {
                return Err(StatusWord::IncorrectP1P2);
            }
            let Some(public) = next.public_key() else {
                return Err(StatusWord::ConditionsNotSatisfied);
            };
            if body.is_empty() {
                // An empty body clears the slot.
                if let Some(s) = next.credentials.get_mut(slot) {
                    *s = None;
                }
                return Ok(Vec::new());
            }
            if body.len() > MAX_CREDENTIAL_LEN {
                return Err(StatusWord::WrongLength);
            }
            bound_to(body, public, next.vrf_public_key())?;
            if let Some(s) = next.credentials.get_mut(slot) {
                *s = Some(body.to_vec());
            }
            Ok(Vec::new())
        }
        card::ins::LOCK => {
            // A locked card without a PUK could never unblock its PIN.
            if next.card_key.is_none()
                || next.governance.is_none()
                || next.pin.is_none()
                || next.puk.is_none()
            {
                return Err(StatusWord::ConditionsNotSatisfied);
            }
            next.locked = true;
            Ok(Vec::new())
        }
        _ => Err(StatusWord::InsNotSupported),
    }
}
