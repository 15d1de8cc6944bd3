//! Sealing of block payloads, as a trait so that this crate does not depend on
//! the key service.

/// Seals and opens whole blocks. The server plugs in the tenant's data keys,
/// binding each block to its stream and to `first_offset` (the associated
/// data's `part`), so a block moved to another offset or stream fails to open.
pub trait BlockSealer: Send + Sync {
    /// Seals the plaintext body of the block that starts at `first_offset`.
    fn seal(&self, first_offset: u64, plaintext: &[u8]) -> Result<Vec<u8>, String>;
    /// Opens a block sealed for `first_offset`; fails if it was sealed for
    /// another place or altered.
    fn open(&self, first_offset: u64, sealed: &[u8]) -> Result<Vec<u8>, String>;
}

/// No sealing: the payload is the plaintext body. For tests and for streams
/// whose data is not secret; the CRC still catches accidental damage.
#[derive(Debug, Clone, Copy, Default)]
pub struct Plain;

impl BlockSealer for Plain {
    fn seal(&self, _first_offset: u64, plaintext: &[u8]) -> Result<Vec<u8>, String> {
        Ok(plaintext.to_vec())
    }

    fn open(&self, _first_offset: u64, sealed: &[u8]) -> Result<Vec<u8>, String> {
        Ok(sealed.to_vec())
    }
}
