//! Registry transactions: a CBOR operation signed as a COSE_Sign1 by a `did:civis` key.
//!
//! `SignedTx = COSE_Sign1(protected {alg: ES256, kid: DID URL}, payload = Tx)` with the external
//! AAD of [`Domain::RegistryTransaction`]. `Tx = {"chain": tstr, "seq": uint, "op": Op}`: the chain
//! id stops cross-chain replay, the per-DID sequence number stops replay within the chain. The
//! operations and who may perform them are in `specs/chain-transactions.md`; the rules themselves
//! are in [`super::state`].

use ciborium::Value;
use coset::{CoseSign1, HeaderBuilder};

use crate::cbor::{self, CborForm, Limits, access, text, text_map};
use crate::cose::{self, Domain, Signer};
use crate::crypto::EcPublicKey;
use crate::did::{Did, DidUrl, KeyCommitment};
use crate::error::{Error, Result};
use crate::status::StatusDelta;

/// Largest signed transaction accepted (a status delta of ~100k changes fits).
pub const MAX_TX_LEN: usize = 512 * 1024;

pub use crate::kiosk::ElementGrants;
use crate::kiosk::{grants_from_value, grants_value};

/// A registry operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Create a DID from its inception key and the commitment to its next key.
    CreateDid {
        /// Inception key.
        key: EcPublicKey,
        /// Commitment to the next key.
        next: KeyCommitment,
    },
    /// Replace the DID's key with the committed one, committing to another.
    RotateKey {
        /// The new key; must match the current commitment.
        key: EcPublicKey,
        /// Commitment to the key after it.
        next: KeyCommitment,
    },
    /// Deactivate the signer's DID for good.
    Deactivate,
    /// Governance: accredit an issuer for docTypes until a time.
    AccreditIssuer {
        /// The issuer.
        issuer: Did,
        /// docTypes it may issue.
        doc_types: Vec<String>,
        /// End of the accreditation (Unix seconds).
        until: i64,
    },
    /// Governance: withdraw an issuer's accreditation.
    RevokeIssuer {
        /// The issuer.
        issuer: Did,
    },
    /// Governance: accredit a kiosk to read elements for a purpose.
    AccreditKiosk {
        /// The kiosk's DID.
        kiosk: Did,
        /// Elements it may read.
        grants: ElementGrants,
        /// Why it reads them.
        purpose: String,
        /// Start (Unix seconds).
        not_before: i64,
        /// End (Unix seconds).
        not_after: i64,
        /// The same accreditation as a governance-signed statement for cards
        /// ([`crate::kiosk::KioskAccreditation`], COSE_Sign1 bytes), signed by the transaction's
        /// signer; the kiosk puts it in ReaderAuth.
        statement: Vec<u8>,
    },
    /// An accredited issuer creates a status list of `size` entries.
    CreateStatusList {
        /// Issuer-local list name; the list's URI is `<issuer DID>/status/<list>`.
        list: String,
        /// Bits per entry.
        bits: u8,
        /// Number of entries.
        size: u64,
    },
    /// The list's issuer changes entries.
    UpdateStatus {
        /// Issuer-local list name.
        list: String,
        /// The changes.
        delta: StatusDelta,
    },
    /// Governance quorum: replace the validator set from the next epoch.
    SetValidators {
        /// The new validators' keys.
        validators: Vec<EcPublicKey>,
        /// Approvals by other governance members (COSE_Sign1 over this op, encoded).
        approvals: Vec<Vec<u8>>,
    },
    /// Governance: register an election.
    RegisterElection {
        /// Election id.
        id: String,
        /// Elements a voter must prove, with the required value (e.g. `age_over_18` = true).
        eligibility: Vec<(String, Value)>,
        /// Opening time (Unix seconds).
        opens: i64,
        /// Closing time (Unix seconds).
        closes: i64,
        /// What a second authentication of one voter means (specs/evote.md).
        reauth: crate::evote::Reauth,
    },
}

fn key_value(k: &EcPublicKey) -> Value {
    Value::Bytes(k.compressed())
}

fn key_of(what: &'static str, v: &Value) -> Result<EcPublicKey> {
    let b = access::bytes(what, v)?;
    if b.len() != 33 {
        return Err(Error::malformed(
            what,
            "key must be 33-byte compressed SEC1",
        ));
    }
    EcPublicKey::from_sec1(b)
}

