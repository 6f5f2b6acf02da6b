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
use crate::torch_legacy::{materialize, tensor_view};

/// Modules nest no deeper than this in any real network; a deeper file is refused.
const MAX_MODULE_DEPTH: usize = 64;
/// Modules in one network: EDM's largest has about 400. The memo can make
/// one module appear under many names, so the walk is bounded.
pub const MAX_MODULES: usize = 100_000;
/// Values converted to JSON for one module's constructor arguments.
pub const MAX_JSON_VALUES: usize = 100_000;
/// How many times the bytes of each storage may be read into tensors: a
/// network ties a few weights to one storage, a hostile pickle thousands.
pub const MAX_STORAGE_READS: u64 = 4;

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
    /// Reads the persistent network `value` of the pickle at `path`; `what`
    /// names the network in errors.
    pub fn read(value: &Value, what: &str, path: &Path) -> Result<Self> {
        let refuse = |message: &str| Error::checkpoint(path, format!("`{what}` {message}"));
        let (class_name, state) = persistent_object(value)
            .ok_or_else(|| refuse("is not a torch_utils.persistence object; is this a network pickle?"))?;
        if state.get("_init_args").and_then(Value::as_sequence).is_some_and(|a| !a.is_empty()) {
            return Err(refuse("was constructed with positional arguments, which is not supported"));
        }
        let kwargs = state.get("_init_kwargs").ok_or_else(|| refuse("has no constructor arguments"))?;
        let init_kwargs =
            to_json(kwargs, "_init_kwargs").map_err(|e| Error::checkpoint(path, format!("`{what}`: {e}")))?;
        let tensors = state_dict(value, path)?;
        Ok(PersistentModule { class_name: class_name.to_string(), init_kwargs, tensors })
    }
}

/// The `__dict__` of a pickled module: persistent or plain (`NEWOBJ` + `BUILD`).
fn module_state<'a>(value: &'a Value, name: &str, path: &Path) -> Result<&'a Value> {
    if let Some((_, state)) = persistent_object(value) {
        return Ok(state);
    }
    value
        .as_object()
        .and_then(|o| o.state.as_ref())
        .ok_or_else(|| Error::checkpoint(path, format!("module `{name}` is not a pickled torch module")))
}

/// The module's `state_dict()`: parameters and persistent buffers of it and
/// its submodules, named `sub.module.name` in module order; errors name
/// `path`. Walks the module tree with an explicit stack, so a hostile file
/// cannot exhaust the call stack, and bounds the modules visited and the
/// tensor bytes produced (see [`MAX_STORAGE_READS`]).
pub fn state_dict(module: &Value, path: &Path) -> Result<Vec<(String, Tensor)>> {
    let refuse = |message: String| Error::checkpoint(path, message);
    let mut out = Vec::new();
    let mut storages_seen = std::collections::HashSet::new();
    let (mut storage_bytes, mut tensor_elements) = (0u64, 0u64);
    let mut modules = 0usize;
    // Children are pushed in reverse so they pop in module order.
    let mut stack: Vec<(&Value, String, usize)> = vec![(module, String::new(), 0)];
    while let Some((module, prefix, depth)) = stack.pop() {
        if depth > MAX_MODULE_DEPTH {
            return Err(refuse(format!("module `{prefix}`: modules nest deeper than {MAX_MODULE_DEPTH} levels")));
        }
        modules += 1;
        if modules > MAX_MODULES {
            return Err(refuse(format!("more than {MAX_MODULES} modules")));
        }
        let state = module_state(module, &prefix, path)?;
        let non_persistent: Vec<&str> = match state.get("_non_persistent_buffers_set") {
            Some(Value::Set(items)) => items.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        for (field, skip) in [("_parameters", &[][..]), ("_buffers", &non_persistent[..])] {
            let Some(entries) = state.get(field).and_then(Value::as_mapping) else { continue };
            for (name, tensor) in entries {
                let name =
                    name.as_str().ok_or_else(|| refuse(format!("module `{prefix}`: {field} has a non-string key")))?;
                if matches!(tensor, Value::None) || skip.contains(&name) {
                    continue;
                }
                let key = format!("{prefix}{name}");
                let tensor_error = |e: Error| refuse(format!("tensor `{key}`: {e}"));
                let view = tensor_view(tensor).map_err(tensor_error)?;
                if storages_seen.insert(std::rc::Rc::as_ptr(view.storage) as *const u8) {
                    storage_bytes += view.storage.len() as u64;
                }
                // Counting elements against bytes keeps the bound loose for real files (elements are 2–8 bytes).
                tensor_elements = tensor_elements.saturating_add(view.numel() as u64);
                if tensor_elements > storage_bytes.saturating_mul(MAX_STORAGE_READS) {
                    return Err(refuse(format!(
                        "tensor `{key}`: the tensors read the same storages more than {MAX_STORAGE_READS} times over"
                    )));
                }
                let tensor = materialize(&view).map_err(tensor_error)?;
                out.push((key, tensor));
            }
        }
        if let Some(children) = state.get("_modules").and_then(Value::as_mapping) {
            let mut named = Vec::with_capacity(children.len());
            for (name, child) in children {
                let name =
                    name.as_str().ok_or_else(|| refuse(format!("module `{prefix}`: _modules has a non-string key")))?;
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
/// The number of values converted is bounded too: the memo can make a
/// small file's value tree enormous when expanded.
pub fn to_json(value: &Value, key: &str) -> Result<serde_json::Value> {
    json_at_depth(value, key, 0, &mut 0)
}

fn json_at_depth(value: &Value, key: &str, depth: usize, converted: &mut usize) -> Result<serde_json::Value> {
    use serde_json::Value as J;
    if depth > MAX_MODULE_DEPTH {
        return Err(Error::config(key, format!("nests deeper than {MAX_MODULE_DEPTH} levels")));
    }
    *converted += 1;
    if *converted > MAX_JSON_VALUES {
        return Err(Error::config(key, format!("holds more than {MAX_JSON_VALUES} values")));
    }
    let mut child = |v: &Value, k: String| json_at_depth(v, &k, depth + 1, converted);
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
