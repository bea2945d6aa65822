//! A tiny little-endian binary codec for artifact payloads.
//!
//! The payload is read back from disk, so every read is bounds-checked and
//! every count is checked against the bytes left before anything is
//! allocated: a corrupt count yields an error, never a panic or a huge
//! allocation.

/// Appends values to a byte buffer.
#[derive(Debug, Default)]
pub(crate) struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn f32(&mut self, v: f32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A count of following items. Counts above u32::MAX cannot be stored;
    /// models are far smaller, so saturating (and failing to decode) is the
    /// honest outcome rather than silently wrapping.
    pub(crate) fn count(&mut self, n: usize) {
        self.u32(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// Length-prefixed bytes (u64 length).
    pub(crate) fn bytes(&mut self, b: &[u8]) {
        self.u64(b.len() as u64);
        self.buf.extend_from_slice(b);
    }

    /// Length-prefixed UTF-8.
    pub(crate) fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at payload byte {offset}: {what}")]
pub struct DecodeError {
    /// Where decoding stopped.
    pub offset: usize,
    /// What was wrong.
    pub what: String,
}

/// Reads values back from a byte slice.
pub(crate) struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Decoder { buf, pos: 0 }
    }

    pub(crate) fn error(&self, what: impl Into<String>) -> DecodeError {
        DecodeError {
            offset: self.pos,
            what: what.into(),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= self.buf.len())
            .ok_or_else(|| {
                self.error(format!(
                    "needs {n} more bytes, {} left",
                    self.buf.len() - self.pos
                ))
            })?;
        let slice = &self.buf[self.pos..end];
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_le_bytes)
    }

    pub(crate) fn f32(&mut self) -> Result<f32, DecodeError> {
        self.array().map(f32::from_le_bytes)
    }

    /// A count of items that each take at least `min_item_bytes`; refused if
    /// the remaining bytes cannot possibly hold that many.
    pub(crate) fn count(&mut self, min_item_bytes: usize) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        let left = self.buf.len() - self.pos;
        if n.saturating_mul(min_item_bytes.max(1)) > left {
            return Err(self.error(format!("count {n} cannot fit in {left} bytes")));
        }
        Ok(n)
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u64()?;
        let n = usize::try_from(n).map_err(|_| self.error(format!("length {n} too large")))?;
        self.take(n)
    }

    pub(crate) fn str(&mut self) -> Result<&'a str, DecodeError> {
        let start = self.pos;
        let b = self.bytes()?;
        std::str::from_utf8(b).map_err(|_| DecodeError {
            offset: start,
            what: "string is not UTF-8".to_string(),
        })
    }

    /// Fails if bytes are left over: a payload with trailing data is not one
    /// this version wrote.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(self.error(format!(
                "{} unexpected trailing bytes",
                self.buf.len() - self.pos
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut e = Encoder::default();
        e.u32(7);
        e.u64(u64::MAX);
        e.f32(1.5);
        e.str("añadir");
        e.bytes(&[1, 2, 3]);
        e.count(2);
        let buf = e.finish();
        let mut d = Decoder::new(&buf);
        assert_eq!(d.u32(), Ok(7));
        assert_eq!(d.u64(), Ok(u64::MAX));
        assert_eq!(d.f32(), Ok(1.5));
        assert_eq!(d.str(), Ok("añadir"));
        assert_eq!(d.bytes(), Ok(&[1u8, 2, 3][..]));
        assert!(d.count(0).is_err(), "2 items cannot fit in 0 bytes");
    }

    #[test]
    fn truncation_and_garbage_are_errors() {
        let mut e = Encoder::default();
        e.str("hello");
        let buf = e.finish();
        for cut in 0..buf.len() {
            assert!(Decoder::new(&buf[..cut]).str().is_err(), "cut at {cut}");
        }
        let huge = u64::MAX.to_le_bytes();
        assert!(Decoder::new(&huge).bytes().is_err());
        let bad_utf8 = [2, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xfe];
        assert!(Decoder::new(&bad_utf8).str().is_err());
        let mut d = Decoder::new(&[1, 0, 0, 0, 9]);
        assert_eq!(d.u32(), Ok(1));
        assert!(d.finish().is_err());
    }
}