fn commitment_of(what: &'static str, v: &Value) -> Result<KeyCommitment> {
    let b: [u8; 32] = access::bytes(what, v)?
        .try_into()
        .map_err(|_| Error::malformed(what, "commitment must be 32 bytes"))?;
    Ok(KeyCommitment(b))
}

fn int_of(what: &'static str, v: &Value) -> Result<i64> {
    v.as_integer()
        .and_then(|i| i64::try_from(i).ok())
        .ok_or_else(|| Error::malformed(what, "expected an integer"))
}

fn did_of(what: &'static str, v: &Value) -> Result<Did> {
    Did::parse(access::text(what, v)?)
}

fn texts(what: &'static str, v: &Value) -> Result<Vec<String>> {
    access::array(what, v)?
        .iter()
        .map(|t| access::text(what, t).map(str::to_owned))
        .collect()
}

impl Op {
    /// The operation's name on the wire.
    pub fn name(&self) -> &'static str {
        match self {
            Self::CreateDid { .. } => "create-did",
            Self::RotateKey { .. } => "rotate-key",
            Self::Deactivate => "deactivate",
            Self::AccreditIssuer { .. } => "accredit-issuer",
            Self::RevokeIssuer { .. } => "revoke-issuer",
            Self::AccreditKiosk { .. } => "accredit-kiosk",
            Self::CreateStatusList { .. } => "create-status-list",
            Self::UpdateStatus { .. } => "update-status",
            Self::SetValidators { .. } => "set-validators",
            Self::RegisterElection { .. } => "register-election",
        }
    }

    /// The CBOR value `{name: arguments}`.
    pub fn to_value(&self) -> Value {
        let args = match self {
            Self::CreateDid { key, next } | Self::RotateKey { key, next } => text_map(vec![
                ("key", key_value(key)),
                ("next", Value::Bytes(next.0.to_vec())),
            ]),
            Self::Deactivate => Value::Map(vec![]),
            Self::AccreditIssuer {
                issuer,
                doc_types,
                until,
            } => text_map(vec![
                ("issuer", text(issuer.as_str())),
                (
                    "doc_types",
                    Value::Array(doc_types.iter().map(|d| text(d)).collect()),
                ),
                ("until", Value::Integer((*until).into())),
            ]),
            Self::RevokeIssuer { issuer } => text_map(vec![("issuer", text(issuer.as_str()))]),
            Self::AccreditKiosk {
                kiosk,
                grants,
                purpose,
                not_before,
                not_after,
                statement,
            } => text_map(vec![
                ("kiosk", text(kiosk.as_str())),
                ("grants", grants_value(grants)),
                ("purpose", text(purpose)),
                ("not_before", Value::Integer((*not_before).into())),
                ("not_after", Value::Integer((*not_after).into())),
                ("statement", Value::Bytes(statement.clone())),
            ]),
            Self::CreateStatusList { list, bits, size } => text_map(vec![
                ("list", text(list)),
                ("bits", Value::Integer((*bits).into())),
                ("size", Value::Integer((*size).into())),
            ]),
            Self::UpdateStatus { list, delta } => {
                text_map(vec![("list", text(list)), ("delta", delta.to_value())])
            }
            Self::SetValidators {
                validators,
                approvals,
            } => text_map(vec![
                (
                    "validators",
                    Value::Array(validators.iter().map(key_value).collect()),
                ),
                (
                    "approvals",
                    Value::Array(approvals.iter().cloned().map(Value::Bytes).collect()),
                ),
            ]),
            Self::RegisterElection {
                id,
                eligibility,
                opens,
                closes,
                reauth,
            } => {
                let mut m = vec![
                    ("id", text(id)),
                    ("eligibility", eligibility_value(eligibility)),
                    ("opens", Value::Integer((*opens).into())),
                    ("closes", Value::Integer((*closes).into())),
                ];
                // The default is left out, so one operation has one encoding.
                if *reauth != crate::evote::Reauth::Refuse {
                    m.push(("reauth", text(reauth.name())));
                }
                text_map(m)
            }
        };
        text_map(vec![(self.name(), args)])
    }

    /// Decode `{name: arguments}`.
    pub fn from_value(v: &Value) -> Result<Self> {
        const W: &str = "registry operation";
        let m = access::map(W, v)?;
        let [(name, args)] = m else {
            return Err(Error::malformed(W, "exactly one operation"));
        };
        let name = access::text(W, name)?;
        let a = access::map(W, args)?;
        let op = match name {
            "create-did" | "rotate-key" => {
                access::only_keys(W, a, &["key", "next"])?;
                let key = key_of(W, access::req(W, a, "key")?)?;
                let next = commitment_of(W, access::req(W, a, "next")?)?;
                if name == "create-did" {
                    Self::CreateDid { key, next }
                } else {
                    Self::RotateKey { key, next }
                }
            }
            "deactivate" => {
                access::only_keys(W, a, &[])?;
                Self::Deactivate
            }
            "accredit-issuer" => {
                access::only_keys(W, a, &["issuer", "doc_types", "until"])?;
                Self::AccreditIssuer {
                    issuer: did_of(W, access::req(W, a, "issuer")?)?,
                    doc_types: texts(W, access::req(W, a, "doc_types")?)?,
                    until: int_of(W, access::req(W, a, "until")?)?,
                }
            }
            "revoke-issuer" => {
                access::only_keys(W, a, &["issuer"])?;
                Self::RevokeIssuer {
                    issuer: did_of(W, access::req(W, a, "issuer")?)?,
                }
            }
            "accredit-kiosk" => {
                access::only_keys(
                    W,
                    a,
                    &[
                        "kiosk",
                        "grants",
                        "purpose",
                        "not_before",
                        "not_after",
                        "statement",
                    ],
                )?;
                Self::AccreditKiosk {
                    kiosk: did_of(W, access::req(W, a, "kiosk")?)?,
                    grants: grants_from_value(access::req(W, a, "grants")?)?,
                    purpose: access::text(W, access::req(W, a, "purpose")?)?.to_owned(),
                    not_before: int_of(W, access::req(W, a, "not_before")?)?,
                    not_after: int_of(W, access::req(W, a, "not_after")?)?,
                    statement: access::bytes(W, access::req(W, a, "statement")?)?.to_vec(),
                }
            }
            "create-status-list" => {
                access::only_keys(W, a, &["list", "bits", "size"])?;
                Self::CreateStatusList {
                    list: access::text(W, access::req(W, a, "list")?)?.to_owned(),
                    bits: u8::try_from(access::uint(W, access::req(W, a, "bits")?)?)
                        .map_err(|_| Error::malformed(W, "bits"))?,
                    size: access::uint(W, access::req(W, a, "size")?)?,
                }
            }
            "update-status" => {
                access::only_keys(W, a, &["list", "delta"])?;
                Self::UpdateStatus {
                    list: access::text(W, access::req(W, a, "list")?)?.to_owned(),
                    delta: StatusDelta::from_value(access::req(W, a, "delta")?)?,
                }
            }
            "set-validators" => {
                access::only_keys(W, a, &["validators", "approvals"])?;
                Self::SetValidators {
                    validators: access::array(W, access::req(W, a, "validators")?)?
                        .iter()
                        .map(|k| key_of(W, k))
                        .collect::<Result<_>>()?,
                    approvals: access::array(W, access::req(W, a, "approvals")?)?
                        .iter()
                        .map(|b| access::bytes(W, b).map(<[u8]>::to_vec))
                        .collect::<Result<_>>()?,
                }
            }
            "register-election" => {
                access::only_keys(W, a, &["id", "eligibility", "opens", "closes", "reauth"])?;
                Self::RegisterElection {
                    id: access::text(W, access::req(W, a, "id")?)?.to_owned(),
                    eligibility: access::map(W, access::req(W, a, "eligibility")?)?
                        .iter()
                        .map(|(k, v)| Ok((access::text(W, k)?.to_owned(), v.clone())))
                        .collect::<Result<_>>()?,
                    opens: int_of(W, access::req(W, a, "opens")?)?,
                    closes: int_of(W, access::req(W, a, "closes")?)?,
                    // Absent means refuse, the default, which is never written.
                    reauth: match access::get(W, a, "reauth")? {
                        None => crate::evote::Reauth::Refuse,
                        Some(r) if access::text(W, r)? == "last-counts" => {
                            crate::evote::Reauth::LastCounts
                        }
                        Some(_) => {
                            return Err(Error::invalid(W, "reauth is \"last-counts\" or left out"));
                        }
                    },
                }
            }
            other => return Err(Error::Unsupported(format!("registry operation {other:?}"))),
        };
        Ok(op)
    }

    /// The bytes governance approvals sign: chain, the epoch the approval is for, and the
    /// operation without its approvals (so an old approval cannot be replayed in a later epoch).
    pub fn approval_payload(&self, chain: &str, epoch: u64) -> Vec<u8> {
        let bare = match self {
            Self::SetValidators { validators, .. } => Self::SetValidators {
                validators: validators.clone(),
                approvals: Vec::new(),
            },
            other => other.clone(),
        };
        cbor::encode(&text_map(vec![
            ("chain", text(chain)),
            ("epoch", Value::Integer(epoch.into())),
            ("op", bare.to_value()),
        ]))
    }
}

