//! Block headers, blocks and deterministic execution.
//!
//! The header's digest is what consensus orders (the 32-byte proposal payload). It commits the
//! parent, the height, the block time, the transactions, and both state sub-roots, so a certified
//! header certifies the kiosk sub-root that the light client checks.

use ciborium::Value;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::smt::Hash;
use super::state::{Refused, State, epoch_of, state_root};
use super::tx::SignedTx;
use crate::cbor::{self, CborForm, Limits, access, text, text_map};
use crate::error::Result as CoreResult;

/// Largest encoded block.
pub const MAX_BLOCK_LEN: usize = 16 * 1024 * 1024;
/// Most transactions in one block.
pub const MAX_BLOCK_TXS: usize = 10_000;

/// A block header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Chain id.
    pub chain: String,
    /// Height (genesis is 0).
    pub height: u64,
    /// Digest of the parent header (zeros for genesis).
    pub parent: Hash,
    /// Block time, Unix seconds, never before the parent's.
    pub time: i64,
    /// Validator-set epoch the block's state ends in.
    pub epoch: u64,
    /// Commitment to the block's transactions.
    pub tx_root: Hash,
    /// Root of the kiosk tree after the block.
    pub kiosk_root: Hash,
    /// Root of the public tree after the block.
    pub public_root: Hash,
}

fn hash_of(what: &'static str, v: &Value) -> CoreResult<Hash> {
    access::bytes(what, v)?
        .try_into()
        .map_err(|_| crate::Error::malformed(what, "hash must be 32 bytes"))
}

impl CborForm for Header {
    const WHAT: &'static str = "block header";
    const MAX_LEN: usize = 4096;

    fn from_value(v: &Value) -> CoreResult<Self> {
        const W: &str = "block header";
        let m = access::map(W, v)?;
        access::only_keys(
            W,
            m,
            &[
                "chain",
                "height",
                "parent",
                "time",
                "epoch",
                "tx_root",
                "kiosk_root",
                "public_root",
            ],
        )?;
        Ok(Self {
            chain: access::text(W, access::req(W, m, "chain")?)?.to_owned(),
            height: access::uint(W, access::req(W, m, "height")?)?,
            parent: hash_of(W, access::req(W, m, "parent")?)?,
            time: access::req(W, m, "time")?
                .as_integer()
                .and_then(|i| i64::try_from(i).ok())
                .ok_or_else(|| crate::Error::malformed(W, "time"))?,
            epoch: access::uint(W, access::req(W, m, "epoch")?)?,
            tx_root: hash_of(W, access::req(W, m, "tx_root")?)?,
            kiosk_root: hash_of(W, access::req(W, m, "kiosk_root")?)?,
            public_root: hash_of(W, access::req(W, m, "public_root")?)?,
        })
    }

    fn to_value(&self) -> Value {
        text_map(vec![
            ("chain", text(&self.chain)),
            ("height", Value::Integer(self.height.into())),
            ("parent", Value::Bytes(self.parent.to_vec())),
            ("time", Value::Integer(self.time.into())),
            ("epoch", Value::Integer(self.epoch.into())),
            ("tx_root", Value::Bytes(self.tx_root.to_vec())),
            ("kiosk_root", Value::Bytes(self.kiosk_root.to_vec())),
            ("public_root", Value::Bytes(self.public_root.to_vec())),
        ])
    }
}

impl Header {
    /// The digest consensus orders: SHA-256("civis/header/v1" || 0x00 || CBOR(header)).
    pub fn digest(&self) -> Hash {
        let mut h = Sha256::new();
        h.update(b"civis/header/v1\0");
        h.update(self.to_vec());
        h.finalize().into()
    }

    /// The combined state root.
    pub fn state_root(&self) -> Hash {
        state_root(&self.kiosk_root, &self.public_root)
    }

    /// The genesis header of a genesis state.
    pub fn genesis(state: &State, time: i64) -> Self {
        Self {
            chain: state.chain_id().to_owned(),
            height: 0,
            parent: [0; 32],
            time,
            epoch: 0,
            tx_root: tx_root(&[]),
            kiosk_root: state.kiosk_root(),
            public_root: state.public_root(),
        }
    }
}

/// Commitment to an ordered list of transactions: SHA-256 over a domain, the count, and each
/// transaction's SHA-256.
pub fn tx_root(txs: &[SignedTx]) -> Hash {
    let mut h = Sha256::new();
    h.update(b"civis/txs/v1\0");
    h.update((txs.len() as u64).to_be_bytes());
    for tx in txs {
        h.update(Sha256::digest(tx.bytes()));
    }
    h.finalize().into()
}

/// A block: header and transactions.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    /// The header.
    pub header: Header,
    /// Transactions, in execution order.
    pub txs: Vec<SignedTx>,
}

impl Block {
    /// `{"header": Header, "txs": [bstr]}`.
    pub fn encode(&self) -> Vec<u8> {
        cbor::encode(&text_map(vec![
            ("header", self.header.to_value()),
            (
                "txs",
                Value::Array(
                    self.txs
                        .iter()
                        .map(|t| Value::Bytes(t.bytes().to_vec()))
                        .collect(),
                ),
            ),
        ]))
    }

