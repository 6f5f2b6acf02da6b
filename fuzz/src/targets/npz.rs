//! An `.npz` archive of arrays.

use super::{Verdict, origin};

pub fn run(data: &[u8]) -> Verdict {
    Verdict::of(difi_formats::npz::parse_npz(std::io::Cursor::new(data), origin()))
}
