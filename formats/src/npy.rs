//! The NumPy `.npy` array encoding, decoded without trusting it: the header
//! (magic, version 1–3, a bounded Python dict literal with `descr`,
//! `fortran_order` and `shape`) is parsed by hand, and the byte count the
//! shape implies is computed with checked arithmetic and compared with the
//! bytes actually present before anything is allocated.

use std::io::Read;
use std::path::Path;

use difi_core::error::{Error, Result, TorchContext};
use tch::{Kind, Tensor};

/// `\x93NUMPY`: the first six bytes of every `.npy`.
const MAGIC: &[u8; 6] = b"\x93NUMPY";
/// numpy itself refuses headers above 10 000 bytes by default; real headers
/// are under 200. The bound keeps a hostile length field from allocating.
pub const MAX_HEADER_BYTES: usize = 65_536;
/// More dimensions than any tensor library supports.
pub const MAX_DIMS: usize = 64;

/// What an `.npy` header says about the array that follows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    pub kind: Kind,
    pub fortran_order: bool,
    pub shape: Vec<i64>,
    /// Bytes of the array data: the product of `shape` times the item size.
    pub data_bytes: u64,
}

fn bad(origin: &Path, message: impl Into<String>) -> Error {
    Error::checkpoint(origin, format!("not a readable .npy array: {}", message.into()))
}

/// Reads the magic, version and header from `reader`, leaving it at the
/// first data byte. Returns the header and the bytes it took.
pub fn read_header(reader: &mut impl Read, origin: &Path) -> Result<(Header, u64)> {
    let mut preamble = [0u8; 8];
    reader.read_exact(&mut preamble).map_err(|_| bad(origin, "shorter than the 8-byte preamble"))?;
    if &preamble[..6] != MAGIC {
        return Err(bad(origin, "no \\x93NUMPY magic"));
    }
    let (major, minor) = (preamble[6], preamble[7]);
    let length_bytes = match major {
        1 => 2,
        2 | 3 => 4,
        _ => return Err(bad(origin, format!("unsupported format version {major}.{minor}"))),
    };
    let mut length = [0u8; 4];
    reader.read_exact(&mut length[..length_bytes]).map_err(|_| bad(origin, "truncated in the header length"))?;
    let header_len = u32::from_le_bytes(length) as usize;
    if header_len > MAX_HEADER_BYTES {
        return Err(bad(origin, format!("header of {header_len} bytes (at most {MAX_HEADER_BYTES} accepted)")));
    }
    let mut text = vec![0u8; header_len];
    reader.read_exact(&mut text).map_err(|_| bad(origin, format!("truncated in its {header_len}-byte header")))?;
    // Versions 1 and 2 are latin-1; every character of a valid header is ASCII either way.
    let text = std::str::from_utf8(&text).map_err(|_| bad(origin, "header is not text"))?;
    let header = parse_header(text).map_err(|message| bad(origin, message))?;
    Ok((header, (8 + length_bytes + header_len) as u64))
}

/// Decodes a whole `.npy` held in memory.
pub fn parse(bytes: &[u8], origin: &Path) -> Result<Tensor> {
    let mut reader = bytes;
    let (header, header_bytes) = read_header(&mut reader, origin)?;
    let present = bytes.len() as u64 - header_bytes;
    if present != header.data_bytes {
        return Err(bad(origin, data_mismatch(&header, present)));
    }
    to_tensor(&header, reader, origin)
}

/// Says how the bytes present differ from what the header needs.
pub fn data_mismatch(header: &Header, present: u64) -> String {
    format!(
        "shape {:?} of {:?} needs {} data bytes, the file holds {present}",
        header.shape, header.kind, header.data_bytes
    )
}

