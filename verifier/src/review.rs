//! "Read my card's log" on the kiosk screen: the holder enters the PIN on the screen, taps the
//! card, and sees who read it (card-applet.md §5.5, kiosk-screen.md §5). Sans-IO: the kiosk
//! holds one review at a time, with the clock as a parameter; the PIN lives only until the
//! next tap or [`PIN_WAIT_SECS`], and the entries only while on screen.

use civis_core::card::ReadLogEntry;
use zeroize::Zeroizing;

/// How long an entered PIN waits for the card.
pub const PIN_WAIT_SECS: i64 = 60;
/// How long the log stays on screen.
pub const SHOW_SECS: i64 = 120;
/// How long a refusal stays on screen.
pub const REFUSED_SECS: i64 = 20;

/// Why the log was not shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewRefused {
    /// The card did not verify the PIN: it showed nothing.
    WrongPin,
    /// The card's PIN is blocked: it showed nothing; the PUK unblocks it at a counter.
    PinBlocked,
    /// The card could not be read (left the field, not a Civis card).
    CardError,
    /// The kiosk cannot read logs now (no synced chain, or its accreditation is not on it).
    Unavailable,
}

impl ReviewRefused {
    /// Stable code (the page's `data-reason`).
    pub fn code(self) -> &'static str {
        match self {
            Self::WrongPin => "wrong_pin",
            Self::PinBlocked => "pin_blocked",
            Self::CardError => "card_error",
            Self::Unavailable => "unavailable",
        }
    }
}

/// Where a review is.
#[derive(Debug)]
pub enum Phase {
    /// The PIN is entered; waiting for the card.
    Waiting(Zeroizing<String>),
    /// The card is being read.
    Reading,
    /// The card's log, newest first.
    Shown(Vec<ReadLogEntry>),
    /// Nothing to show, and why.
    Refused(ReviewRefused),
}

/// The review on screen, since `at` (Unix seconds).
#[derive(Debug)]
pub struct Review {
    /// Where it is.
    pub phase: Phase,
    /// When it entered that phase.
    pub at: i64,
}

/// What the screen shows of a review (never the PIN).
#[derive(Debug, Clone, PartialEq)]
pub enum Shown {
    /// Waiting for the card.
    Waiting,
    /// Reading it.
    Reading,
    /// The log, newest first.
    Log(Vec<ReadLogEntry>),
    /// Not shown, and why.
    Refused(ReviewRefused),
}

/// Why a PIN entry was refused before any card.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PinFormat {
    /// Not 4–12 ASCII digits (what the card accepts as a PIN).
    #[error("a PIN is 4 to 12 digits")]
    NotDigits,
}

impl Review {
    /// A review waiting for the card, for a PIN of 4–12 ASCII digits.
    pub fn start(pin: &str, now: i64) -> Result<Self, PinFormat> {
        if !(4..=12).contains(&pin.len()) || !pin.bytes().all(|b| b.is_ascii_digit()) {
            return Err(PinFormat::NotDigits);
        }
        Ok(Self {
            phase: Phase::Waiting(Zeroizing::new(pin.to_owned())),
            at: now,
        })
    }

    /// What the screen shows.
    pub fn shown(&self) -> Shown {
        match &self.phase {
            Phase::Waiting(_) => Shown::Waiting,
            Phase::Reading => Shown::Reading,
            Phase::Shown(entries) => Shown::Log(entries.clone()),
            Phase::Refused(why) => Shown::Refused(*why),
        }
    }

    /// Whether the review is over at `now` (and is to be dropped, PIN or entries with it).
    pub fn expired(&self, now: i64) -> bool {
        let limit = match self.phase {
            Phase::Waiting(_) => PIN_WAIT_SECS,
            // A read that never reports back (a thread stuck in a driver) frees the screen.
            Phase::Reading => PIN_WAIT_SECS,
            Phase::Shown(_) => SHOW_SECS,
            Phase::Refused(_) => REFUSED_SECS,
        };
        now.saturating_sub(self.at) >= limit
    }

    /// The PIN, if the review waits for a card: the review moves on to reading.
    pub fn take_pin(&mut self, now: i64) -> Option<Zeroizing<String>> {
        if !matches!(self.phase, Phase::Waiting(_)) || self.expired(now) {
            return None;
        }
        match std::mem::replace(&mut self.phase, Phase::Reading) {
            Phase::Waiting(pin) => {
                self.at = now;
                Some(pin)
            }
            other => {
                self.phase = other;
                None
            }
        }
    }

    /// The card's answer.
    pub fn finish(&mut self, result: Result<Vec<ReadLogEntry>, ReviewRefused>, now: i64) {
        self.phase = match result {
            Ok(entries) => Phase::Shown(entries),
            Err(why) => Phase::Refused(why),
        };
        self.at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_waits_for_one_card_and_not_forever() {
        for bad in ["", "123", "1234567890123", "12a4", "١٢٣٤", "1234\n"] {
            assert_eq!(Review::start(bad, 0).unwrap_err(), PinFormat::NotDigits);
        }
        let mut r = Review::start("246810", 100).unwrap();
        assert!(r.take_pin(100 + PIN_WAIT_SECS).is_none(), "expired");
        let mut r2 = Review::start("246810", 100).unwrap();
        assert_eq!(r2.take_pin(101).unwrap().as_str(), "246810");
        assert!(r2.take_pin(102).is_none(), "the PIN goes to one card only");
        assert!(matches!(r2.phase, Phase::Reading));
        r2.finish(Err(ReviewRefused::WrongPin), 103);
        assert!(!r2.expired(103 + REFUSED_SECS - 1) && r2.expired(103 + REFUSED_SECS));
        r.finish(Ok(Vec::new()), 200);
        assert!(!r.expired(200 + SHOW_SECS - 1) && r.expired(200 + SHOW_SECS));
    }
}
