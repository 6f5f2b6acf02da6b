//! Reading EDM network pickles (`network-snapshot-*.pkl`, the released
//! `edm-*.pkl`) without Python, through the shared `torch_utils.persistence`
//! reader: the pickle is interpreted, never executed. Its `ema` entry is the
//! network: a preconditioner (`EDMPrecond`, `VPPrecond`, `VEPrecond`) whose
//! constructor keywords describe the architecture.

use std::collections::HashMap;
use std::path::Path;

use difi_core::error::{Error, Result};
use difi_formats::torch_persistence::{PersistentModule, network_entry, read_network_pickle};
use difi_formats::weights;
use tch::{Device, Tensor};

use super::config::{EdmNetworkArgs, EdmNetworkConfig, PrecondKind};
use super::network::{EdmNetwork, Precision};

/// The `ema` network of an EDM pickle.
pub struct ConvertedNetwork {
    /// EDM's class name of the preconditioner (`EDMPrecond`, …).
    pub class_name: String,
    /// Its constructor keywords, as pickled.
    pub kwargs: serde_json::Value,
    /// The architecture they describe, with EDM's defaults.
    pub config: EdmNetworkConfig,
    /// `state_dict()` in module order.
    pub tensors: Vec<(String, Tensor)>,
}

/// Reads the `ema` network of an EDM pickle.
pub fn read_edm_pickle(path: &Path) -> Result<ConvertedNetwork> {
    let refuse = |message: String| Error::checkpoint(path, message);
    let root = read_network_pickle(path)?;
    let ema = network_entry(&root, "ema", path)?;
    let module = PersistentModule::read(ema, "ema", path)?;
    let precond = PrecondKind::from_class_name(&module.class_name).map_err(|e| refuse(format!("`ema`: {e}")))?;
    let config = EdmNetworkArgs::from_kwargs(precond, &module.init_kwargs)
        .and_then(|args| args.resolve())
        .map_err(|e| refuse(format!("constructor arguments of `ema`: {e}")))?;
    let network =
        ConvertedNetwork { class_name: module.class_name, kwargs: module.init_kwargs, config, tensors: module.tensors };
    network.verify(path)?;
    Ok(network)
}

impl ConvertedNetwork {
    /// Writes the weights under EDM's names, with the architecture as
    /// metadata (`precond`, `kwargs`) so the file is a complete teacher.
    pub fn write(&self, out: &Path, source: &Path) -> Result<()> {
        let metadata = HashMap::from([
            ("precond".to_string(), self.class_name.clone()),
            ("kwargs".to_string(), self.kwargs.to_string()),
            ("source".to_string(), format!("difi convert edm {}", source.display())),
        ]);
        weights::save(out, &self.tensors, &metadata)
    }

    /// Checks that the tensors are exactly the network's: every parameter
    /// and buffer of the architecture present with its shape, nothing else.
    /// The values are counted against the architecture first, so a pickle
    /// whose constructor arguments describe a network far larger than its
    /// tensors is refused before that network is built.
    fn verify(&self, source: &Path) -> Result<()> {
        super::ensure_enough_values(&self.config, self.tensors.iter().map(|(_, t)| t), source)?;
        let mut network = EdmNetwork::new(&self.config, Precision::Fp32, Device::Cpu)?;
        let tensors: HashMap<String, Tensor> =
            self.tensors.iter().map(|(name, tensor)| (name.clone(), tensor.shallow_clone())).collect();
        network.load_weights(&tensors, source)
    }

    /// Number of parameters and buffers written.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }
}
