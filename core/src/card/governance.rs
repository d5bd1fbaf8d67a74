//! The governance set a card trusts, following the chain (specs/card-applet.md §3.4).
//!
//! The card is given the chain's governance members at personalization (each member's inception
//! key and next-key commitment, as the genesis names them) and then learns each member's key
//! rotation from the member's own `rotate-key` transaction, which the chain records in the kiosk
//! tree and kiosks push at the next tap. A rotation is accepted only if it is signed by the key the
//! card holds for that member **and** reveals the key that member committed to, exactly the check
//! the chain makes: a kiosk (or a stranger) can bring a card up to date but cannot steer it.
//!
//! An accreditation is honoured under the key of the member its protected `kid` names, at the key
//! index the card holds: the chain accepts `accredit-kiosk` from any one member, and so does the
//! card; a statement signed by a key the member rotated away from is refused.

use ciborium::Value;
use coset::CoseSign1;

use crate::cbor::{self, Limits, access, text, text_map};
use crate::chain::tx::{Op, SignedTx};
use crate::cose;
use crate::crypto::EcPublicKey;
use crate::did::{Did, DidUrl, KeyCommitment};
use crate::error::{Error, Result};
use crate::kiosk::{KioskAccreditation, MAX_STATEMENT_LEN};

/// Most governance members a card keeps (a genesis with more cannot personalize cards).
pub const MAX_MEMBERS: usize = 16;

const W: &str = "governance set";

/// One governance member as the card knows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The member's DID (derived from its inception key and commitment).
    pub did: Did,
    /// The index of `key` in the DID's history (`#key-<index>`; 1 at inception).
    pub index: u32,
    /// The member's current key.
    pub key: EcPublicKey,
    /// The commitment to the member's next key.
    pub next: KeyCommitment,
}

/// The governance set of one chain.
#[derive(Debug, Clone, PartialEq)]
pub struct GovernanceSet {
    /// The chain id.
    pub chain: String,
    /// The members, in genesis order.
    pub members: Vec<Member>,
}

/// What applying a rotation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotated {
    /// The member's key moved on.
    Applied,
    /// The card already had this rotation (or a later one): nothing changed.
    AlreadyKnown,
}

/// Why a rotation was not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationRefused {
    /// Not a `rotate-key` transaction of a member of this chain's governance.
    #[error("not a governance member's rotate-key transaction for this chain")]
    NotApplicable,
    /// An earlier rotation of the member is missing: push the member's rotations in order.
    #[error("an earlier rotation of the member is missing")]
    Gap,
    /// The signature or the pre-rotation commitment does not hold.
    #[error("the rotation does not verify under the member's key and commitment")]
    Forged,
}

impl GovernanceSet {
    /// The set the genesis defines: every member at its inception key (`#key-1`).
    pub fn from_inception(chain: &str, members: &[(EcPublicKey, KeyCommitment)]) -> Result<Self> {
        if chain.is_empty() || members.is_empty() || members.len() > MAX_MEMBERS {
            return Err(Error::invalid(
                W,
                format!("needs a chain id and 1..={MAX_MEMBERS} members"),
            ));
        }
        let mut out: Vec<Member> = Vec::with_capacity(members.len());
        for (key, next) in members {
            let did = Did::from_inception(key, next);
            if out.iter().any(|m| m.did == did) {
                return Err(Error::invalid(W, "a member appears twice"));
            }
            out.push(Member {
                did,
                index: 1,
                key: key.clone(),
                next: *next,
            });
        }
        Ok(Self {
            chain: chain.to_owned(),
            members: out,
        })
    }

    /// The PUT DATA body installing the genesis set (`civis_core::card::item::GOVERNANCE`):
    /// `{"chain": tstr, "members": [+ [key: bstr .size 33, next: bstr .size 32]]}`.
    pub fn inception_value(chain: &str, members: &[(EcPublicKey, KeyCommitment)]) -> Vec<u8> {
        cbor::encode(&text_map(vec![
            ("chain", text(chain)),
            (
                "members",
                Value::Array(
                    members
                        .iter()
                        .map(|(k, n)| {
                            Value::Array(vec![
                                Value::Bytes(k.compressed()),
                                Value::Bytes(n.0.into()),
                            ])
                        })
                        .collect(),
                ),
            ),
        ]))
    }

