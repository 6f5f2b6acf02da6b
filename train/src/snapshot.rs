//! What a snapshot holds: the weights of every trained and EMA part
//! (`<part>.safetensors`, under the networks' own parameter names), each
//! trained part's optimiser moments (`adam_<part>.safetensors`) and where
//! training stands (`state.json`); enough to resume the exact trajectory.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use difi_core::error::{Error, Result};
use difi_formats::atomic::write_atomically;
use difi_formats::weights;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::optim::Adam;
use crate::step::PartRole;

/// The training state file of a snapshot.
pub const STATE_FILE: &str = "state.json";

/// The weights file of part `name` in a snapshot directory.
pub fn weights_file(name: &str) -> String {
    format!("{name}.safetensors")
}

/// The optimiser file of trained part `name` in a snapshot directory.
pub fn optimizer_file(name: &str) -> String {
    format!("adam_{name}.safetensors")
}

/// Where a run stands; saved in every snapshot as `state.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Iterations done.
    pub iteration: u64,
    /// Samples seen by iterations so far.
    pub nimg: u64,
    /// Warm-up updates done.
    pub warmup_done: u64,
    /// Updates applied by each part's optimiser (drives bias correction and
    /// learning-rate warm-up).
    pub optimizer_steps: BTreeMap<String, u64>,
    /// Ticks completed, and the sample count at which the current tick began.
    pub tick: u64,
    pub tick_start_nimg: u64,
    /// Consecutive iterations whose loss was not finite.
    pub nonfinite_streak: u64,
    /// Wall-clock seconds spent training, over all sessions of the run.
    pub elapsed_s: f64,
    /// Processes that shared each batch when the snapshot was written (0 in
    /// snapshots from before difi recorded it: one process).
    #[serde(default)]
    pub world_size: u64,
}

/// A part's variables as the runner keeps them: shallow clones sorted by
/// name, so saving and loading reach the network's own tensors.
pub struct PartVariables {
    pub name: &'static str,
    pub role: PartRole,
    pub variables: Vec<(String, Tensor)>,
}

impl PartVariables {
    /// Whether snapshots hold this part (trained and EMA parts).
    pub fn is_saved(&self) -> bool {
        self.role != PartRole::Frozen
    }
}

/// Writes the parts, the optimisers and the state into `dir`.
pub fn save(
    dir: &Path,
    parts: &[PartVariables],
    optimizers: &BTreeMap<String, Adam>,
    state: &TrainState,
) -> Result<()> {
    let meta = |role: &str| {
        HashMap::from([
            ("difi_role".to_string(), role.to_string()),
            ("iteration".to_string(), state.iteration.to_string()),
            ("kimg".to_string(), format!("{}", state.nimg as f64 / 1000.0)),
        ])
    };
    for part in parts.iter().filter(|p| p.is_saved()) {
        weights::save(&dir.join(weights_file(part.name)), &part.variables, &meta(part.name))?;
    }
    for (name, optimizer) in optimizers {
        let role = format!("adam_{name}");
        weights::save(&dir.join(optimizer_file(name)), &optimizer.state_tensors(), &meta(&role))?;
    }
    let state = serde_json::to_string_pretty(state).expect("state serialises");
    write_atomically(&dir.join(STATE_FILE), state.as_bytes())
}

/// Restores the parts and optimisers from `dir`; returns its state.
pub fn load(dir: &Path, parts: &[PartVariables], optimizers: &mut BTreeMap<String, Adam>) -> Result<TrainState> {
    let state_path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| Error::checkpoint(&state_path, e.to_string()))?;
    for part in parts.iter().filter(|p| p.is_saved()) {
        let path = dir.join(weights_file(part.name));
        weights::copy_into_variables(&part.variables, &weights::load(&path)?.into_map(), &path)?;
    }
    for (name, optimizer) in optimizers.iter_mut() {
        let path = dir.join(optimizer_file(name));
        let steps = state
            .optimizer_steps
            .get(name)
            .copied()
            .ok_or_else(|| Error::checkpoint(&state_path, format!("no optimiser step count for `{name}`")))?;
        optimizer.load_state(&weights::load(&path)?.into_map(), steps, &path)?;
    }
    Ok(state)
}
