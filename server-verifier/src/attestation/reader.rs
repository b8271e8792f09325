//! A bounded cursor over TPM 2.0 marshalled bytes (big-endian, TPM2B = u16 size prefix).
//!
//! Every read checks the remaining length first, so a hostile buffer can only produce a
//! [`ParseError`], never a panic or an out-of-bounds slice.

use thiserror::Error;

/// Why a TPM structure could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ParseError {
    /// The buffer ended in the middle of `what`.
    #[error("truncated TPM structure: {what} needs {needed} more bytes, {available} left")]
    Truncated {
        /// The field being read.
        what: &'static str,
        /// Bytes the field needs.
        needed: usize,
        /// Bytes that were left.
        available: usize,
    },
    /// A size prefix larger than the structure allows.
    #[error("TPM2B {what} is {size} bytes, at most {max} allowed")]
    SizeTooLarge {
        /// The field being read.
        what: &'static str,
        /// The declared size.
        size: usize,
        /// The bound for this field.
        max: usize,
    },
    /// Bytes left over after the structure ended.
    #[error("{count} trailing bytes after {what}")]
    TrailingBytes {
        /// The structure that was parsed.
        what: &'static str,
        /// How many bytes were left.
        count: usize,
    },
    /// A hash field says SHA-1: real AKs made by some tools use it, and attestation never
    /// accepts it (only vendor certificate chain links may, behind `ek_sha1_links`).
    #[error("{what} is SHA-1, which attestation signatures and digests never use here")]
    Sha1 {
        /// The field.
        what: &'static str,
    },
    /// A selector (algorithm, type, curve) this parser does not know or does not accept here.
    #[error("unsupported {what}: 0x{value:04x}")]
    Unsupported {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u32,
    },
    /// A value outside its allowed set (for example TPMI_YES_NO other than 0 or 1).
    #[error("invalid {what}: {value}")]
    Invalid {
        /// The field.
        what: &'static str,
        /// Its value.
        value: u64,
    },
    /// Input that is not valid base64 or hex where binary evidence was expected.
    #[error("{what} is not valid {encoding}")]
    Encoding {
        /// The evidence field.
        what: &'static str,
        /// The expected encoding.
        encoding: &'static str,
    },
}

/// A [`ParseError`] with where it happened: the byte offset, from the start of the structure
/// given to the parser, of the field being read (for a size prefix too large, of the prefix; for
/// trailing bytes, of the first one). With the field name inside the error, an operator can
/// point at the exact bytes of a vendor quirk.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("at byte {offset}")]
pub struct ParseFailure {
    /// Offset of the field from the start of the structure.
    pub offset: usize,
    /// What was wrong there.
    #[source]
    pub error: ParseError,
}

impl ParseFailure {
    /// `error` at `offset`.
    pub fn at(offset: usize, error: ParseError) -> Self {
        Self { offset, error }
    }

    /// The same failure seen from a structure that embeds this one `by` bytes in.
    pub fn shifted(self, by: usize) -> Self {
        Self {
            offset: self.offset.saturating_add(by),
            error: self.error,
        }
    }
}

/// Reads TPM marshalled data from a byte slice.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
    /// Where the field read last (or being read) starts.
    field_start: usize,
}

