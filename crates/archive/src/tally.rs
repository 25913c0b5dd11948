//! Running sha256 and length of a body on its way to the store.

use sha2::{Digest, Sha256};

use crate::{ArchiveError, ObjectKey};

pub(crate) fn source_error<E: std::error::Error + Send + Sync + 'static>(e: E) -> ArchiveError {
    ArchiveError::Source(Box::new(e))
}

/// Running sha256 and length of a body, checked against the announced length.
pub(crate) struct Tally<'a> {
    key: &'a ObjectKey,
    expected: Option<u64>,
    hasher: Sha256,
    size: u64,
}

impl<'a> Tally<'a> {
    pub(crate) fn new(key: &'a ObjectKey, expected: Option<u64>) -> Self {
        Tally {
            key,
            expected,
            hasher: Sha256::new(),
            size: 0,
        }
    }

    /// Adds a chunk; fails as soon as the body is longer than announced, so
    /// an over-long body is not uploaded in full before being rejected.
    pub(crate) fn add(&mut self, chunk: &[u8]) -> Result<(), ArchiveError> {
        self.hasher.update(chunk);
        self.size += chunk.len() as u64;
        match self.expected {
            Some(expected) if self.size > expected => Err(self.mismatch(expected)),
            _ => Ok(()),
        }
    }

    pub(crate) fn finish(self) -> Result<(String, u64), ArchiveError> {
        match self.expected {
            Some(expected) if self.size != expected => Err(self.mismatch(expected)),
            _ => Ok((hex::encode(self.hasher.finalize()), self.size)),
        }
    }

    fn mismatch(&self, expected: u64) -> ArchiveError {
        ArchiveError::SizeMismatch {
            key: self.key.to_string(),
            expected,
            got: self.size,
        }
    }
}
