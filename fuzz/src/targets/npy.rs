//! One `.npy` array.

use super::{Verdict, origin};

pub fn run(data: &[u8]) -> Verdict {
    Verdict::of(difi_formats::npy::parse(data, origin()))
}
