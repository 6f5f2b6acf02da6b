//! Network pickles of NVIDIA's `torch_utils.persistence` (EDM's
//! `network-snapshot-*.pkl` and `edm-*.pkl`, StyleGAN2-ADA's `network-*.pkl`),
//! read without Python: the pickle is interpreted, never executed.
//!
//! Such a pickle is a dict of networks (`ema` in EDM's, `G_ema` in
//! StyleGAN2-ADA's). Each network is `_reconstruct_persistent_obj(meta)` with
//! the class name, the module's source (ignored) and its state (`__dict__`:
//! `_parameters`, `_buffers`, `_modules` and the constructor's
//! `_init_kwargs`). Submodules are persistent objects or plain pickled
//! modules (`NEWOBJ` + `BUILD`); tensors are stored in torch's legacy format
//! ([`crate::torch_legacy`]).

use std::path::Path;

use difi_core::error::{Error, Result};
use tch::Tensor;

use crate::pickle::{self, Value};
use crate::torch_legacy::rebuild_tensor;

/// Modules nest no deeper than this in any real network; a deeper file is refused.
const MAX_MODULE_DEPTH: usize = 64;

/// A network read from a persistence pickle.
pub struct PersistentModule {
    /// The Python class name (`EDMPrecond`, `Generator`, …).
    pub class_name: String,
    /// Its constructor keywords (`_init_kwargs`) as JSON.
    pub init_kwargs: serde_json::Value,
    /// `state_dict()`: parameters and persistent buffers, in module order.
    pub tensors: Vec<(String, Tensor)>,
}

/// Reads a network pickle's top-level value, refusing what is not one.
pub fn read_network_pickle(path: &Path) -> Result<Value> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.starts_with(b"PK\x03\x04") {
        return Err(Error::checkpoint(
            path,
            "a zip archive (torch.save's format), not a network pickle; convert the network-snapshot-*.pkl \
             that the training code writes",
        ));
    }
    if bytes.first() != Some(&0x80) {
        return Err(Error::checkpoint(path, "not a Python pickle (protocol 2 or later)"));
    }
    let (root, _) = pickle::parse(&bytes).map_err(|e| Error::checkpoint(path, e.to_string()))?;
    Ok(root)
}

/// The network stored under `key` (`ema`, `G_ema`) of a network pickle's dict.
pub fn network_entry<'a>(root: &'a Value, key: &str, path: &Path) -> Result<&'a Value> {
    let keys: Vec<String> = root
        .as_mapping()
        .ok_or_else(|| Error::checkpoint(path, format!("the pickle does not hold a dict; expected {{{key}: …, …}}")))?
        .iter()
        .filter_map(|(k, _)| k.as_str().map(str::to_string))
        .collect();
    root.get(key).ok_or_else(|| {
        Error::checkpoint(path, format!("no `{key}` network in this pickle (keys: {})", keys.join(", ")))
    })
}

/// `(class name, state)` of a `torch_utils.persistence` object.
pub fn persistent_object(value: &Value) -> Option<(&str, &Value)> {
    let object = value.as_object()?;
    if !object.is("torch_utils.persistence", "_reconstruct_persistent_obj") {
        return None;
    }
    let meta = object.args.first()?;
    Some((meta.get("class_name")?.as_str()?, meta.get("state")?))
}

impl PersistentModule {
    /// Reads the persistent network `value`; `what` names it in errors.
    pub fn read(value: &Value, what: &str) -> Result<Self> {
        let (class_name, state) = persistent_object(value)
            .ok_or_else(|| Error::config(what, "is not a torch_utils.persistence object; is this a network pickle?"))?;
        if state.get("_init_args").and_then(Value::as_sequence).is_some_and(|a| !a.is_empty()) {
            return Err(Error::config(what, "was constructed with positional arguments, which is not supported"));
        }
        let kwargs = state.get("_init_kwargs").ok_or_else(|| Error::config(what, "has no constructor arguments"))?;
        let init_kwargs = to_json(kwargs, "_init_kwargs")?;
        let tensors = state_dict(value)?;
        Ok(PersistentModule { class_name: class_name.to_string(), init_kwargs, tensors })
    }
}