    /// Decode within [`MAX_BLOCK_LEN`] and [`MAX_BLOCK_TXS`].
    pub fn decode(bytes: &[u8]) -> CoreResult<Self> {
        const W: &str = "block";
        let v = cbor::decode(W, bytes, Limits::new(MAX_BLOCK_LEN))?;
        let m = access::map(W, &v)?;
        access::only_keys(W, m, &["header", "txs"])?;
        let txs = access::array(W, access::req(W, m, "txs")?)?;
        if txs.len() > MAX_BLOCK_TXS {
            return Err(crate::Error::malformed(W, "too many transactions"));
        }
        Ok(Self {
            header: Header::from_value(access::req(W, m, "header")?)?,
            txs: txs
                .iter()
                .map(|t| SignedTx::decode(access::bytes(W, t)?))
                .collect::<CoreResult<_>>()?,
        })
    }
}

/// Why a block is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BlockError {
    /// Header fields that do not follow from the parent.
    #[error("block does not extend its parent: {0}")]
    Lineage(&'static str),
    /// A transaction the state refuses.
    #[error("transaction {index} refused: {reason}")]
    Transaction {
        /// Its position.
        index: usize,
        /// Why.
        reason: Refused,
    },
    /// The header's commitments differ from re-execution.
    #[error("header {0} does not match execution")]
    Mismatch(&'static str),
    /// Too many transactions.
    #[error("more than {MAX_BLOCK_TXS} transactions")]
    TooManyTransactions,
}

/// What the proposer built.
#[derive(Debug, Clone)]
pub struct Built {
    /// The state after the block.
    pub state: State,
    /// The block.
    pub block: Block,
    /// Pending transactions the state refused, with the reasons (never included).
    pub refused: Vec<(SignedTx, Refused)>,
    /// Pending transactions left for a later block because this one is full.
    pub deferred: Vec<SignedTx>,
}

/// Proposer side: apply the pending transactions that the state accepts, in order, until the
/// block holds [`MAX_BLOCK_TXS`] transactions or its encoding would pass [`MAX_BLOCK_LEN`].
pub fn build(parent_state: &State, parent: &Header, pending: Vec<SignedTx>, time: i64) -> Built {
    // Room for the header and CBOR framing.
    const BUDGET: usize = MAX_BLOCK_LEN - 64 * 1024;
    let mut state = parent_state.clone();
    state.clear_touched();
    let time = time.max(parent.time);
    let mut txs = Vec::new();
    let mut refused = Vec::new();
    let mut deferred = Vec::new();
    let mut size = 0usize;
    for tx in pending {
        let full = txs.len() >= MAX_BLOCK_TXS
            || size.saturating_add(tx.bytes().len()).saturating_add(8) > BUDGET;
        if full {
            deferred.push(tx);
            continue;
        }
        match state.apply(&tx, time) {
            Ok(()) => {
                size = size.saturating_add(tx.bytes().len()).saturating_add(8);
                txs.push(tx);
            }
            Err(r) => refused.push((tx, r)),
        }
    }
    let height = parent.height.saturating_add(1);
    state.end_block(height);
    let header = Header {
        chain: state.chain_id().to_owned(),
        height,
        parent: parent.digest(),
        time,
        epoch: epoch_of(height, state.epoch_length()),
        tx_root: tx_root(&txs),
        kiosk_root: state.kiosk_root(),
        public_root: state.public_root(),
    };
    Built {
        state,
        block: Block { header, txs },
        refused,
        deferred,
    }
}

/// Validator side: re-execute `block` on the parent's state; the block is valid only if it
/// extends the parent and every commitment in its header matches.
pub fn execute(parent_state: &State, parent: &Header, block: &Block) -> Result<State, BlockError> {
    let h = &block.header;
    if h.chain != parent.chain {
        return Err(BlockError::Lineage("chain id"));
    }
    if h.height != parent.height.saturating_add(1) {
        return Err(BlockError::Lineage("height"));
    }
    if h.parent != parent.digest() {
        return Err(BlockError::Lineage("parent digest"));
    }
    if h.time < parent.time {
        return Err(BlockError::Lineage("time before the parent's"));
    }
    if block.txs.len() > MAX_BLOCK_TXS {
        return Err(BlockError::TooManyTransactions);
    }
    if h.tx_root != tx_root(&block.txs) {
        return Err(BlockError::Mismatch("tx_root"));
    }
    let mut state = parent_state.clone();
    state.clear_touched();
    for (index, tx) in block.txs.iter().enumerate() {
        state
            .apply(tx, h.time)
            .map_err(|reason| BlockError::Transaction { index, reason })?;
    }
    state.end_block(h.height);
    if h.kiosk_root != state.kiosk_root() {
        return Err(BlockError::Mismatch("kiosk_root"));
    }
    if h.public_root != state.public_root() {
        return Err(BlockError::Mismatch("public_root"));
    }
    if h.epoch != epoch_of(h.height, state.epoch_length()) {
        return Err(BlockError::Mismatch("epoch"));
    }
    Ok(state)
}
