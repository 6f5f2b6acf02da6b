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
        let mut count_bytes = [0u8; 8];
        count_bytes.copy_from_slice(bytes.get(pos..pos + 8).ok_or_else(|| bad("truncated storage"))?);
        let count = u64::from_le_bytes(count_bytes);
        pos += 8;
        // The element count comes from the file: it is checked against the
        // bytes present before anything is allocated.
        let len = usize::try_from(count)
            .ok()
            .and_then(|count| count.checked_mul(element))
            .ok_or_else(|| bad(format!("storage of {count} elements overflows")))?;
        let data = pos.checked_add(len).and_then(|end| bytes.get(pos..end)).ok_or_else(|| {
            bad(format!("truncated storage: {count} elements ({len} bytes) announced, {} present", bytes.len() - pos))
        })?;
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

/// A tensor as pickled: a view (offset, sizes, strides, in elements) into
/// the storage serialized in `storage`.
pub struct TensorView<'a> {
    /// The argument of `torch.storage._load_from_bytes`.
    pub storage: &'a std::rc::Rc<[u8]>,
    pub offset: i64,
    pub size: Vec<i64>,
    pub stride: Vec<i64>,
}

impl TensorView<'_> {
    /// Elements of the view (sizes are checked non-negative and their product bounded when parsed).
    pub fn numel(&self) -> i64 {
        self.size.iter().product()
    }
}

/// Reads what a pickled tensor refers to, without decoding its storage:
/// `_rebuild_tensor_v2(...)`, `_rebuild_parameter(...)` or
/// `_rebuild_parameter_with_state(...)` around `_load_from_bytes(...)`.
pub fn tensor_view(value: &Value) -> Result<TensorView<'_>> {
    let mut value = value;
    let object = loop {
        let object = value.as_object().ok_or_else(|| bad("not a tensor"))?;
        if object.is("torch._utils", "_rebuild_parameter") || object.is("torch._utils", "_rebuild_parameter_with_state")
        {
            value = object.args.first().ok_or_else(|| bad("parameter without data"))?;
            continue;
        }
        break object;
    };
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
    let storage = match storage.args.first() {
        Some(Value::Bytes(b)) => b,
        _ => return Err(bad("_load_from_bytes without bytes")),
    };
    let offset = offset.as_int().ok_or_else(|| bad("storage offset is not an integer"))?;
    let (size, stride) = (ints(size, "size")?, ints(stride, "stride")?);
    if size.len() != stride.len() || size.len() > MAX_DIMS {
        return Err(bad(format!("size {size:?} and stride {stride:?} do not describe a tensor")));
    }
    if offset < 0 || size.iter().chain(&stride).any(|&n| n < 0) {
        return Err(bad(format!("negative size, stride or offset: {size:?}, {stride:?}, {offset}")));
    }
    if size.iter().try_fold(1i64, |acc, &n| acc.checked_mul(n)).is_none() {
        return Err(bad(format!("size {size:?} overflows")));
    }
    Ok(TensorView { storage, offset, size, stride })
}

/// Tensors have at most this many dimensions.
const MAX_DIMS: usize = 64;

/// Checks that `view` lies inside a storage of `elements` elements and that
/// no two of its elements share a storage element: a view that repeats
/// elements (stride 0) could expand a few bytes into gigabytes.
fn check_view(view: &TensorView, elements: i64) -> Result<()> {
    let TensorView { offset, size, stride, .. } = view;
    if size.contains(&0) {
        return Ok(());
    }
    let outside = || {
        bad(format!(
            "tensor of size {size:?}, stride {stride:?}, offset {offset} does not fit its storage of {elements} elements"
        ))
    };
    let mut last = *offset;
    for (&n, &s) in size.iter().zip(stride) {
        last = (n - 1).checked_mul(s).and_then(|span| last.checked_add(span)).ok_or_else(outside)?;
    }
    if last >= elements {
        return Err(outside());
    }
    // Non-overlapping: with dimensions ordered by stride, each stride must
    // step over everything the smaller strides span.
    let mut dims: Vec<(i64, i64)> = size.iter().zip(stride).filter(|(n, _)| **n > 1).map(|(&n, &s)| (s, n)).collect();
    dims.sort_unstable();
    let mut span = 1i64;
    for (s, n) in dims {
        if s < span {
            return Err(bad(format!(
                "tensor of size {size:?} with stride {stride:?} repeats storage elements (overlapping or zero strides are refused)"
            )));
        }
        span = s.checked_mul(n).ok_or_else(outside)?;
    }
    Ok(())
}

/// The contiguous CPU tensor a checked view selects from its storage.
pub fn materialize(view: &TensorView) -> Result<Tensor> {
    let flat = load_legacy_storage(view.storage)?;
    check_view(view, flat.numel() as i64)?;
    if view.numel() == 0 {
        return Tensor::f_empty(&view.size, (flat.kind(), tch::Device::Cpu)).ctx("tensor");
    }
    flat.f_as_strided(&view.size, &view.stride, view.offset).ctx("tensor view")?.f_contiguous().ctx("tensor")
}

/// The tensor a pickled value rebuilds: `_rebuild_tensor_v2(...)`,
/// `_rebuild_parameter(...)` or `_rebuild_parameter_with_state(...)`, with a
/// storage from `_load_from_bytes(...)`. Returns a contiguous CPU tensor.
pub fn rebuild_tensor(value: &Value) -> Result<Tensor> {
    materialize(&tensor_view(value)?)
}
