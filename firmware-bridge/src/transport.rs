//! How APDUs reach a card: the [`CardTransport`] trait and the in-process transport that runs
//! the applet directly (unit tests, the demo).

use civis_wallet_core::applet::{Card, CardState};
use rand_core::OsRng;

use crate::error::Result;

/// Sends one command APDU and returns the card's response APDU (data ‖ SW1 SW2).
pub trait CardTransport {
    /// Exchange one APDU.
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>>;
}

impl<T: CardTransport + ?Sized> CardTransport for &mut T {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        (**self).transmit(command)
    }
}

impl<T: CardTransport + ?Sized> CardTransport for Box<T> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        (**self).transmit(command)
    }
}

/// The applet in this process. State changes are kept in memory (see the virtual card for a
/// card that persists them).
pub struct InProcess {
    card: Card,
}

impl InProcess {
    /// Power on a card with `state`.
    pub fn new(state: CardState) -> Self {
        Self {
            card: Card::new(state),
        }
    }

    /// Wrap an already configured card.
    pub fn from_card(card: Card) -> Self {
        Self { card }
    }

    /// The card's current persistent state.
    pub fn state(&self) -> &CardState {
        self.card.state()
    }

    /// A new tap: RAM is lost, persistent state stays.
    pub fn reset(&mut self) {
        self.card.reset();
    }
}

impl CardTransport for InProcess {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        Ok(self.card.process(command, &mut OsRng).apdu)
    }
}
