//! The virtual card: the wallet-core applet behind pcscd's vpcd reader, so every tool that
//! speaks PC/SC or libnfc sees a real contactless card.
//!
//! vpcd (from vsmartcard) listens on TCP (127.0.0.1:35963 for its first slot); the virtual card
//! connects to it. Every message either way is a 2-byte big-endian length and a payload. A
//! 1-byte payload from vpcd is a control code (0 power off, 1 power on, 2 reset: no answer;
//! 4 get ATR: answer the ATR); anything longer is a command APDU, answered with the response
//! APDU.
//!
//! The card's persistent state lives in a file, written atomically (temporary file, fsync,
//! rename, fsync of the directory) **before** the answer is sent, so a kill at any moment
//! leaves the old state or the new one.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use civis_core::card::TransportKey;
use civis_wallet_core::applet::{Card, CardState, Nvm, Torn};
use rand_core::{OsRng, RngCore};

use crate::error::{Error, Result};

/// The NFC limits the virtual card advertises: extended length, but every APDU fits a vpcd
/// frame (16-bit length).
pub const VPCD_LIMITS: civis_core::ndef::NfcLimits = civis_core::ndef::NfcLimits {
    max_command: 32_767,
    max_response: 32_768,
};

/// Where vpcd listens for its first virtual slot.
pub const DEFAULT_VPCD: &str = "127.0.0.1:35963";

/// The ATR the virtual card announces: a PC/SC part 3 contactless ISO 14443-4 card with no
/// historical bytes (`3B 80 80 01 01`), the form libnfc's PC/SC driver recognizes.
pub const ATR: &[u8] = &[0x3B, 0x80, 0x80, 0x01, 0x01];

/// The development batch transport key a blank virtual card gets unless told otherwise
/// (SHA-256 of "civis development batch key"): like the well-known default keys of
/// development smart cards, never for real cards.
pub fn development_transport_key() -> TransportKey {
    use sha2::Digest as _;
    TransportKey(sha2::Sha256::digest(b"civis development batch key").into())
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Load the card's state from `path`, or make a blank card (random serial, `transport_key`)
/// if the file does not exist yet. A file that exists but does not decode is an error: a card
/// never silently forgets its memory.
pub fn load_or_blank(path: &Path, transport_key: TransportKey) -> Result<(CardState, bool)> {
    match fs::read(path) {
        Ok(bytes) => Ok((CardState::decode(&bytes)?, false)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut serial = [0u8; 16];
            OsRng.fill_bytes(&mut serial);
            Ok((CardState::blank(serial, transport_key), true))
        }
        Err(e) => Err(io(format!("cannot read {}", path.display()))(e)),
    }
}

/// Write the state atomically: a temporary file beside it (mode 0600), fsync, rename over the
/// old file, fsync of the directory.
pub fn save(path: &Path, state: &CardState) -> Result<()> {
    save_with(path, state, crash_point())
}

/// Where a crash test wants the host to die (`CIVIS_CARD_CRASH_AT`): `mid-write` (half the new
/// state in the temporary file), `before-rename` (new state complete, not yet in place) or
/// `before-answer` (state stored, answer not sent). Read once per process.
fn crash_point() -> Option<&'static str> {
    static POINT: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    POINT
        .get_or_init(|| std::env::var("CIVIS_CARD_CRASH_AT").ok())
        .as_deref()
}

fn crash_if(point: Option<&str>, here: &str) {
    if point == Some(here) {
        // As abrupt as SIGKILL or a power cut: no unwinding, no buffered writes.
        std::process::abort();
    }
}

fn save_with(path: &Path, state: &CardState, crash: Option<&str>) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = temp_path(path);
    // A leftover from a killed write: remove it so the new file is created with mode 0600.
    let _ = fs::remove_file(&tmp);
    {
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts
            .open(&tmp)
            .map_err(io(format!("cannot write {}", tmp.display())))?;
        let bytes = state.encode();
        if crash == Some("mid-write") {
            let half = bytes.get(..bytes.len() / 2).unwrap_or_default();
            let _ = f.write_all(half).and_then(|()| f.sync_all());
            crash_if(crash, "mid-write");
        }
        f.write_all(&bytes)
            .and_then(|()| f.sync_all())
            .map_err(io(format!("cannot write {}", tmp.display())))?;
    }
    crash_if(crash, "before-rename");
    fs::rename(&tmp, path).map_err(io(format!("cannot replace {}", path.display())))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("cannot sync {}", dir.display())))
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// What the card host does with one vpcd message.
enum Message {
    Control(u8),
    Apdu(Vec<u8>),
}