    /// Decode an [`Self::inception_value`] into the set it installs.
    pub fn from_inception_value(bytes: &[u8]) -> Result<Self> {
        let v = cbor::decode(W, bytes, Limits::new(4 * 1024))?;
        let m = access::map(W, &v)?;
        access::only_keys(W, m, &["chain", "members"])?;
        let chain = access::text(W, access::req(W, m, "chain")?)?;
        let members = access::array(W, access::req(W, m, "members")?)?
            .iter()
            .map(|pair| match access::array(W, pair)? {
                [k, n] => Ok((key_of(k)?, commitment_of(n)?)),
                _ => Err(Error::malformed(W, "a member is not [key, next]")),
            })
            .collect::<Result<Vec<_>>>()?;
        Self::from_inception(chain, &members)
    }

    /// The member a statement's protected `kid` names, if it names a member's **current** key.
    pub fn signer(&self, sign1: &CoseSign1) -> Option<&Member> {
        let kid = cose::kid(sign1)?;
        let url = DidUrl::parse(std::str::from_utf8(kid).ok()?).ok()?;
        self.members
            .iter()
            .find(|m| m.did == url.did && url.key_index() == Some(m.index))
    }

    /// Check a kiosk accreditation statement: signed by a member's current key, for this chain.
    /// One signature check, under the key the `kid` names (never a trial of every member).
    pub fn verify_accreditation(&self, statement: &CoseSign1) -> Result<KioskAccreditation> {
        let member = self.signer(statement).ok_or_else(|| {
            Error::invalid(
                "kiosk accreditation",
                "not signed by a governance member's current key",
            )
        })?;
        let acc = KioskAccreditation::verify_sign1(statement, &member.key)?;
        if acc.chain != self.chain {
            return Err(Error::invalid("kiosk accreditation", "another chain"));
        }
        Ok(acc)
    }

    /// Apply a member's `rotate-key` transaction (the signed bytes the chain recorded). Checks
    /// what the chain checks: the signature under the member's current key, the new key against
    /// the member's commitment, a new commitment that is not the same key again.
    pub fn rotate(&mut self, tx_bytes: &[u8]) -> std::result::Result<Rotated, RotationRefused> {
        if tx_bytes.len() > MAX_STATEMENT_LEN {
            return Err(RotationRefused::NotApplicable);
        }
        let tx = SignedTx::decode(tx_bytes).map_err(|_| RotationRefused::NotApplicable)?;
        let Op::RotateKey { key, next } = &tx.tx.op else {
            return Err(RotationRefused::NotApplicable);
        };
        if tx.tx.chain != self.chain {
            return Err(RotationRefused::NotApplicable);
        }
        let signed_at = tx
            .signer
            .key_index()
            .ok_or(RotationRefused::NotApplicable)?;
        let member = self
            .members
            .iter_mut()
            .find(|m| m.did == tx.signer.did)
            .ok_or(RotationRefused::NotApplicable)?;
        // Rotations form a chain per member; one the card has passed changes nothing (pushing
        // every recorded rotation at each tap is then cheap: no signature check).
        if signed_at < member.index {
            return Ok(Rotated::AlreadyKnown);
        }
        if signed_at > member.index {
            return Err(RotationRefused::Gap);
        }
        let index = member.index.checked_add(1).ok_or(RotationRefused::Gap)?;
        tx.verify(&member.key)
            .map_err(|_| RotationRefused::Forged)?;
        if !member.next.matches(key) || next.matches(key) {
            return Err(RotationRefused::Forged);
        }
        member.key = key.clone();
        member.next = *next;
        member.index = index;
        Ok(Rotated::Applied)
    }
}

fn key_of(v: &Value) -> Result<EcPublicKey> {
    let b = access::bytes(W, v)?;
    if b.len() != 33 {
        return Err(Error::malformed(W, "a key must be 33-byte compressed SEC1"));
    }
    EcPublicKey::from_sec1(b)
}