/// The CBOR form of an election's eligibility rule: `{element: required value}`.
pub(crate) fn eligibility_value(rule: &[(String, Value)]) -> Value {
    Value::Map(rule.iter().map(|(e, v)| (text(e), v.clone())).collect())
}

/// The signed content of a transaction.
#[derive(Debug, Clone, PartialEq)]
pub struct Tx {
    /// Chain id (from genesis).
    pub chain: String,
    /// The signer DID's sequence number (0 for create-did).
    pub seq: u64,
    /// The operation.
    pub op: Op,
}

impl CborForm for Tx {
    const WHAT: &'static str = "transaction";
    const MAX_LEN: usize = MAX_TX_LEN;

    fn from_value(v: &Value) -> Result<Self> {
        const W: &str = "transaction";
        let m = access::map(W, v)?;
        access::only_keys(W, m, &["chain", "seq", "op"])?;
        Ok(Self {
            chain: access::text(W, access::req(W, m, "chain")?)?.to_owned(),
            seq: access::uint(W, access::req(W, m, "seq")?)?,
            op: Op::from_value(access::req(W, m, "op")?)?,
        })
    }

    fn to_value(&self) -> Value {
        text_map(vec![
            ("chain", text(&self.chain)),
            ("seq", Value::Integer(self.seq.into())),
            ("op", self.op.to_value()),
        ])
    }
}