fn read_message(stream: &mut TcpStream) -> std::io::Result<Message> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len)?;
    let len = usize::from(u16::from_be_bytes(len));
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload)?;
    Ok(match payload.as_slice() {
        [code] => Message::Control(*code),
        _ => Message::Apdu(payload),
    })
}

fn write_message(stream: &mut TcpStream, payload: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(payload.len())
        .map_err(|_| std::io::Error::other("response longer than 65535 bytes"))?;
    let mut frame = Vec::with_capacity(payload.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    stream.write_all(&frame)?;
    // Delayed ACKs would add ~40 ms per APDU; re-arm quick ACK after every write.
    let _ = socket2::SockRef::from(&*stream).set_tcp_quickack(true);
    Ok(())
}

/// The reader-level pseudo-APDUs of PC/SC part 3 (class `FF`), which a real contactless reader
/// answers itself and vpcd passes to the card: GET DATA of the UID (P1 0) is answered with this
/// power-on's random UID; other GET DATA (ATQA, SAK, ATS) is "not supported".
fn reader_command(apdu: &[u8], uid: &[u8; 4]) -> Option<Vec<u8>> {
    match apdu {
        [0xFF, 0xCA, 0x00, 0x00, ..] => {
            let mut answer = uid.to_vec();
            answer.extend_from_slice(&[0x90, 0x00]);
            Some(answer)
        }
        [0xFF, ..] => Some(vec![0x6A, 0x81]),
        _ => None,
    }
}

/// Options of [`serve`].
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The state file.
    pub state: PathBuf,
    /// vpcd's address.
    pub vpcd: SocketAddr,
    /// Transport key for a blank card.
    pub transport_key: TransportKey,
    /// Reconnect when vpcd goes away (pcscd restarted) instead of returning.
    pub reconnect: bool,
}

/// Run the virtual card until vpcd closes the connection (or forever, reconnecting, if
/// `reconnect`). `on_event` hears what happens (for the CLI's log lines).
pub fn serve(options: &ServeOptions, on_event: &mut dyn FnMut(&str)) -> Result<()> {
    let (state, blank) = load_or_blank(&options.state, options.transport_key.clone())?;
    if blank {
        save(&options.state, &state)?;
        on_event(&format!(
            "created a blank card in {} (serial {})",
            options.state.display(),
            hex(&state.serial)
        ));
    }
    // vpcd frames carry at most 65535 bytes, so neither a command nor a response may reach
    // the 65536 extended length allows.
    let mut card = Card::new(state).with_limits(VPCD_LIMITS);
    let mut delay = Duration::from_millis(100);
    loop {
        let mut stream = match TcpStream::connect(options.vpcd) {
            Ok(s) => s,
            Err(e) if options.reconnect => {
                on_event(&format!(
                    "vpcd at {} not reachable ({e}); retrying",
                    options.vpcd
                ));
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(2));
                continue;
            }
            Err(e) => return Err(io(format!("cannot reach vpcd at {}", options.vpcd))(e)),
        };
        delay = Duration::from_millis(100);
        stream
            .set_nodelay(true)
            .map_err(io("cannot set TCP_NODELAY"))?;
        on_event(&format!("inserted into vpcd at {}", options.vpcd));
        card.reset();
        match session(&mut stream, &mut card, &options.state) {
            Ok(()) => on_event("vpcd closed the connection"),
            Err(Error::Io { context, source }) if context == "vpcd link" => {
                on_event(&format!("vpcd link lost: {source}"));
            }
            Err(e) => return Err(e),
        }
        if !options.reconnect {
            return Ok(());
        }
    }
}

/// A random single-size UID (first byte `08`: "random ID", as privacy-preserving cards use),
/// new at every power-on so the UID does not track the resident.
fn random_uid() -> [u8; 4] {
    let mut uid = [0u8; 4];
    OsRng.fill_bytes(&mut uid);
    if let Some(b) = uid.first_mut() {
        *b = 0x08;
    }
    uid
}

