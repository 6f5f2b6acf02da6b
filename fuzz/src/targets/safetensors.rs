//! A teacher or weights file, loaded from disk as `difi` loads teachers.

use super::{Verdict, scratch_dir};

pub fn run(data: &[u8]) -> Verdict {
    let path = scratch_dir().join("weights.safetensors");
    if let Err(err) = std::fs::write(&path, data) {
        return Verdict::Refused(format!("writing the input: {err}"));
    }
    Verdict::of(difi_formats::weights::load(&path))
}
