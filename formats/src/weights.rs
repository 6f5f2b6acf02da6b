//! Safetensors weight files: named tensors (under the reference implementations'
//! parameter names) plus string metadata. Writes are atomic; loads into a
//! network are strict (every key present, none unexpected, shapes equal).

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};

use difi_core::error::{Error, Result, TorchContext};

/// Named tensors with the file's metadata.
pub struct TensorFile {
    /// Tensors in file order, on the CPU.
    pub tensors: Vec<(String, Tensor)>,
    /// The `__metadata__` strings.
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    /// The tensors by name.
    pub fn into_map(self) -> HashMap<String, Tensor> {
        self.tensors.into_iter().collect()
    }
}

fn dtype_of(kind: Kind) -> Option<Dtype> {
    Some(match kind {
        Kind::Float => Dtype::F32,
        Kind::Double => Dtype::F64,
        Kind::Half => Dtype::F16,
        Kind::BFloat16 => Dtype::BF16,
        Kind::Int64 => Dtype::I64,
        Kind::Int => Dtype::I32,
        Kind::Int16 => Dtype::I16,
        Kind::Int8 => Dtype::I8,
        Kind::Uint8 => Dtype::U8,
        Kind::Bool => Dtype::BOOL,
        _ => return None,
    })
}

fn kind_of(dtype: Dtype) -> Option<Kind> {
    Some(match dtype {
        Dtype::F32 => Kind::Float,
        Dtype::F64 => Kind::Double,
        Dtype::F16 => Kind::Half,
        Dtype::BF16 => Kind::BFloat16,
        Dtype::I64 => Kind::Int64,
        Dtype::I32 => Kind::Int,
        Dtype::I16 => Kind::Int16,
        Dtype::I8 => Kind::Int8,
        Dtype::U8 => Kind::Uint8,
        Dtype::BOOL => Kind::Bool,
        _ => return None,
    })
}

