//! Canonical byte encoding.
//!
//! Every value that is hashed or signed is written with this encoder: fixed
//! width little-endian integers, fixed arrays as raw bytes, and variable
//! fields with a length prefix. For a given message type the field order is
//! fixed, so the encoding is injective: two different values never produce
//! the same bytes (the paper's authors concatenated plain strings, which is
//! not). Every hashed preimage also starts with a domain tag, so a vote can
//! never be mistaken for a request.

use thiserror::Error;

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("truncated: needed {needed} more bytes")]
    Truncated { needed: usize },
    #[error("{field} is {len} bytes, limit is {max}")]
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    #[error("{0} trailing bytes after the message")]
    Trailing(usize),
    #[error("unknown message tag {0}")]
    UnknownTag(u8),
    #[error("{0} is not valid UTF-8")]
    Utf8(&'static str),
    #[error("invalid value for {0}")]
    Invalid(&'static str),
}

/// Appends canonical fields to a byte vector.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    pub bytes: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn with_tag(tag: &[u8]) -> Self {
        let mut w = Self::default();
        w.raw(tag);
        w
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(v);
        self
    }
    /// A string of at most 255 bytes, with a one-byte length prefix.
    pub fn str8(&mut self, v: &str) -> &mut Self {
        let len = u8::try_from(v.len()).expect("caller checked the length limit");
        self.u8(len).raw(v.as_bytes())
    }
    /// Bytes of at most 65 535, with a two-byte length prefix.
    pub fn bytes16(&mut self, v: &[u8]) -> &mut Self {
        let len = u16::try_from(v.len()).expect("caller checked the length limit");
        self.u16(len).raw(v)
    }
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// Reads canonical fields, never panicking on hostile input.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }
    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.bytes.len() < n {
            return Err(DecodeError::Truncated {
                needed: n - self.bytes.len(),
            });
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn str8(&mut self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        let len = usize::from(self.u8()?);
        if len > max {
            return Err(DecodeError::TooLong { field, len, max });
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Utf8(field))
    }
    pub fn bytes16(&mut self, field: &'static str, max: usize) -> Result<Vec<u8>, DecodeError> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(DecodeError::TooLong { field, len, max });
        }
        Ok(self.take(len)?.to_vec())
    }
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::Trailing(self.bytes.len()))
        }
    }
}
