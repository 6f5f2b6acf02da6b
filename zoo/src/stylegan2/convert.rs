//! Reading StyleGAN2-ADA network pickles (`network-snapshot-*.pkl` and the
//! released networks) without Python, through the shared
//! `torch_utils.persistence` reader: the pickle is interpreted, never
//! executed. Its `G_ema` entry is the generator, a persistent `Generator`
//! whose constructor keywords describe the architecture.

use std::collections::HashMap;
use std::path::Path;

use difi_core::error::{Error, Result};
use difi_formats::torch_persistence::{PersistentModule, network_entry, read_network_pickle};
use difi_formats::weights;
use tch::{Device, Tensor};

use super::config::{GeneratorArgs, GeneratorConfig};
use super::network::{Sampling, StyleGan2Generator};

/// The pickle entry holding the generator difi converts (the EMA of the
/// trained `G`, what the reference's `generate.py` uses).
pub const GENERATOR_ENTRY: &str = "G_ema";

/// The `G_ema` generator of a StyleGAN2-ADA pickle.
pub struct ConvertedGenerator {
    /// Its constructor keywords, as pickled.
    pub kwargs: serde_json::Value,
    /// The architecture they describe, with the reference's defaults.
    pub config: GeneratorConfig,
    /// `state_dict()` in module order.
    pub tensors: Vec<(String, Tensor)>,
}

/// Reads the `G_ema` generator of a StyleGAN2-ADA pickle, refusing one whose
/// tensors are not exactly those of the architecture its arguments describe.
pub fn read_stylegan2_pickle(path: &Path) -> Result<ConvertedGenerator> {
    let refuse = |message: String| Error::checkpoint(path, message);
    let root = read_network_pickle(path)?;
    let entry = network_entry(&root, GENERATOR_ENTRY, path)?;
    let module = PersistentModule::read(entry, GENERATOR_ENTRY, path)?;
    if module.class_name != "Generator" {
        return Err(refuse(format!(
            "`{GENERATOR_ENTRY}` is a `{}`, not StyleGAN2-ADA's `Generator`",
            module.class_name
        )));
    }
    let config = GeneratorArgs::from_kwargs(&module.init_kwargs)
        .and_then(|args| args.resolve())
        .map_err(|e| refuse(format!("constructor arguments of `{GENERATOR_ENTRY}`: {e}")))?;
    let generator = ConvertedGenerator { kwargs: module.init_kwargs, config, tensors: module.tensors };
    generator.verify(path)?;
    Ok(generator)
}

impl ConvertedGenerator {
    /// Writes the weights under the reference's names, with the constructor
    /// arguments as `kwargs` metadata so the file is a complete generator.
    pub fn write(&self, out: &Path, source: &Path) -> Result<()> {
        let metadata = HashMap::from([
            ("kwargs".to_string(), self.kwargs.to_string()),
            ("source".to_string(), format!("difi convert stylegan2 {}", source.display())),
        ]);
        weights::save(out, &self.tensors, &metadata)
    }

    /// Checks that the tensors are exactly the generator's: every parameter
    /// and buffer present with its shape, nothing else. The values are
    /// counted first, so arguments describing a generator far larger than
    /// the pickle's tensors are refused before it is built.
    fn verify(&self, source: &Path) -> Result<()> {
        super::ensure_enough_values(&self.config, self.tensors.iter().map(|(_, t)| t), source)?;
        let mut generator = StyleGan2Generator::new(&self.config, Sampling::default(), Device::Cpu)?;
        let tensors: HashMap<String, Tensor> =
            self.tensors.iter().map(|(name, tensor)| (name.clone(), tensor.shallow_clone())).collect();
        if tensors.len() != self.tensors.len() {
            return Err(Error::checkpoint(source, "the generator names a tensor twice"));
        }
        generator.load_weights(&tensors, source)
    }

    /// Number of parameters and buffers written.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }
}