/// The `__dict__` of a pickled module: persistent or plain (`NEWOBJ` + `BUILD`).
fn module_state<'a>(value: &'a Value, name: &str) -> Result<&'a Value> {
    if let Some((_, state)) = persistent_object(value) {
        return Ok(state);
    }
    value.as_object().and_then(|o| o.state.as_ref()).ok_or_else(|| Error::config(name, "is not a pickled torch module"))
}

/// The module's `state_dict()`: parameters and persistent buffers of it and
/// its submodules, named `sub.module.name` in module order. Walks the module
/// tree with an explicit stack, so a hostile file cannot exhaust the call stack.
pub fn state_dict(module: &Value) -> Result<Vec<(String, Tensor)>> {
    let mut out = Vec::new();
    // Children are pushed in reverse so they pop in module order.
    let mut stack: Vec<(&Value, String, usize)> = vec![(module, String::new(), 0)];
    while let Some((module, prefix, depth)) = stack.pop() {
        if depth > MAX_MODULE_DEPTH {
            return Err(Error::config(&prefix, format!("modules nest deeper than {MAX_MODULE_DEPTH} levels")));
        }
        let state = module_state(module, &prefix)?;
        let non_persistent: Vec<&str> = match state.get("_non_persistent_buffers_set") {
            Some(Value::Set(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        for (field, skip) in [("_parameters", &[][..]), ("_buffers", &non_persistent[..])] {
            let Some(entries) = state.get(field).and_then(Value::as_mapping) else { continue };
            for (name, tensor) in entries {
                let name =
                    name.as_str().ok_or_else(|| Error::config(&prefix, format!("{field} has a non-string key")))?;
                if matches!(tensor, Value::None) || skip.contains(&name) {
                    continue;
                }
                let key = format!("{prefix}{name}");
                let tensor = rebuild_tensor(tensor).map_err(|e| Error::config(&key, e.to_string()))?;
                out.push((key, tensor));
            }
        }
        if let Some(children) = state.get("_modules").and_then(Value::as_mapping) {
            let mut named = Vec::with_capacity(children.len());
            for (name, child) in children {
                let name = name.as_str().ok_or_else(|| Error::config(&prefix, "_modules has a non-string key"))?;
                if !matches!(child, Value::None) {
                    named.push((child, format!("{prefix}{name}."), depth + 1));
                }
            }
            stack.extend(named.into_iter().rev());
        }
    }
    Ok(out)
}

/// Plain pickled data (numbers, strings, lists, dicts) as JSON; `key` names
/// the value in errors. Nesting is bounded (constructor arguments are shallow).
pub fn to_json(value: &Value, key: &str) -> Result<serde_json::Value> {
    json_at_depth(value, key, 0)
}

fn json_at_depth(value: &Value, key: &str, depth: usize) -> Result<serde_json::Value> {
    use serde_json::Value as J;
    if depth > MAX_MODULE_DEPTH {
        return Err(Error::config(key, format!("nests deeper than {MAX_MODULE_DEPTH} levels")));
    }
    let child = |v: &Value, k: String| json_at_depth(v, &k, depth + 1);
    Ok(match value {
        Value::None => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map(J::Number).unwrap_or(J::Null),
        Value::Str(s) => J::String(s.to_string()),
        Value::Tuple(items) | Value::List(items) => {
            J::Array(items.iter().enumerate().map(|(i, v)| child(v, format!("{key}[{i}]"))).collect::<Result<_>>()?)
        }
        other => match other.as_mapping() {
            Some(items) => {
                let mut map = serde_json::Map::new();
                for (k, v) in items {
                    let name = k.as_str().ok_or_else(|| Error::config(key, "has a non-string key"))?;
                    map.insert(name.to_string(), child(v, format!("{key}.{name}"))?);
                }
                J::Object(map)
            }
            None => return Err(Error::config(key, "holds a value that is not plain data")),
        },
    })
}
