//! Reading a stream that a header or a limit says is at most so long: more
//! bytes than that are an error, not a bigger buffer, so a decompression
//! bomb or a lying header costs at most the limit.

use std::io::{self, Read};

/// A reader that fails once more than `limit` bytes come out of `inner`.
pub struct Capped<R> {
    inner: R,
    left: u64,
    limit: u64,
}

impl<R: Read> Capped<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        Capped { inner, left: limit, limit }
    }
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.left == 0 {
            // At the limit: only the end of the stream is acceptable.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("longer than the {} bytes difi reads here", self.limit),
                )),
            };
        }
        let allowed = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..allowed])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// All of `reader`, or an error if it holds more than `limit` bytes.
pub fn read_at_most(reader: impl Read, limit: u64) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    Capped::new(reader, limit).read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_up_to_the_limit_are_read_and_longer_ones_refused() {
        assert_eq!(read_at_most(&[1u8, 2, 3][..], 3).unwrap(), [1, 2, 3]);
        assert_eq!(read_at_most(&[1u8, 2][..], 3).unwrap(), [1, 2]);
        let err = read_at_most(&[0u8; 10][..], 3).unwrap_err();
        assert!(err.to_string().contains("longer than the 3 bytes"), "{err}");
        assert!(read_at_most(io::repeat(0), 1 << 20).is_err(), "an endless stream ends in an error");
    }
}
