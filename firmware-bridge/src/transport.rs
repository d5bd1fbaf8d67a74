//! How APDUs reach a card: the [`CardTransport`] trait and the in-process transport that runs
//! the applet directly (unit tests, the demo; feature `card`).

#[cfg(feature = "card")]
use civis_wallet_core::applet::{Card, CardState, MemoryNvm};
#[cfg(feature = "card")]
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

/// The applet in this process, its persistent memory in RAM (see the virtual card for a card
/// that keeps it in a file).
#[cfg(feature = "card")]
pub struct InProcess {
    card: Card,
    memory: MemoryNvm,
}

#[cfg(feature = "card")]
impl InProcess {
    /// Power on a card with `state`.
    pub fn new(state: CardState) -> Self {
        Self {
            card: Card::new(state.clone()),
            memory: MemoryNvm::new(state),
        }
    }

    /// The card's persistent state (what its memory holds).
    pub fn state(&self) -> &CardState {
        self.memory.state()
    }

    /// The card's memory: tests cut the power at a chosen write through it.
    pub fn memory(&mut self) -> &mut MemoryNvm {
        &mut self.memory
    }

    /// A new tap: RAM is lost, persistent state stays (a card that lost power during a write
    /// comes back with what its memory holds).
    pub fn reset(&mut self) {
        self.card = Card::new(self.memory.state().clone());
    }
}

#[cfg(feature = "card")]
impl CardTransport for InProcess {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        self.card
            .process(command, &mut OsRng, &mut self.memory)
            .map_err(|_| crate::error::Error::Link("the card lost power during a write".into()))
    }
}

/// A model of a real contactless tap around another transport: the delays a phone-size antenna,
/// a 424 kbit/s ISO 14443 link and a secure element's ECDSA would add, injected on the real code
/// path (for the benchmarks; the applet's own work still runs).
pub struct ModeledLink<T> {
    inner: T,
    /// Time to bring up the field, anticollision and RATS, paid before the first APDU.
    pub setup: std::time::Duration,
    /// Link speed in bits per second.
    pub bits_per_second: u64,
    /// Fixed cost per APDU exchange (frame delay and waiting times).
    pub per_exchange: std::time::Duration,
    /// What the card's ECDSA signature costs (added to commands that make the card sign).
    pub sign: std::time::Duration,
    set_up: bool,
}

impl<T: CardTransport> ModeledLink<T> {
    /// Wrap `inner` with the given link setup and signature times, at 424 kbit/s with 1 ms per
    /// exchange.
    pub fn new(inner: T, setup: std::time::Duration, sign: std::time::Duration) -> Self {
        Self {
            inner,
            setup,
            bits_per_second: 424_000,
            per_exchange: std::time::Duration::from_millis(1),
            sign,
            set_up: false,
        }
    }
}

/// Commands after which the card signs: the last ENVELOPE of a message (the DeviceResponse is
/// signed then) and INTERNAL AUTHENTICATE — not the ENVELOPE that ends the session
/// (SessionData `{"status": 20}`), which the card answers without signing.
fn makes_the_card_sign(command: &[u8]) -> bool {
    const TERMINATION: [u8; 9] = [0xA1, 0x66, b's', b't', b'a', b't', b'u', b's', 0x14];
    match command {
        [0x00, 0xC3, ..] => !command.windows(TERMINATION.len()).any(|w| w == TERMINATION),
        [0x00, 0x88, ..] => true,
        _ => false,
    }
}

impl<T: CardTransport> CardTransport for ModeledLink<T> {
    fn transmit(&mut self, command: &[u8]) -> Result<Vec<u8>> {
        let mut delay = self.per_exchange;
        if !self.set_up {
            self.set_up = true;
            delay += self.setup;
        }
        let answer = self.inner.transmit(command)?;
        // Both directions, 10 bits per byte on the air (start, 8 data, parity ≈ ISO 14443 framing).
        let bits = (command.len() + answer.len()) as u64 * 10;
        delay += std::time::Duration::from_micros(bits * 1_000_000 / self.bits_per_second.max(1));
        if makes_the_card_sign(command) {
            delay += self.sign;
        }
        std::thread::sleep(delay);
        Ok(answer)
    }
}