fn commitment_of(v: &Value) -> Result<KeyCommitment> {
    let b: [u8; 32] = access::bytes(W, v)?
        .try_into()
        .map_err(|_| Error::malformed(W, "a commitment must be 32 bytes"))?;
    Ok(KeyCommitment(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::tx::Tx;
    use crate::crypto::SoftwareKey;
    use crate::kiosk::ElementGrants;

    const CHAIN: &str = "civis-test";

    struct Keys {
        now: SoftwareKey,
        next: SoftwareKey,
        after: SoftwareKey,
    }

    impl Keys {
        fn new(seed: u8) -> Self {
            let k = |n: u8| {
                SoftwareKey::from_scalar(&[seed.wrapping_mul(3).wrapping_add(n); 32]).unwrap()
            };
            Self {
                now: k(1),
                next: k(2),
                after: k(3),
            }
        }
        fn inception(&self) -> (EcPublicKey, KeyCommitment) {
            (
                self.now.public_key().clone(),
                KeyCommitment::to(self.next.public_key()),
            )
        }
        fn did(&self) -> Did {
            let (k, n) = self.inception();
            Did::from_inception(&k, &n)
        }
    }

    fn rotation(
        chain: &str,
        member: &Keys,
        index: u32,
        signer: &SoftwareKey,
        key: &EcPublicKey,
        next: &EcPublicKey,
    ) -> Vec<u8> {
        let tx = Tx {
            chain: chain.into(),
            seq: u64::from(index),
            op: Op::RotateKey {
                key: key.clone(),
                next: KeyCommitment::to(next),
            },
        };
        SignedTx::sign(tx, member.did().key_url(index), signer)
            .unwrap()
            .bytes()
            .to_vec()
    }

    fn accreditation(signer_url: DidUrl, key: &SoftwareKey, chain: &str) -> CoseSign1 {
        let kiosk = SoftwareKey::from_scalar(&[99; 32]).unwrap();
        let acc = KioskAccreditation {
            chain: chain.into(),
            kiosk: Did::from_inception(kiosk.public_key(), &KeyCommitment([0; 32])),
            key: kiosk.public_key().clone(),
            grants: ElementGrants::default(),
            purpose: "test".into(),
            not_before: 0,
            not_after: 10,
        };
        cose::decode_sign1(&acc.sign(&signer_url, key).unwrap()).unwrap()
    }

    fn set(a: &Keys, b: &Keys) -> GovernanceSet {
        let bytes = GovernanceSet::inception_value(CHAIN, &[a.inception(), b.inception()]);
        GovernanceSet::from_inception_value(&bytes).unwrap()
    }

    #[test]
    fn any_members_current_key_accredits_and_a_rotated_out_one_does_not() {
        let (a, b) = (Keys::new(1), Keys::new(2));
        let mut g = set(&a, &b);
        assert!(
            g.verify_accreditation(&accreditation(a.did().key_url(1), &a.now, CHAIN))
                .is_ok()
        );
        assert!(
            g.verify_accreditation(&accreditation(b.did().key_url(1), &b.now, CHAIN))
                .is_ok()
        );
        // Named as A but signed by B; B's key under A's kid; another chain; a key index the
        // card does not hold.
        assert!(
            g.verify_accreditation(&accreditation(a.did().key_url(1), &b.now, CHAIN))
                .is_err()
        );
        assert!(
            g.verify_accreditation(&accreditation(a.did().key_url(1), &a.now, "other"))
                .is_err()
        );
        assert!(
            g.verify_accreditation(&accreditation(a.did().key_url(2), &a.next, CHAIN))
                .is_err()
        );

        let r = rotation(
            CHAIN,
            &a,
            1,
            &a.now,
            a.next.public_key(),
            a.after.public_key(),
        );
        assert_eq!(g.rotate(&r), Ok(Rotated::Applied));
        assert_eq!(g.members[0].index, 2);
        // The same rotation again changes nothing.
        let before = g.clone();
        assert_eq!(g.rotate(&r), Ok(Rotated::AlreadyKnown));
        assert_eq!(g, before);
        assert!(
            g.verify_accreditation(&accreditation(a.did().key_url(1), &a.now, CHAIN))
                .is_err()
        );
        assert!(
            g.verify_accreditation(&accreditation(a.did().key_url(2), &a.next, CHAIN))
                .is_ok()
        );
        assert!(
            g.verify_accreditation(&accreditation(b.did().key_url(1), &b.now, CHAIN))
                .is_ok()
        );
    }

    #[test]
    fn forged_replayed_foreign_and_out_of_order_rotations_are_refused() {
        let (a, b) = (Keys::new(1), Keys::new(2));
        let mut g = set(&a, &b);
        let before = g.clone();
        let thief = SoftwareKey::from_scalar(&[77; 32]).unwrap();
        // A key that does not match A's commitment, signed by A's current key (a thief of the
        // current key cannot pick the next one).
        let r = rotation(
            CHAIN,
            &a,
            1,
            &a.now,
            thief.public_key(),
            a.after.public_key(),
        );
        assert_eq!(g.rotate(&r), Err(RotationRefused::Forged));
        // The committed key, signed by someone else.
        let r = rotation(
            CHAIN,
            &a,
            1,
            &thief,
            a.next.public_key(),
            a.after.public_key(),
        );
        assert_eq!(g.rotate(&r), Err(RotationRefused::Forged));
        // Committing to the same key again.
        let r = rotation(
            CHAIN,
            &a,
            1,
            &a.now,
            a.next.public_key(),
            a.next.public_key(),
        );
        assert_eq!(g.rotate(&r), Err(RotationRefused::Forged));
        // Another chain's rotation.
        let r = rotation(
            "other",
            &a,
            1,
            &a.now,
            a.next.public_key(),
            a.after.public_key(),
        );
        assert_eq!(g.rotate(&r), Err(RotationRefused::NotApplicable));
        // The second rotation before the first.
        let r = rotation(
            CHAIN,
            &a,
            2,
            &a.next,
            a.after.public_key(),
            thief.public_key(),
        );
        assert_eq!(g.rotate(&r), Err(RotationRefused::Gap));
        // A kid whose index has leading zeros (the chain refuses it).
        let tx = SignedTx::decode(&rotation(
            CHAIN,
            &a,
            1,
            &a.now,
            a.next.public_key(),
            a.after.public_key(),
        ))
        .unwrap()
        .tx;
        let padded = SignedTx::sign(
            tx,
            DidUrl {
                did: a.did(),
                fragment: "key-01".into(),
            },
            &a.now,
        )
        .unwrap();
        assert_eq!(
            g.rotate(padded.bytes()),
            Err(RotationRefused::NotApplicable)
        );
        // Not a member; not a rotation; garbage, truncated, oversized.
        let stranger = Keys::new(9);
        let r = rotation(
            CHAIN,
            &stranger,
            1,
            &stranger.now,
            stranger.next.public_key(),
            stranger.after.public_key(),
        );
        assert_eq!(g.rotate(&r), Err(RotationRefused::NotApplicable));
        let good = rotation(
            CHAIN,
            &a,
            1,
            &a.now,
            a.next.public_key(),
            a.after.public_key(),
        );
        for cut in 0..good.len() {
            assert!(g.rotate(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = good.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert!(g.rotate(&flipped).is_err());
        assert!(g.rotate(&vec![0xA0; MAX_STATEMENT_LEN + 1]).is_err());
        let deactivate = SignedTx::sign(
            Tx {
                chain: CHAIN.into(),
                seq: 1,
                op: Op::Deactivate,
            },
            a.did().key_url(1),
            &a.now,
        )
        .unwrap();
        assert_eq!(
            g.rotate(deactivate.bytes()),
            Err(RotationRefused::NotApplicable)
        );
        assert_eq!(g, before, "nothing refused changed the set");
    }

    #[test]
    fn the_inception_value_is_checked() {
        let a = Keys::new(1);
        assert!(
            GovernanceSet::from_inception_value(&GovernanceSet::inception_value(CHAIN, &[]))
                .is_err()
        );
        assert!(
            GovernanceSet::from_inception_value(&GovernanceSet::inception_value(
                CHAIN,
                &[a.inception(), a.inception()]
            ))
            .is_err()
        );
        assert!(
            GovernanceSet::from_inception_value(&GovernanceSet::inception_value(
                "",
                &[a.inception()]
            ))
            .is_err()
        );
        let many: Vec<_> = (0..=MAX_MEMBERS as u8)
            .map(|i| Keys::new(i + 10).inception())
            .collect();
        assert!(
            GovernanceSet::from_inception_value(&GovernanceSet::inception_value(CHAIN, &many))
                .is_err()
        );
        assert!(GovernanceSet::from_inception_value(&[0xFF; 10]).is_err());
    }
}
