//! The pickle interpreter on raw bytes.

use super::Verdict;

pub fn run(data: &[u8]) -> Verdict {
    Verdict::of(difi_formats::pickle::parse(data))
}