impl<'a> Reader<'a> {
    /// Starts at the beginning of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            position: 0,
            field_start: 0,
        }
    }

    /// `error` located at the field read last: what a parser returns when a read fails or a value
    /// read is refused.
    pub fn locate(&self, error: ParseError) -> ParseFailure {
        ParseFailure::at(self.field_start, error)
    }

    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.position)
    }

    /// The offset of the next byte.
    pub fn position(&self) -> usize {
        self.position
    }

    /// The bytes between `start` and the current position (for hashing exactly what was parsed).
    pub fn consumed_since(&self, start: usize) -> &'a [u8] {
        self.bytes.get(start..self.position).unwrap_or(&[])
    }

    /// Takes `len` bytes.
    pub fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        self.field_start = self.position;
        let available = self.remaining();
        if len > available {
            return Err(ParseError::Truncated {
                what,
                needed: len,
                available,
            });
        }
        let end = self.position + len;
        let slice = self
            .bytes
            .get(self.position..end)
            .ok_or(ParseError::Truncated {
                what,
                needed: len,
                available,
            })?;
        self.position = end;
        Ok(slice)
    }

    /// Takes exactly `N` bytes as an array.
    fn take_array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], ParseError> {
        let slice = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    /// A byte.
    pub fn u8(&mut self, what: &'static str) -> Result<u8, ParseError> {
        Ok(self.take_array::<1>(what)?[0])
    }

    /// A big-endian u16.
    pub fn u16(&mut self, what: &'static str) -> Result<u16, ParseError> {
        Ok(u16::from_be_bytes(self.take_array(what)?))
    }

    /// A big-endian u32.
    pub fn u32(&mut self, what: &'static str) -> Result<u32, ParseError> {
        Ok(u32::from_be_bytes(self.take_array(what)?))
    }

    /// A big-endian u64.
    pub fn u64(&mut self, what: &'static str) -> Result<u64, ParseError> {
        Ok(u64::from_be_bytes(self.take_array(what)?))
    }

    /// A TPM2B: u16 size then that many bytes, refused above `max`.
    pub fn tpm2b(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], ParseError> {
        let prefix = self.position;
        let size = usize::from(self.u16(what)?);
        if size > max {
            return Err(ParseError::SizeTooLarge { what, size, max });
        }
        let content = self.take(size, what)?;
        // A later refusal of this value points at its size prefix, where the TPM2B starts.
        self.field_start = prefix;
        Ok(content)
    }

    /// A TPMI_YES_NO.
    pub fn yes_no(&mut self, what: &'static str) -> Result<bool, ParseError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(ParseError::Invalid {
                what,
                value: u64::from(other),
            }),
        }
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&mut self, what: &'static str) -> Result<(), ParseError> {
        self.field_start = self.position;
        match self.remaining() {
            0 => Ok(()),
            count => Err(ParseError::TrailingBytes { what, count }),
        }
    }
}

/// Appends a TPM2B (u16 size prefix) to `out`; `None` if `bytes` is too long for one.
pub fn put_tpm2b(out: &mut Vec<u8>, bytes: &[u8]) -> Option<()> {
    let size = u16::try_from(bytes.len()).ok()?;
    out.extend_from_slice(&size.to_be_bytes());
    out.extend_from_slice(bytes);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_big_endian_and_tpm2b() -> Result<(), ParseError> {
        let bytes = [0x12, 0x34, 0x00, 0x02, 0xaa, 0xbb, 0x01];
        let mut reader = Reader::new(&bytes);
        assert_eq!(reader.u16("a")?, 0x1234);
        assert_eq!(reader.tpm2b(2, "b")?, &[0xaa, 0xbb]);
        assert!(reader.yes_no("c")?);
        reader.finish("all")
    }

    #[test]
    fn refuses_short_oversized_and_trailing() {
        let mut reader = Reader::new(&[0x00, 0x05, 0x01]);
        assert!(matches!(
            reader.clone().tpm2b(8, "x"),
            Err(ParseError::Truncated {
                needed: 5,
                available: 1,
                ..
            })
        ));
        assert!(matches!(
            reader.tpm2b(4, "x"),
            Err(ParseError::SizeTooLarge {
                size: 5,
                max: 4,
                ..
            })
        ));
        let mut reader = Reader::new(&[0, 0, 0]);
        assert!(reader.u16("x").is_ok());
        assert!(matches!(
            reader.finish("x"),
            Err(ParseError::TrailingBytes { count: 1, .. })
        ));
        assert!(matches!(
            Reader::new(&[2]).yes_no("safe"),
            Err(ParseError::Invalid { value: 2, .. })
        ));
    }
}
