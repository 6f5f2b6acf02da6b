//! torch's legacy storage format, and tensors rebuilt from a pickled
//! `_rebuild_tensor_v2(_load_from_bytes(...), ...)`: the same bytes are
//! tried both ways.

use difi_formats::{pickle, torch_legacy};

use super::Verdict;

pub fn run(data: &[u8]) -> Verdict {
    let storage = Verdict::of(torch_legacy::load_legacy_storage(data));
    let tensor = Verdict::of(pickle::parse(data).and_then(|(value, _)| torch_legacy::rebuild_tensor(&value)));
    storage.and(tensor)
}
