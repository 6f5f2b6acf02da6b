//! Tensors inside Python pickles written by `pickle.dump` (not `torch.save`):
//! each tensor is `torch._utils._rebuild_tensor_v2(storage, offset, size,
//! stride, …)` and each storage `torch.storage._load_from_bytes(b)`, where `b`
//! is torch's legacy (pre-zip) serialization of that storage: five pickles
//! (magic number, protocol version, system info, the storage's persistent id,
//! the storage keys) followed by each storage's element count and raw bytes.
//! This is how EDM and StyleGAN2-ADA network pickles hold their weights.

use tch::{Kind, Tensor};

use crate::pickle::{self, Value};
use difi_core::error::{Error, Result, TorchContext};

/// torch's `MAGIC_NUMBER` for the legacy format.
const LEGACY_MAGIC: u128 = 0x1950a86a20f9469cfc6c;
/// torch's `PROTOCOL_VERSION` for the legacy format.
const LEGACY_PROTOCOL: i64 = 1001;

fn bad(message: impl Into<String>) -> Error {
    Error::Plugin { plugin: "torch pickle".into(), message: message.into() }
}

/// The dtype of a `torch.<Name>Storage` class.
fn storage_kind(name: &str) -> Result<Kind> {
    Ok(match name {
        "FloatStorage" => Kind::Float,
        "DoubleStorage" => Kind::Double,
        "HalfStorage" => Kind::Half,
        "BFloat16Storage" => Kind::BFloat16,
        "LongStorage" => Kind::Int64,
        "IntStorage" => Kind::Int,
        "ShortStorage" => Kind::Int16,
        "CharStorage" => Kind::Int8,
        "ByteStorage" => Kind::Uint8,
        "BoolStorage" => Kind::Bool,
        other => return Err(bad(format!("unsupported storage type torch.{other}"))),
    })
}

/// Decodes the argument of `torch.storage._load_from_bytes` into a flat
/// tensor holding the storage's elements.
pub fn load_legacy_storage(bytes: &[u8]) -> Result<Tensor> {
    if bytes.starts_with(b"PK\x03\x04") {
        return Err(bad("storage is in torch's zip format; only the legacy format of pickled networks is supported"));
    }
    let mut pos = 0;
    let mut next = |what: &str| -> Result<Value> {
        let (value, used) = pickle::parse(&bytes[pos..]).map_err(|e| bad(format!("legacy storage, {what}: {e}")))?;
        pos += used;
        Ok(value)
    };
    let magic = next("magic number")?;
    let magic_ok = match &magic {
        Value::Bytes(b) if b.len() <= 16 => {
            let mut buffer = [0u8; 16];
            buffer[..b.len()].copy_from_slice(b);
            u128::from_le_bytes(buffer) == LEGACY_MAGIC
        }
        _ => false,
    };
    if !magic_ok {
        return Err(bad("not torch's legacy serialization (bad magic number)"));
    }
    if next("protocol")?.as_int() != Some(LEGACY_PROTOCOL) {
        return Err(bad(format!("unsupported legacy protocol (expected {LEGACY_PROTOCOL})")));
    }
    let sys_info = next("system info")?;
    if let Some(Value::Bool(false)) = sys_info.get("little_endian") {
        return Err(bad("big-endian storages are not supported"));
    }
    let object = next("storage")?;
    let keys = next("storage keys")?;
    let id = match &object {
        Value::Persistent(id) => id.as_sequence().ok_or_else(|| bad("storage id is not a tuple"))?,
        _ => return Err(bad("the pickled object is not a storage")),
    };
    if id.first().and_then(Value::as_str) != Some("storage") || id.len() < 5 {
        return Err(bad("the persistent id is not a storage id"));
    }
    let kind = match id[1].global_name() {
        Some(("torch", name)) => storage_kind(name)?,
        _ => return Err(bad("storage type is not a torch storage class")),
    };
    let wanted = id[2].as_str().ok_or_else(|| bad("storage key is not a string"))?;
    let keys = keys.as_sequence().ok_or_else(|| bad("storage keys are not a list"))?;
    let element = kind.elt_size_in_bytes();
    for key in keys {
        let count_bytes = bytes.get(pos..pos + 8).ok_or_else(|| bad("truncated storage"))?;
        let count = u64::from_le_bytes(count_bytes.try_into().expect("8 bytes")) as usize;
        pos += 8;
        let len = count.checked_mul(element).ok_or_else(|| bad("storage size overflows"))?;
        let data = bytes.get(pos..pos + len).ok_or_else(|| bad(format!("truncated storage: {len} bytes announced")))?;
        pos += len;
        if key.as_str() == Some(wanted) {
            return Tensor::f_from_data_size(data, &[count as i64], kind).ctx("storage");
        }
    }
    Err(bad(format!("storage `{wanted}` has no data")))
}

fn ints(value: &Value, what: &str) -> Result<Vec<i64>> {
    value
        .as_sequence()
        .ok_or_else(|| bad(format!("{what} is not a tuple")))?
        .iter()
        .map(|v| v.as_int().ok_or_else(|| bad(format!("{what} holds a non-integer"))))
        .collect()
}

/// The tensor a pickled value rebuilds: `_rebuild_tensor_v2(...)`,
/// `_rebuild_parameter(...)` or `_rebuild_parameter_with_state(...)`, with a
/// storage from `_load_from_bytes(...)`. Returns a contiguous CPU tensor.
pub fn rebuild_tensor(value: &Value) -> Result<Tensor> {
    let object = value.as_object().ok_or_else(|| bad("not a tensor"))?;
    if object.is("torch._utils", "_rebuild_parameter") || object.is("torch._utils", "_rebuild_parameter_with_state") {
        let data = object.args.first().ok_or_else(|| bad("parameter without data"))?;
        return rebuild_tensor(data);
    }
    if !object.is("torch._utils", "_rebuild_tensor_v2") && !object.is("torch._utils", "_rebuild_tensor") {
        let name = object.constructor.global_name().map(|(m, n)| format!("{m}.{n}")).unwrap_or_default();
        return Err(bad(format!("`{name}` does not rebuild a plain tensor")));
    }
    let [storage, offset, size, stride, ..] = object.args.as_slice() else {
        return Err(bad("_rebuild_tensor_v2 with too few arguments"));
    };
    let storage = storage.as_object().filter(|s| s.is("torch.storage", "_load_from_bytes")).ok_or_else(|| {
        bad("tensor storage is not `torch.storage._load_from_bytes` (was the network saved with torch.save?)")
    })?;
    let bytes = match storage.args.first() {
        Some(Value::Bytes(b)) => b,
        _ => return Err(bad("_load_from_bytes without bytes")),
    };
    let flat = load_legacy_storage(bytes)?;
    let offset = offset.as_int().ok_or_else(|| bad("storage offset is not an integer"))?;
    let (size, stride) = (ints(size, "size")?, ints(stride, "stride")?);
    let last = size.iter().zip(&stride).map(|(n, s)| (n - 1).max(0) * s).sum::<i64>() + offset;
    if size.iter().all(|&n| n > 0) && last >= flat.numel() as i64 {
        return Err(bad(format!("tensor of size {size:?} does not fit its storage of {} elements", flat.numel())));
    }
    flat.f_as_strided(&size, &stride, offset).ctx("tensor view")?.f_contiguous().ctx("tensor")
}