/// The array of `header` from exactly `header.data_bytes` bytes of `data`.
pub fn to_tensor(header: &Header, data: &[u8], origin: &Path) -> Result<Tensor> {
    if data.len() as u64 != header.data_bytes {
        return Err(bad(origin, data_mismatch(header, data.len() as u64)));
    }
    if header.kind == Kind::Bool && data.iter().any(|&b| b > 1) {
        return Err(bad(origin, "a bool array holds a byte other than 0 or 1"));
    }
    if !header.fortran_order {
        return Tensor::f_from_data_size(data, &header.shape, header.kind).ctx("npy array");
    }
    // Fortran order is C order of the reversed shape, transposed back.
    let reversed: Vec<i64> = header.shape.iter().rev().copied().collect();
    let axes: Vec<i64> = (0..header.shape.len() as i64).rev().collect();
    Tensor::f_from_data_size(data, &reversed, header.kind)
        .and_then(|t| t.f_permute(&axes[..]))
        .and_then(|t| t.f_contiguous())
        .ctx("npy array")
}

/// The dtype of a `descr` string: little-endian (or byte-sized) numbers only.
fn kind_of(descr: &str) -> std::result::Result<Kind, String> {
    let (order, code) = descr.split_at_checked(1).ok_or_else(|| format!("unsupported dtype `{descr}`"))?;
    let little = match order {
        "<" | "|" => true,
        "=" => cfg!(target_endian = "little"),
        ">" => false,
        _ => return Err(format!("unsupported dtype `{descr}`")),
    };
    let kind = match code {
        "f2" => Kind::Half,
        "f4" => Kind::Float,
        "f8" => Kind::Double,
        "i1" => Kind::Int8,
        "i2" => Kind::Int16,
        "i4" => Kind::Int,
        "i8" => Kind::Int64,
        "u1" => Kind::Uint8,
        "b1" => Kind::Bool,
        _ => {
            return Err(format!("unsupported dtype `{descr}` (supported: f2 f4 f8 i1 i2 i4 i8 u1 b1, little-endian)"));
        }
    };
    if !little && kind.elt_size_in_bytes() > 1 {
        return Err(format!("big-endian dtype `{descr}` is not supported; save with arr.astype('<{code}')"));
    }
    Ok(kind)
}

/// Parses the header dict `{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }`.
pub fn parse_header(text: &str) -> std::result::Result<Header, String> {
    let mut lexer = Lexer { rest: text };
    lexer.expect('{')?;
    let (mut descr, mut fortran_order, mut shape) = (None, None, None);
    while !lexer.eat('}') {
        let key = lexer.string()?;
        lexer.expect(':')?;
        let slot_taken = match key.as_str() {
            "descr" => descr.replace(lexer.string()?).is_some(),
            "fortran_order" => fortran_order.replace(lexer.boolean()?).is_some(),
            "shape" => shape.replace(lexer.shape()?).is_some(),
            other => return Err(format!("unexpected header key `{other}`")),
        };
        if slot_taken {
            return Err(format!("header key `{key}` appears twice"));
        }
        if !lexer.eat(',') {
            lexer.expect('}')?;
            break;
        }
    }
    if !lexer.rest.trim().is_empty() {
        return Err("text after the header dict".into());
    }
    let descr = descr.ok_or("header has no `descr`")?;
    let kind = kind_of(&descr)?;
    let fortran_order = fortran_order.ok_or("header has no `fortran_order`")?;
    let shape: Vec<u64> = shape.ok_or("header has no `shape`")?;
    let overflow = || format!("shape {shape:?} overflows");
    let elements = shape.iter().try_fold(1u64, |acc, &n| acc.checked_mul(n)).ok_or_else(overflow)?;
    let data_bytes = elements.checked_mul(kind.elt_size_in_bytes() as u64).ok_or_else(overflow)?;
    let shape = shape.iter().map(|&n| i64::try_from(n).map_err(|_| overflow())).collect::<Result<_, _>>()?;
    Ok(Header { kind, fortran_order, shape, data_bytes })
}

/// Tokens of the small subset of Python literals a header uses.
struct Lexer<'a> {
    rest: &'a str,
}