/// A transaction with its signature, as submitted and as stored in blocks.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedTx {
    /// The signer's key id (DID URL).
    pub signer: DidUrl,
    /// The decoded content.
    pub tx: Tx,
    sign1: CoseSign1,
    bytes: Vec<u8>,
    verified: Verified,
}

/// The key (compressed SEC1) this transaction's signature was found valid under. Verifying is
/// the costliest step of handling a transaction, and one transaction is checked at admission,
/// again when its block is built or re-executed, and again at re-admission; the signed bytes never
/// change, so one success under a key stands for all.
#[derive(Debug, Clone, Default)]
struct Verified(std::sync::OnceLock<Vec<u8>>);

impl PartialEq for Verified {
    /// A cache: two transactions are equal whether or not either was checked yet.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl SignedTx {
    /// Sign `tx` as `signer` (kid) with `key`. The signature is stored in its low-S form, the
    /// only one [`SignedTx::decode`] accepts (whatever form the signer produced).
    pub fn sign(tx: Tx, signer: DidUrl, key: &dyn Signer) -> Result<Self> {
        let payload = tx.to_vec();
        let mut sign1 = cose::sign1(
            key,
            Domain::RegistryTransaction,
            HeaderBuilder::new().key_id(signer.to_string().into_bytes()),
            coset::Header::default(),
            Some(payload),
            None,
        )?;
        sign1.signature = crate::crypto::low_s(&sign1.signature)
            .ok_or_else(|| Error::Signer("not an ES256 signature".into()))?
            .to_vec();
        let bytes = cose::encode_sign1(&sign1);
        Ok(Self {
            signer,
            tx,
            sign1,
            bytes,
            verified: Verified::default(),
        })
    }

