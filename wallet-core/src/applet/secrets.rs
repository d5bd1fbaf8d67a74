//! PIN and PUK checks, safe against tearing: the try is spent and committed before the
//! comparison, and given back only after a match.

use super::{CardState, Nvm};
use civis_core::card::{PIN_TRIES, PUK_TRIES};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SecretKind {
    Pin,
    Puk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SecretCheck {
    Ok,
    Wrong,
    Blocked,
    NotSet,
    /// Power was lost while the spent try was written: the command ends without an answer.
    Torn,
}

fn slot(state: &mut CardState, kind: SecretKind) -> Option<&mut super::Secret> {
    match kind {
        SecretKind::Pin => state.pin.as_mut(),
        SecretKind::Puk => state.puk.as_mut(),
    }
}

/// Check a PIN or PUK. A blocked secret is never compared. Otherwise the try is spent and
/// committed to `nvm` *before* the comparison, and given back only on a match (committed with
/// the rest of the command): right and wrong guesses both write first, so an attacker who cuts
/// the power when a write starts learns nothing and saves no try.
pub(super) fn verify_secret(
    next: &mut CardState,
    kind: SecretKind,
    presented: &[u8],
    nvm: &mut dyn Nvm,
) -> SecretCheck {
    let serial = next.serial;
    let (name, max) = match kind {
        SecretKind::Pin => ("pin", PIN_TRIES),
        SecretKind::Puk => ("puk", PUK_TRIES),
    };
    let Some(secret) = slot(next, kind) else {
        return SecretCheck::NotSet;
    };
    if secret.tries_left == 0 {
        return SecretCheck::Blocked;
    }
    secret.tries_left -= 1;
    if nvm.commit(next).is_err() {
        return SecretCheck::Torn;
    }
    let Some(secret) = slot(next, kind) else {
        return SecretCheck::NotSet;
    };
    if secret.matches(name, &serial, presented) {
        secret.tries_left = max;
        SecretCheck::Ok
    } else if secret.tries_left == 0 {
        SecretCheck::Blocked
    } else {
        SecretCheck::Wrong
    }
}

pub(super) fn valid_digits(s: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}