/// Writes `tensors` with `metadata` to `path` through a temporary file and a
/// rename, so an interrupted write never leaves a truncated file behind.
pub fn save(path: &Path, tensors: &[(String, Tensor)], metadata: &HashMap<String, String>) -> Result<()> {
    let mut buffers = Vec::with_capacity(tensors.len());
    for (name, tensor) in tensors {
        let kind = tensor.f_kind().ctx(name)?;
        let dtype = dtype_of(kind).ok_or_else(|| {
            Error::checkpoint(path, format!("`{name}` has dtype {kind:?}, which safetensors cannot hold"))
        })?;
        let cpu = tensor.f_to_device(Device::Cpu).ctx(name)?.f_contiguous().ctx(name)?;
        let bytes = cpu.numel() * kind.elt_size_in_bytes();
        let mut data = vec![0u8; bytes];
        cpu.f_copy_data_u8(&mut data, cpu.numel()).ctx(name)?;
        let shape: Vec<usize> = cpu.size().iter().map(|&d| d as usize).collect();
        buffers.push((name.clone(), dtype, shape, data));
    }
    let views = buffers
        .iter()
        .map(|(name, dtype, shape, data)| {
            TensorView::new(*dtype, shape.clone(), data)
                .map(|view| (name.clone(), view))
                .map_err(|e| Error::checkpoint(path, format!("`{name}`: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = if metadata.is_empty() { None } else { Some(metadata.clone()) };
    crate::atomic::write_with(path, |tmp| {
        safetensors::serialize_to_file(views, metadata, tmp).map_err(|e| Error::checkpoint(tmp, e.to_string()))
    })
}

/// Reads only the `__metadata__` strings of a safetensors file (its header).
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut length = [0u8; 8];
    file.read_exact(&mut length).map_err(|e| Error::checkpoint(path, format!("not a safetensors file: {e}")))?;
    let length = u64::from_le_bytes(length);
    let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if length > size.saturating_sub(8) || length > 100 << 20 {
        return Err(Error::checkpoint(path, "not a safetensors file: header length out of range"));
    }
    let mut header = vec![0u8; length as usize];
    file.read_exact(&mut header).map_err(|e| Error::checkpoint(path, format!("truncated header: {e}")))?;
    let header: serde_json::Value = serde_json::from_slice(&header)
        .map_err(|e| Error::checkpoint(path, format!("not a safetensors file: header is not JSON: {e}")))?;
    let mut metadata = HashMap::new();
    if let Some(map) = header.get("__metadata__").and_then(|m| m.as_object()) {
        for (key, value) in map {
            if let Some(text) = value.as_str() {
                metadata.insert(key.clone(), text.to_string());
            }
        }
    }
    Ok(metadata)
}

/// Reads every tensor and the metadata of a safetensors file onto the CPU.
pub fn load(path: &Path) -> Result<TensorFile> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    parse(&bytes, path)
}

/// Reads tensors and metadata from safetensors bytes (`origin` names them in errors).
pub fn parse(bytes: &[u8], origin: &Path) -> Result<TensorFile> {
    let path = origin;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::checkpoint(path, format!("not a safetensors file: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let file =
        SafeTensors::deserialize(bytes).map_err(|e| Error::checkpoint(path, format!("not a safetensors file: {e}")))?;
    let names = header.offset_keys();
    let mut tensors = Vec::with_capacity(names.len());
    for name in names {
        let view = file.tensor(&name).map_err(|e| Error::checkpoint(path, format!("`{name}`: {e}")))?;
        let kind = kind_of(view.dtype())
            .ok_or_else(|| Error::checkpoint(path, format!("`{name}` has unsupported dtype {:?}", view.dtype())))?;
        let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
        let tensor = Tensor::f_from_data_size(view.data(), &shape, kind).ctx(&name)?;
        tensors.push((name, tensor));
    }
    Ok(TensorFile { tensors, metadata })
}

/// Copies the tensors of `path` into `vs`: every variable must be in the
/// file with its shape, and the file may hold nothing else. Values are cast
/// to each variable's dtype and device.
pub fn load_into(vs: &mut VarStore, path: &Path) -> Result<()> {
    let file = load(path)?.into_map();
    copy_into(vs, &file, path)
}

/// Refuses `tensors` read from `path` when they hold fewer values than
/// `needed`, the parameters (or a lower bound of them) of the `what`
/// ("network", "generator") they are meant for, `architecture` describing it: checked before that network is
/// allocated, since a file's metadata can describe any size and only its
/// tensors are bytes actually there.
pub fn ensure_holds_values<'a>(
    tensors: impl IntoIterator<Item = &'a Tensor>,
    needed: u128,
    path: &Path,
    what: &str,
    architecture: impl FnOnce() -> String,
) -> Result<()> {
    let held: u128 = tensors.into_iter().map(|t| t.numel() as u128).sum();
    if held < needed {
        return Err(Error::checkpoint(
            path,
            format!(
                "holds {held} {what} values, but its architecture ({}) has at least {needed} parameters: \
                 tensors are missing or the architecture does not belong to these weights",
                architecture()
            ),
        ));
    }
    Ok(())
}

/// [`load_into`] from tensors already read; `source` names them in errors.
pub fn copy_into(vs: &mut VarStore, tensors: &HashMap<String, Tensor>, source: &Path) -> Result<()> {
    let variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    copy_into_variables(&variables, tensors, source)
}

/// Copies `tensors` into `variables` (shallow clones of a network's
/// variables, so the network sees the values): the same names on both sides,
/// equal shapes; values are cast to each variable's dtype and device.
pub fn copy_into_variables(
    variables: &[(String, Tensor)],
    tensors: &HashMap<String, Tensor>,
    source: &Path,
) -> Result<()> {
    let mut missing: Vec<&String> =
        variables.iter().map(|(name, _)| name).filter(|name| !tensors.contains_key(*name)).collect();
    let mut unexpected: Vec<&String> =
        tensors.keys().filter(|k| !variables.iter().any(|(name, _)| name == *k)).collect();
    missing.sort();
    unexpected.sort();
    if !missing.is_empty() || !unexpected.is_empty() {
        let list = |keys: &[&String]| {
            let shown: Vec<&str> = keys.iter().take(8).map(|k| k.as_str()).collect();
            let more = if keys.len() > 8 { format!(" and {} more", keys.len() - 8) } else { String::new() };
            format!("{}{more}", shown.join(", "))
        };
        let mut message = Vec::new();
        if !missing.is_empty() {
            message.push(format!("missing keys: {}", list(&missing)));
        }
        if !unexpected.is_empty() {
            message.push(format!("unexpected keys: {}", list(&unexpected)));
        }
        return Err(Error::checkpoint(source, message.join("; ")));
    }
    let _guard = tch::no_grad_guard();
    for (name, var) in variables {
        let src = &tensors[name];
        if src.size() != var.size() {
            return Err(Error::checkpoint(
                source,
                format!("`{name}` has shape {:?} in the file, the network needs {:?}", src.size(), var.size()),
            ));
        }
        let mut var = var.shallow_clone();
        var.f_copy_(src).ctx(name)?;
    }
    Ok(())
}

/// Writes every variable of `vs` to `path`.
pub fn save_var_store(vs: &VarStore, path: &Path, metadata: &HashMap<String, String>) -> Result<()> {
    let mut tensors: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    save(path, &tensors, metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_checks_keys() {
        let dir = std::env::temp_dir().join(format!("difi-ckpt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("w.safetensors");
        let vs = VarStore::new(Device::Cpu);
        let a = vs.root().sub("layer").var("weight", &[2, 3], tch::nn::Init::Randn { mean: 0.0, stdev: 1.0 });
        let meta = HashMap::from([("kind".to_string(), "test".to_string())]);
        save_var_store(&vs, &path, &meta).unwrap();
        let file = load(&path).unwrap();
        assert_eq!(file.metadata["kind"], "test");
        let mut other = VarStore::new(Device::Cpu);
        let b = other.root().sub("layer").var("weight", &[2, 3], tch::nn::Init::Const(0.0));
        load_into(&mut other, &path).unwrap();
        assert!(a.allclose(&b, 0.0, 0.0, false));

        let mut wrong = VarStore::new(Device::Cpu);
        let _ = wrong.root().sub("layer").var("weight", &[3, 2], tch::nn::Init::Const(0.0));
        let err = load_into(&mut wrong, &path).unwrap_err().to_string();
        assert!(err.contains("layer.weight") && err.contains("[2, 3]"), "{err}");

        let mut extra = VarStore::new(Device::Cpu);
        let _ = extra.root().sub("layer").var("bias", &[3], tch::nn::Init::Const(0.0));
        let err = load_into(&mut extra, &path).unwrap_err().to_string();
        assert!(err.contains("missing keys: layer.bias") && err.contains("unexpected keys: layer.weight"), "{err}");

        std::fs::write(&path, b"garbage").unwrap();
        let err = load(&path).err().unwrap().to_string();
        assert!(err.contains("not a safetensors file"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