impl Lexer<'_> {
    fn skip_space(&mut self) {
        self.rest = self.rest.trim_start();
    }

    fn eat(&mut self, c: char) -> bool {
        self.skip_space();
        match self.rest.strip_prefix(c) {
            Some(rest) => {
                self.rest = rest;
                true
            }
            None => false,
        }
    }

    fn expect(&mut self, c: char) -> std::result::Result<(), String> {
        if self.eat(c) { Ok(()) } else { Err(format!("malformed header: expected `{c}`")) }
    }

    fn string(&mut self) -> std::result::Result<String, String> {
        self.skip_space();
        let quote = match self.rest.chars().next() {
            Some(q @ ('\'' | '"')) => q,
            _ => return Err("malformed header: expected a quoted string".into()),
        };
        let body = &self.rest[1..];
        let end = body.find(quote).ok_or("malformed header: unterminated string")?;
        if body[..end].contains('\\') {
            return Err("malformed header: escapes in a string".into());
        }
        self.rest = &body[end + 1..];
        Ok(body[..end].to_string())
    }

    fn boolean(&mut self) -> std::result::Result<bool, String> {
        self.skip_space();
        for (word, value) in [("True", true), ("False", false)] {
            if let Some(rest) = self.rest.strip_prefix(word) {
                self.rest = rest;
                return Ok(value);
            }
        }
        Err("malformed header: `fortran_order` is not True or False".into())
    }

    fn integer(&mut self) -> std::result::Result<u64, String> {
        self.skip_space();
        let digits = self.rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(self.rest.len());
        if digits == 0 {
            return Err("malformed header: a shape entry is not a non-negative integer".into());
        }
        let value = self.rest[..digits].parse().map_err(|_| "a shape entry overflows".to_string())?;
        self.rest = &self.rest[digits..];
        // Python 2 wrote long integers with an `L` suffix.
        self.rest = self.rest.strip_prefix('L').unwrap_or(self.rest);
        Ok(value)
    }

    fn shape(&mut self) -> std::result::Result<Vec<u64>, String> {
        self.expect('(')?;
        let mut dims = Vec::new();
        while !self.eat(')') {
            if dims.len() == MAX_DIMS {
                return Err(format!("more than {MAX_DIMS} dimensions"));
            }
            dims.push(self.integer()?);
            if !self.eat(',') {
                self.expect(')')?;
                break;
            }
        }
        Ok(dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_headers_numpy_writes() {
        let h = parse_header("{'descr': '<f8', 'fortran_order': False, 'shape': (128,), }").unwrap();
        assert_eq!((h.kind, h.fortran_order, h.shape, h.data_bytes), (Kind::Double, false, vec![128], 1024));
        let h = parse_header("{'descr': '|u1', 'fortran_order': True, 'shape': (2, 3), }      \n").unwrap();
        assert_eq!((h.kind, h.fortran_order, h.shape, h.data_bytes), (Kind::Uint8, true, vec![2, 3], 6));
        let h = parse_header("{\"descr\": \"<i8\", \"fortran_order\": False, \"shape\": ()}").unwrap();
        assert_eq!((h.shape, h.data_bytes), (vec![], 8));
    }

    #[test]
    fn refuses_malformed_headers() {
        for (header, expected) in [
            ("{'descr': '>f4', 'fortran_order': False, 'shape': (2,), }", "big-endian"),
            ("{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", "unsupported dtype"),
            ("{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", "quoted string"),
            ("{'descr': '<f4', 'fortran_order': False}", "no `shape`"),
            ("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': ()}", "twice"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,)}", "non-negative"),
            ("{'descr': '<f8', 'fortran_order': False, 'shape': (4294967296, 4294967296)}", "overflows"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,)}", "overflows"),
            ("{'descr': '<f4', 'fortran_order': Maybe, 'shape': ()}", "True or False"),
            ("{'descr': '<f4', 'fortran_order': False, 'shape': (), 'x': 1}", "unexpected header key"),
        ] {
            let err = parse_header(header).unwrap_err();
            assert!(err.contains(expected), "{header}: {err}");
        }
    }
}
