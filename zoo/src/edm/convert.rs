//! Reading EDM network pickles (`network-snapshot-*.pkl`, the released
//! `edm-*.pkl`) without Python: the pickle is interpreted, never executed.
//!
//! Such a pickle is a dict whose `ema` entry is a `torch_utils.persistence`
//! object: `_reconstruct_persistent_obj(meta)` with the class name, the
//! module's source (ignored) and its state (`__dict__`: `_parameters`,
//! `_buffers`, `_modules` and the constructor's `_init_kwargs`). Tensors are
//! stored through `torch.storage._load_from_bytes` in torch's legacy format.

use std::collections::HashMap;
use std::path::Path;

use difi_core::checkpoint;
use difi_core::error::{Error, Result};
use difi_core::pickle::{self, Value};
use difi_core::torch_legacy::rebuild_tensor;
use tch::Tensor;

use super::config::{EdmNetworkArgs, EdmNetworkConfig, PrecondKind};

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

fn refuse(path: &Path, message: impl Into<String>) -> Error {
    Error::checkpoint(path, message)
}

/// Reads the `ema` network of an EDM pickle.
pub fn read_edm_pickle(path: &Path) -> Result<ConvertedNetwork> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.starts_with(b"PK\x03\x04") {
        return Err(refuse(
            path,
            "a zip archive (torch.save's format), not an EDM network pickle; convert the network-snapshot-*.pkl \
             that EDM's training writes",
        ));
    }
    if bytes.first() != Some(&0x80) {
        return Err(refuse(path, "not a Python pickle (protocol 2 or later)"));
    }
    let (root, _) = pickle::parse(&bytes).map_err(|e| refuse(path, e.to_string()))?;
    let keys: Vec<String> = root
        .as_mapping()
        .ok_or_else(|| refuse(path, "the pickle does not hold a dict; EDM network pickles hold {ema: …, …}"))?
        .iter()
        .filter_map(|(k, _)| k.as_str().map(str::to_string))
        .collect();
    let ema = root
        .get("ema")
        .ok_or_else(|| refuse(path, format!("no `ema` network in this pickle (keys: {})", keys.join(", "))))?;
    let (class_name, state) = persistent(ema)
        .ok_or_else(|| refuse(path, "`ema` is not a torch_utils.persistence object; is this an EDM network pickle?"))?;
    let precond = PrecondKind::from_class_name(class_name).map_err(|e| refuse(path, format!("`ema`: {e}")))?;
    if state.get("_init_args").and_then(Value::as_sequence).is_some_and(|a| !a.is_empty()) {
        return Err(refuse(path, "`ema` was constructed with positional arguments, which EDM never does"));
    }
    let kwargs_value = state.get("_init_kwargs").ok_or_else(|| refuse(path, "`ema` has no constructor arguments"))?;
    let kwargs = to_json(kwargs_value, "_init_kwargs").map_err(|e| refuse(path, e.to_string()))?;
    let config = EdmNetworkArgs::from_kwargs(precond, &kwargs)
        .and_then(|args| args.resolve())
        .map_err(|e| refuse(path, format!("constructor arguments of `ema`: {e}")))?;
    let mut tensors = Vec::new();
    collect_state(ema, "", &mut tensors).map_err(|e| refuse(path, e.to_string()))?;
    Ok(ConvertedNetwork { class_name: class_name.to_string(), kwargs, config, tensors })
}

/// `(class name, state)` of a `torch_utils.persistence` object.
fn persistent(value: &Value) -> Option<(&str, &Value)> {
    let object = value.as_object()?;
    if !object.is("torch_utils.persistence", "_reconstruct_persistent_obj") {
        return None;
    }
    let meta = object.args.first()?;
    Some((meta.get("class_name")?.as_str()?, meta.get("state")?))
}

/// The `__dict__` of a pickled module: persistent or plain (`NEWOBJ` + `BUILD`).
fn module_state<'a>(value: &'a Value, name: &str) -> Result<&'a Value> {
    if let Some((_, state)) = persistent(value) {
        return Ok(state);
    }
    value.as_object().and_then(|o| o.state.as_ref()).ok_or_else(|| Error::config(name, "is not a pickled torch module"))
}

/// Appends the module's `state_dict()` entries under `prefix`.
fn collect_state(module: &Value, prefix: &str, out: &mut Vec<(String, Tensor)>) -> Result<()> {
    let state = module_state(module, prefix)?;
    let non_persistent: Vec<&str> = match state.get("_non_persistent_buffers_set") {
        Some(Value::Set(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    for (field, skip) in [("_parameters", &[][..]), ("_buffers", &non_persistent[..])] {
        let Some(entries) = state.get(field).and_then(Value::as_mapping) else { continue };
        for (name, tensor) in entries {
            let name = name.as_str().ok_or_else(|| Error::config(prefix, format!("{field} has a non-string key")))?;
            if matches!(tensor, Value::None) || skip.contains(&name) {
                continue;
            }
            let key = format!("{prefix}{name}");
            let tensor = rebuild_tensor(tensor).map_err(|e| Error::config(&key, e.to_string()))?;
            out.push((key, tensor));
        }
    }
    if let Some(children) = state.get("_modules").and_then(Value::as_mapping) {
        for (name, child) in children {
            let name = name.as_str().ok_or_else(|| Error::config(prefix, "_modules has a non-string key"))?;
            if !matches!(child, Value::None) {
                collect_state(child, &format!("{prefix}{name}."), out)?;
            }
        }
    }
    Ok(())
}

/// Plain pickled data (numbers, strings, lists, dicts) as JSON.
fn to_json(value: &Value, key: &str) -> Result<serde_json::Value> {
    use serde_json::Value as J;
    Ok(match value {
        Value::None => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
        Value::Str(s) => J::String(s.to_string()),
        Value::Tuple(items) | Value::List(items) => {
            J::Array(items.iter().enumerate().map(|(i, v)| to_json(v, &format!("{key}[{i}]"))).collect::<Result<_>>()?)
        }
        other => match other.as_mapping() {
            Some(items) => {
                let mut map = serde_json::Map::new();
                for (k, v) in items {
                    let name = k.as_str().ok_or_else(|| Error::config(key, "has a non-string key"))?;
                    map.insert(name.to_string(), to_json(v, &format!("{key}.{name}"))?);
                }
                J::Object(map)
            }
            None => return Err(Error::config(key, "holds a value that is not plain data")),
        },
    })
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
        checkpoint::save(out, &self.tensors, &metadata)
    }

    /// Number of parameters and buffers written.
    pub fn tensor_count(&self) -> usize {
        self.tensors.len()
    }
}
