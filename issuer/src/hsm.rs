//! Issuer keys held in a PKCS#11 token (an HSM; SoftHSM2 in the tests) behind core's
//! [`Signer`], so minting and chain transactions sign the same way as with a key file.
//!
//! Facts this follows (specs/issuer-api.md § Keys): the token hashes nothing for us
//! (SoftHSM2 has no CKM_ECDSA_SHA256), so the SHA-256 digest is computed here and signed with
//! CKM_ECDSA, which returns r ‖ s; one `Pkcs11` context per module per process (a second
//! `C_Initialize` fails); sessions are `Send` but not `Sync`, so each sits behind a mutex and
//! signing takes the next free one; the private key is generated on the token, sensitive and
//! never extractable.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use civis_core::cose::Signer;
use civis_core::crypto::EcPublicKey;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use sha2::Digest as _;

use crate::error::{Error, Result};

/// DER of the P-256 curve OID, the `CKA_EC_PARAMS` of our keys.
const P256_PARAMS: [u8; 10] = [0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];

/// Sessions per key: two cores, two signers at once.
const SESSIONS: usize = 2;

fn hsm(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Signing(format!("PKCS#11 {what}: {e}"))
}

/// The process's context for a module, initialized once.
fn context(module: &Path) -> Result<Pkcs11> {
    static CONTEXTS: OnceLock<Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let map = CONTEXTS.get_or_init(Mutex::default);
    let mut map = map.lock().map_err(|_| hsm("context", "poisoned"))?;
    if let Some(c) = map.get(module) {
        return Ok(c.clone());
    }
    let ctx = Pkcs11::new(module).map_err(|e| hsm("load module", e))?;
    ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK))
        .map_err(|e| hsm("initialize", e))?;
    map.insert(module.to_owned(), ctx.clone());
    Ok(ctx)
}

fn slot(ctx: &Pkcs11, token: &str) -> Result<Slot> {
    for s in ctx
        .get_slots_with_initialized_token()
        .map_err(|e| hsm("slots", e))?
    {
        let info = ctx.get_token_info(s).map_err(|e| hsm("token info", e))?;
        if info.label().trim() == token {
            return Ok(s);
        }
    }
    Err(Error::Config(format!(
        "no PKCS#11 token labelled {token:?}"
    )))
}

fn login(ctx: &Pkcs11, slot: Slot, pin: &str) -> Result<Session> {
    let session = ctx
        .open_rw_session(slot)
        .map_err(|e| hsm("open session", e))?;
    match session.login(UserType::User, Some(&AuthPin::new(pin.into()))) {
        Ok(()) => Ok(session),
        // Login is per application and token: a second session is already in.
        Err(cryptoki::error::Error::Pkcs11(cryptoki::error::RvError::UserAlreadyLoggedIn, _)) => {
            Ok(session)
        }
        Err(e) => Err(hsm("login", e)),
    }
}

fn public_of(session: &Session, handle: ObjectHandle) -> Result<EcPublicKey> {
    let attrs = session
        .get_attributes(handle, &[AttributeType::EcPoint])
        .map_err(|e| hsm("read public key", e))?;
    let Some(Attribute::EcPoint(v)) = attrs.into_iter().next() else {
        return Err(hsm("read public key", "no EC point"));
    };
    // A DER OCTET STRING around the point (SoftHSM2), or the bare point (other tokens).
    let point = match v.as_slice() {
        [0x04, 0x41, rest @ ..] if rest.len() == 65 => rest,
        bare => bare,
    };
    EcPublicKey::from_sec1(point).map_err(|e| hsm("public key", e))
}

fn find(session: &Session, class: ObjectClass, label: &str) -> Result<Option<ObjectHandle>> {
    let found = session
        .find_objects(&[
            Attribute::Class(class),
            Attribute::Label(label.as_bytes().to_vec()),
        ])
        .map_err(|e| hsm("find key", e))?;
    Ok(found.into_iter().next())
}

/// The label of the agency's key number `n` on the token: `base#n`, `n` being the key's index
/// in the issuer DID's key history (`did:civis:…#key-n`). The lowest-numbered key on the token
/// is the current one, the next the committed next key; a third exists only while a rotation
/// is under way (specs/issuer-api.md § Keys).
pub fn key_label(base: &str, n: u32) -> String {
    format!("{base}#{n}")
}

/// A logged-in session on the token labelled `token`.
fn session(module: &Path, token: &str, pin: &str) -> Result<Session> {
    let ctx = context(module)?;
    login(&ctx, slot(&ctx, token)?, pin)
}

/// Generate a P-256 key pair on the token under `label` (refused if one exists); returns the
/// public key.
pub fn generate(module: &Path, token: &str, pin: &str, label: &str) -> Result<EcPublicKey> {
    let session = session(module, token, pin)?;
    if find(&session, ObjectClass::PRIVATE_KEY, label)?.is_some() {
        return Err(Error::Config(format!(
            "the token already has a key {label:?}"
        )));
    }
    let id = label.as_bytes().to_vec();
    let public = [
        Attribute::Token(true),
        Attribute::Verify(true),
        Attribute::EcParams(P256_PARAMS.to_vec()),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id.clone()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Label(label.as_bytes().to_vec()),
        Attribute::Id(id),
    ];
    let (pubh, _) = session
        .generate_key_pair(&Mechanism::EccKeyPairGen, &public, &private)
        .map_err(|e| hsm("generate key", e))?;
    public_of(&session, pubh)
}

