//! CIFAR-10's python tarball (`cifar-10-python.tar.gz`): the five training
//! batches, each a pickle of `{data: uint8 [10000, 3072], labels: [int]}`,
//! read with difi's pickle reader (nothing executed). The tarball is
//! inflated through a bound ([`MAX_CIFAR_TAR_BYTES`]), each batch read with
//! one ([`MAX_CIFAR_BATCH_BYTES`]).

use std::path::Path;

use difi_core::error::{Error, Result};
use difi_formats::pickle::{self, Value};
use flate2::read::GzDecoder;

use super::{Source, SourceImage, limit};
use crate::bounded_read::{Capped, read_at_most};
use crate::limits::{MAX_CIFAR_BATCH_BYTES, MAX_CIFAR_TAR_BYTES};
use crate::pixels::Pixels;

const SIDE: usize = 32;

/// Opens the tarball and reads its training batches.
pub fn open(path: &Path, max_images: Option<usize>) -> Result<Source> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut tar = tar::Archive::new(Capped::new(GzDecoder::new(file), MAX_CIFAR_TAR_BYTES));
    let mut batches: [Option<(Vec<u8>, Vec<i64>)>; 5] = Default::default();
    let entries = tar.entries().map_err(|e| Error::checkpoint(path, format!("not a readable tar.gz ({e})")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| Error::checkpoint(path, format!("corrupt tarball ({e})")))?;
        let name = entry.path().map_err(|e| Error::checkpoint(path, e.to_string()))?.to_string_lossy().into_owned();
        let Some(k) = (1..=5).find(|k| name == format!("cifar-10-batches-py/data_batch_{k}")) else { continue };
        if entry.size() > MAX_CIFAR_BATCH_BYTES {
            return Err(Error::checkpoint(
                path,
                format!("{name} is {} bytes; a CIFAR-10 batch is at most {MAX_CIFAR_BATCH_BYTES}", entry.size()),
            ));
        }
        let bytes = read_at_most(&mut entry, MAX_CIFAR_BATCH_BYTES)
            .map_err(|e| Error::checkpoint(path, format!("{name}: {e}")))?;
        batches[k - 1] = Some(read_batch(&bytes).map_err(|e| Error::checkpoint(path, format!("{name}: {e}")))?);
    }
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for (k, batch) in batches.into_iter().enumerate() {
        let (data, batch_labels) =
            batch.ok_or_else(|| Error::checkpoint(path, format!("no cifar-10-batches-py/data_batch_{}", k + 1)))?;
        pixels.extend(data);
        labels.extend(batch_labels);
    }
    let count = limit(labels.len(), max_images);
    let iter = (0..count).map(move |i| {
        // Stored planar (CHW): transpose to interleaved RGB.
        let image = &pixels[i * 3 * SIDE * SIDE..(i + 1) * 3 * SIDE * SIDE];
        let mut data = vec![0u8; 3 * SIDE * SIDE];
        for c in 0..3 {
            for p in 0..SIDE * SIDE {
                data[p * 3 + c] = image[c * SIDE * SIDE + p];
            }
        }
        Ok(SourceImage { pixels: Pixels { width: SIDE, height: SIDE, channels: 3, data }, label: Some(labels[i]) })
    });
    Ok(Source { count, images: Box::new(iter) })
}

/// `(pixels [N·3072], labels [N])` of one batch pickle.
fn read_batch(bytes: &[u8]) -> std::result::Result<(Vec<u8>, Vec<i64>), String> {
    let (value, _) = pickle::parse(bytes).map_err(|e| e.to_string())?;
    let data = lookup(&value, "data").ok_or("no `data`")?;
    let labels = lookup(&value, "labels").and_then(Value::as_sequence).ok_or("no `labels` list")?;
    let labels: Vec<i64> = labels
        .iter()
        .map(|l| l.as_int().filter(|l| (0..10).contains(l)).ok_or("a label outside 0–9"))
        .collect::<std::result::Result<_, _>>()?;
    let (shape, raw) = numpy_uint8(data)?;
    if shape != [labels.len(), 3 * SIDE * SIDE] {
        return Err(format!("`data` has shape {shape:?}, expected [{}, 3072]", labels.len()));
    }
    Ok((raw, labels))
}

/// A key of a pickled dict, stored as text (Python 3) or bytes (Python 2).
fn lookup<'a>(dict: &'a Value, key: &str) -> Option<&'a Value> {
    dict.as_mapping()?.iter().find(|(k, _)| text_of(k).as_deref() == Some(key)).map(|(_, v)| v)
}

/// Text or bytes of a pickled string; `_codecs.encode(text, 'latin1')` is how
/// Python 3 pickles bytes at protocol 2.
fn bytes_of(value: &Value) -> Option<Vec<u8>> {
    match value {
        Value::Bytes(b) => Some(b.to_vec()),
        Value::Str(s) => Some(s.as_bytes().to_vec()),
        Value::Object(o) if o.is("_codecs", "encode") => match o.args.first()? {
            Value::Str(s) => Some(s.chars().map(|c| c as u32 as u8).collect()),
            _ => None,
        },
        _ => None,
    }
}

fn text_of(value: &Value) -> Option<String> {
    bytes_of(value).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The shape and bytes of a pickled `uint8` numpy array
/// (`numpy.core.multiarray._reconstruct` + state `(version, shape, dtype, fortran, data)`).
fn numpy_uint8(value: &Value) -> std::result::Result<(Vec<usize>, Vec<u8>), String> {
    let object = value.as_object().ok_or("`data` is not a numpy array")?;
    let is_reconstruct =
        matches!(object.constructor.global_name(), Some((m, "_reconstruct")) if m.starts_with("numpy"));
    if !is_reconstruct {
        return Err("`data` is not a numpy array".into());
    }
    let state = object.state.as_ref().and_then(Value::as_sequence).ok_or("numpy array without state")?;
    let [_, shape, dtype, fortran, raw] = state else { return Err("unexpected numpy array state".into()) };
    let shape: Vec<usize> = shape
        .as_sequence()
        .ok_or("numpy shape")?
        .iter()
        .map(|d| d.as_int().and_then(|d| usize::try_from(d).ok()).ok_or("numpy shape"))
        .collect::<std::result::Result<_, _>>()?;
    let descr = dtype.as_object().and_then(|d| d.args.first()).and_then(text_of).ok_or("numpy dtype")?;
    if descr != "u1" {
        return Err(format!("`data` has dtype {descr}, expected u1"));
    }
    if fortran.as_int() == Some(1) {
        return Err("Fortran-ordered arrays are not supported".into());
    }
    let raw = bytes_of(raw).ok_or("numpy data")?;
    let elements = shape.iter().try_fold(1usize, |n, d| n.checked_mul(*d));
    if elements != Some(raw.len()) {
        return Err("numpy data does not match its shape".into());
    }
    Ok((shape, raw))
}