    /// Decode (the signature is checked by [`SignedTx::verify`] against the signer's key on chain).
    ///
    /// A transaction's id is the hash of its bytes, so the bytes must be the only encoding of
    /// its signed content: the signature must be low-S (ECDSA's `(r, n − s)` verifies too) and the
    /// unprotected header empty (anything in it is unsigned).
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        let sign1 = cose::decode_sign1_within(bytes, MAX_TX_LEN)?;
        cose::check_alg(&sign1)?;
        if !sign1.unprotected.is_empty() {
            return Err(Error::malformed(
                "transaction",
                "the unprotected header must be empty",
            ));
        }
        if !crate::crypto::is_low_s(&sign1.signature) {
            return Err(Error::malformed(
                "transaction",
                "the signature must be 64 bytes in low-S form",
            ));
        }
        let kid =
            cose::kid(&sign1).ok_or_else(|| Error::malformed("transaction", "no protected kid"))?;
        let signer = DidUrl::parse(
            std::str::from_utf8(kid)
                .map_err(|_| Error::malformed("transaction", "kid is not UTF-8"))?,
        )?;
        let payload = sign1
            .payload
            .as_deref()
            .ok_or_else(|| Error::malformed("transaction", "no payload"))?;
        let tx = Tx::from_value(&cbor::decode(
            "transaction",
            payload,
            Limits::new(MAX_TX_LEN),
        )?)?;
        Ok(Self {
            signer,
            tx,
            bytes: cose::encode_sign1(&sign1),
            sign1,
            verified: Verified::default(),
        })
    }

    /// The encoded COSE_Sign1.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Check the signature under `key`.
    pub fn verify(&self, key: &EcPublicKey) -> Result<()> {
        let compressed = key.compressed();
        if self.verified.0.get() == Some(&compressed) {
            return Ok(());
        }
        cose::verify_sign1(&self.sign1, key, Domain::RegistryTransaction, None)?;
        let _ = self.verified.0.set(compressed);
        Ok(())
    }

    /// Take over the signature check already made on `other` if it is the same transaction
    /// (byte for byte): a validator re-executing a block reuses what its mempool verified.
    pub fn adopt_verification(&self, other: &SignedTx) {
        if self.bytes == other.bytes
            && let Some(key) = other.verified.0.get()
        {
            let _ = self.verified.0.set(key.clone());
        }
    }
}

/// A governance member's approval of an operation in `epoch` (for quorum operations).
pub fn approve(
    op: &Op,
    chain: &str,
    epoch: u64,
    member: DidUrl,
    key: &dyn Signer,
) -> Result<Vec<u8>> {
    let sign1 = cose::sign1(
        key,
        Domain::GovernanceApproval,
        HeaderBuilder::new().key_id(member.to_string().into_bytes()),
        coset::Header::default(),
        Some(op.approval_payload(chain, epoch)),
        None,
    )?;
    Ok(cose::encode_sign1(&sign1))
}

/// Decode an approval: who signed, and the COSE_Sign1 to verify.
pub fn decode_approval(bytes: &[u8]) -> Result<(DidUrl, CoseSign1)> {
    let sign1 = cose::decode_sign1_within(bytes, 64 * 1024)?;
    let kid = cose::kid(&sign1).ok_or_else(|| Error::malformed("approval", "no protected kid"))?;
    let member = DidUrl::parse(
        std::str::from_utf8(kid).map_err(|_| Error::malformed("approval", "kid is not UTF-8"))?,
    )?;
    Ok((member, sign1))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use crate::crypto::SoftwareKey;
    use crate::did::{Did, KeyCommitment};

    fn signed(key: &SoftwareKey) -> SignedTx {
        let next = SoftwareKey::from_scalar(&[9; 32]).unwrap();
        let commitment = KeyCommitment::to(next.public_key());
        let did = Did::from_inception(key.public_key(), &commitment);
        SignedTx::sign(
            Tx {
                chain: "c".into(),
                seq: 0,
                op: Op::CreateDid {
                    key: key.public_key().clone(),
                    next: commitment,
                },
            },
            did.key_url(1),
            key,
        )
        .unwrap()
    }

    #[test]
    fn a_remembered_check_holds_only_for_its_key_and_bytes() {
        let key = SoftwareKey::from_scalar(&[1; 32]).unwrap();
        let other = SoftwareKey::from_scalar(&[2; 32]).unwrap();
        let tx = signed(&key);
        tx.verify(key.public_key()).unwrap();
        // Checked once under `key`: another key still fails, every time.
        assert!(tx.verify(other.public_key()).is_err());
        assert!(tx.verify(other.public_key()).is_err());
        tx.verify(key.public_key()).unwrap();
        // A fresh decode adopts the check of the same bytes, not of different ones.
        let again = SignedTx::decode(tx.bytes()).unwrap();
        again.adopt_verification(&tx);
        assert_eq!(again.verified.0.get(), Some(&key.public_key().compressed()));
        let mut tampered = tx.bytes().to_vec();
        let n = tampered.len();
        tampered[n - 1] ^= 1;
        let forged = SignedTx::decode(&tampered).unwrap();
        forged.adopt_verification(&tx);
        assert!(forged.verified.0.get().is_none());
        assert!(forged.verify(key.public_key()).is_err());
    }
}
