//! A `torch_utils.persistence` network pickle: the dict's `ema` entry read
//! into class name, constructor arguments and tensors.

use difi_formats::pickle;
use difi_formats::torch_persistence::{PersistentModule, network_entry};

use super::{Verdict, origin};

pub fn run(data: &[u8]) -> Verdict {
    Verdict::of(pickle::parse(data).and_then(|(root, _)| {
        let ema = network_entry(&root, "ema", origin())?;
        PersistentModule::read(ema, "ema", origin())
    }))
}
