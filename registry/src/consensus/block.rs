//! The block as commonware sees it: Civis's canonical CBOR block, length-prefixed so that it is
//! self-delimiting on the wire, digested by its header.

use std::sync::Arc;

use bytes::BufMut;
use civis_core::chain::block::{Block, MAX_BLOCK_LEN};
use commonware_codec::{Buf, EncodeSize, Error as CodecError, RangeCfg, Read, Write};
use commonware_consensus::types::Height;
use commonware_consensus::{Block as CwBlock, Heightable};
use commonware_cryptography::Digestible;
use commonware_cryptography::sha256::Digest;

/// A Civis block with its encoding and digest computed once. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ChainBlock(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    block: Block,
    bytes: Vec<u8>,
    digest: Digest,
}

impl ChainBlock {
    /// Wrap a block.
    pub fn new(block: Block) -> Self {
        let bytes = block.encode();
        let digest = Digest(block.header.digest());
        Self(Arc::new(Inner {
            block,
            bytes,
            digest,
        }))
    }

    /// The block.
    pub fn block(&self) -> &Block {
        &self.0.block
    }
}

impl PartialEq for ChainBlock {
    fn eq(&self, other: &Self) -> bool {
        self.0.digest == other.0.digest
    }
}

impl Eq for ChainBlock {}

impl Write for ChainBlock {
    fn write(&self, buf: &mut impl BufMut) {
        self.0.bytes.len().write(buf);
        buf.put_slice(&self.0.bytes);
    }
}

impl EncodeSize for ChainBlock {
    fn encode_size(&self) -> usize {
        self.0.bytes.len().encode_size() + self.0.bytes.len()
    }
}

impl Read for ChainBlock {
    type Cfg = ();

    fn read_cfg(buf: &mut impl Buf, _: &()) -> Result<Self, CodecError> {
        let len = usize::read_cfg(buf, &RangeCfg::from(..=MAX_BLOCK_LEN))?;
        if buf.remaining() < len {
            return Err(CodecError::EndOfBuffer);
        }
        let mut bytes = vec![0; len];
        buf.copy_to_slice(&mut bytes);
        let block =
            Block::decode(&bytes).map_err(|_| CodecError::Invalid("ChainBlock", "not a block"))?;
        // Marshal requires encode(decode(b)) == b.
        let wrapped = Self::new(block);
        if wrapped.0.bytes != bytes {
            return Err(CodecError::Invalid("ChainBlock", "not canonical"));
        }
        Ok(wrapped)
    }
}

impl Digestible for ChainBlock {
    type Digest = Digest;

    fn digest(&self) -> Digest {
        self.0.digest
    }
}

impl Heightable for ChainBlock {
    fn height(&self) -> Height {
        Height::new(self.0.block.header.height)
    }
}

impl CwBlock for ChainBlock {
    fn parent(&self) -> Digest {
        Digest(self.0.block.header.parent)
    }
}