/// Generate an agency's first key pair and its committed next key on the token (`base#1`,
/// `base#2`); returns both public keys.
pub fn generate_first(
    module: &Path,
    token: &str,
    pin: &str,
    base: &str,
) -> Result<(EcPublicKey, EcPublicKey)> {
    if !keys(module, token, pin, base)?.is_empty() {
        return Err(Error::Config(format!(
            "the token already has keys labelled {base:?}#N"
        )));
    }
    let first = generate(module, token, pin, &key_label(base, 1))?;
    let next = generate(module, token, pin, &key_label(base, 2))?;
    Ok((first, next))
}

/// The agency's keys on the token (`base#n`, see [`key_label`]), lowest number first, each
/// with its public key. Only private keys count: a public half left behind by a cut-short
/// [`destroy`] is ignored.
pub fn keys(module: &Path, token: &str, pin: &str, base: &str) -> Result<Vec<(u32, EcPublicKey)>> {
    let session = session(module, token, pin)?;
    let handles = session
        .find_objects(&[Attribute::Class(ObjectClass::PRIVATE_KEY)])
        .map_err(|e| hsm("find keys", e))?;
    let prefix = format!("{base}#");
    let mut out = Vec::new();
    for h in handles {
        let attrs = session
            .get_attributes(h, &[AttributeType::Label])
            .map_err(|e| hsm("read label", e))?;
        let Some(Attribute::Label(label)) = attrs.into_iter().next() else {
            continue;
        };
        let Some(n) = std::str::from_utf8(&label)
            .ok()
            .and_then(|l| l.strip_prefix(&prefix))
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let label = key_label(base, n);
        let pubh = find(&session, ObjectClass::PUBLIC_KEY, &label)?
            .ok_or_else(|| Error::Config(format!("no public key {label:?} on token {token:?}")))?;
        out.push((n, public_of(&session, pubh)?));
    }
    out.sort_by_key(|(n, _)| *n);
    Ok(out)
}

/// Destroy the key pair under `label`: the private half first, so a cut between the two never
/// leaves a private key without its public half.
pub fn destroy(module: &Path, token: &str, pin: &str, label: &str) -> Result<()> {
    let session = session(module, token, pin)?;
    for class in [ObjectClass::PRIVATE_KEY, ObjectClass::PUBLIC_KEY] {
        if let Some(h) = find(&session, class, label)? {
            session
                .destroy_object(h)
                .map_err(|e| hsm("destroy key", e))?;
        }
    }
    Ok(())
}

/// A signing key on a token.
pub struct Pkcs11Key {
    sessions: Vec<Mutex<Session>>,
    key: ObjectHandle,
    public: EcPublicKey,
    next: AtomicUsize,
}

impl std::fmt::Debug for Pkcs11Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pkcs11Key").finish_non_exhaustive()
    }
}

impl Pkcs11Key {
    /// Open the key labelled `label` on the token labelled `token`.
    pub fn open(module: &Path, token: &str, pin: &str, label: &str) -> Result<Self> {
        let ctx = context(module)?;
        let slot = slot(&ctx, token)?;
        let mut sessions = Vec::with_capacity(SESSIONS);
        for _ in 0..SESSIONS {
            sessions.push(login(&ctx, slot, pin)?);
        }
        let first = sessions.first().ok_or_else(|| hsm("session", "none"))?;
        let key = find(first, ObjectClass::PRIVATE_KEY, label)?
            .ok_or_else(|| Error::Config(format!("no private key {label:?} on token {token:?}")))?;
        let pubh = find(first, ObjectClass::PUBLIC_KEY, label)?
            .ok_or_else(|| Error::Config(format!("no public key {label:?} on token {token:?}")))?;
        let public = public_of(first, pubh)?;
        Ok(Self {
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            key,
            public,
            next: AtomicUsize::new(0),
        })
    }
}

impl Signer for Pkcs11Key {
    fn public_key(&self) -> EcPublicKey {
        self.public.clone()
    }

    fn sign(&self, tbs: &[u8]) -> civis_core::Result<Vec<u8>> {
        let digest = sha2::Sha256::digest(tbs);
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.sessions.len().max(1);
        let session = self
            .sessions
            .get(n)
            .ok_or_else(|| civis_core::Error::Signer("no PKCS#11 session".into()))?
            .lock()
            .map_err(|_| civis_core::Error::Signer("PKCS#11 session poisoned".into()))?;
        let sig = session
            .sign(&Mechanism::Ecdsa, self.key, &digest)
            .map_err(|e| civis_core::Error::Signer(format!("PKCS#11 sign: {e}")))?;
        if sig.len() != 64 {
            return Err(civis_core::Error::Signer(format!(
                "PKCS#11 sign: {} bytes, not r ‖ s",
                sig.len()
            )));
        }
        Ok(sig)
    }
}