fn session(stream: &mut TcpStream, card: &mut Card, state_path: &Path) -> Result<()> {
    let mut uid = random_uid();
    loop {
        let message = match read_message(stream) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(io("vpcd link")(e)),
        };
        match message {
            // Power off, power on and reset: RAM is lost; vpcd expects no answer.
            Message::Control(0..=2) => {
                card.reset();
                uid = random_uid();
            }
            Message::Control(4) => write_message(stream, ATR).map_err(io("vpcd link"))?,
            Message::Control(_) => {}
            Message::Apdu(apdu) => {
                let answer = match reader_command(&apdu, &uid) {
                    Some(a) => a,
                    None => {
                        let mut file = StateFile {
                            path: state_path,
                            writes: 0,
                            error: None,
                        };
                        match card.process(&apdu, &mut OsRng, &mut file) {
                            Ok(answer) => {
                                if file.writes > 0 {
                                    crash_if(crash_point(), "before-answer");
                                }
                                answer
                            }
                            // The state file could not be written: stop rather than answer
                            // from a state that is not on disk.
                            Err(_) => {
                                return Err(file.error.unwrap_or_else(|| {
                                    io("state file")(std::io::Error::other("write failed"))
                                }));
                            }
                        }
                    }
                };
                // A reader that ignored the advertised limits could ask for more than a vpcd
                // frame carries: refuse the command rather than drop the link.
                let answer = if answer.len() > usize::from(u16::MAX) {
                    vec![0x67, 0x00]
                } else {
                    answer
                };
                write_message(stream, &answer).map_err(io("vpcd link"))?;
            }
        }
    }
}

/// The card's persistent memory: the state file, replaced atomically on every commit.
struct StateFile<'a> {
    path: &'a Path,
    writes: usize,
    error: Option<Error>,
}

impl Nvm for StateFile<'_> {
    fn commit(&mut self, state: &CardState) -> std::result::Result<(), Torn> {
        self.writes += 1;
        save(self.path, state).map_err(|e| {
            self.error = Some(e);
            Torn
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use std::net::TcpListener;

    /// A stand-in for vpcd: the same framing, driven by the test.
    #[test]
    fn speaks_the_vpcd_framing_and_persists_before_answering() {
        let dir = std::env::temp_dir().join(format!("civis-vicc-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let state = dir.join("card.state");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let options = ServeOptions {
            state: state.clone(),
            vpcd: listener.local_addr().unwrap(),
            transport_key: development_transport_key(),
            reconnect: false,
        };
        let server = std::thread::spawn(move || serve(&options, &mut |_| {}));
        let (mut vpcd, _) = listener.accept().unwrap();
        let send = |s: &mut TcpStream, p: &[u8]| write_message(s, p).unwrap();
        let recv = |s: &mut TcpStream| match read_message(s).unwrap() {
            Message::Apdu(a) => a,
            Message::Control(c) => vec![c],
        };
        send(&mut vpcd, &[1]);
        send(&mut vpcd, &[4]);
        assert_eq!(recv(&mut vpcd), ATR);
        send(&mut vpcd, &[0xFF, 0xCA, 0, 0, 0]);
        let uid = recv(&mut vpcd);
        assert_eq!((uid.len(), &uid[4..]), (6, &[0x90, 0x00][..]));
        // SELECT the Civis application, then a MAC'd SET PIN: answered only once stored.
        let mut select = vec![
            0x00,
            0xA4,
            0x04,
            0x00,
            civis_core::card::AID_CIVIS.len() as u8,
        ];
        select.extend_from_slice(civis_core::card::AID_CIVIS);
        send(&mut vpcd, &select);
        assert_eq!(recv(&mut vpcd), [0x90, 0x00]);
        let before = CardState::decode(&fs::read(&state).unwrap()).unwrap();
        let mac =
            development_transport_key().mac(&before.serial, 0, [0x84, 0xDA, 0x01, 0x01], b"1234");
        let mut cmd = vec![0x84, 0xDA, 0x01, 0x01, 4 + 16];
        cmd.extend_from_slice(b"1234");
        cmd.extend_from_slice(&mac);
        send(&mut vpcd, &cmd);
        assert_eq!(recv(&mut vpcd), [0x90, 0x00]);
        let after = CardState::decode(&fs::read(&state).unwrap()).unwrap();
        assert_eq!(after.perso_counter, 1);
        assert!(after.pin.is_some());
        assert!(!temp_path(&state).exists());
        drop(vpcd);
        server.join().unwrap().unwrap();
        // A corrupt state file is refused, not replaced by a blank card.
        fs::write(&state, b"\xA1\x01").unwrap();
        assert!(load_or_blank(&state, development_transport_key()).is_err());
        let _ = fs::remove_dir_all(&dir);
    }
}
