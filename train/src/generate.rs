//! Drawing samples from a one-step generator, batch by batch. Latents and
//! labels of batch `i` come from `(seed, Sampling, i)`, so the same seed and
//! batch size give the same samples whatever reads them (`difi sample`,
//! metrics, `difi evaluate`).

use difi_core::draws::random_labels;
use difi_core::error::{Result, TorchContext};
use difi_core::rng::{RngStream, reseed};
use difi_core::traits::Generator;
use tch::{Device, Kind, Tensor};

/// Batches of `n` generator samples in all: `[b, *sample_shape]` on the
/// generator's device, with one-hot labels for conditional generators.
/// Runs without gradients.
pub fn sample_batches(
    generator: &dyn Generator,
    n: i64,
    batch_size: i64,
    seed: u64,
    device: Device,
) -> impl Iterator<Item = Result<(Tensor, Option<Tensor>)>> + '_ {
    let batch_size = batch_size.max(1);
    (0..n.max(0))
        .step_by(batch_size as usize)
        .enumerate()
        .map(move |(index, start)| sample_batch(generator, index as u64, batch_size.min(n - start), seed, device))
}

/// Batch number `index` of [`sample_batches`]: `b` samples and their
/// one-hot labels, drawn from `(seed, index)` alone, so any process can
/// make any batch.
pub fn sample_batch(
    generator: &dyn Generator,
    index: u64,
    b: i64,
    seed: u64,
    device: Device,
) -> Result<(Tensor, Option<Tensor>)> {
    let _guard = tch::no_grad_guard();
    reseed(seed, RngStream::Sampling, index);
    let z = generator.sample_latents(b, device)?;
    let labels = random_labels(b, generator.label_dim(), device)?;
    let x = generator.generate(&z, labels.as_ref())?;
    Ok((x, labels))
}

/// `n` generator samples `[n, *sample_shape]` (float32, on the CPU) and, for
/// conditional generators, their class indices `[n]`.
pub fn generate_samples(
    generator: &dyn Generator,
    n: i64,
    batch_size: i64,
    seed: u64,
    device: Device,
) -> Result<(Tensor, Option<Tensor>)> {
    let mut samples = Vec::new();
    let mut classes = Vec::new();
    for batch in sample_batches(generator, n, batch_size, seed, device) {
        let (x, labels) = batch?;
        samples.push(x.f_to_device(Device::Cpu).ctx("copy samples")?.f_to_kind(Kind::Float).ctx("samples")?);
        if let Some(labels) = labels {
            classes.push(labels.f_argmax(1, false).ctx("labels")?.f_to_device(Device::Cpu).ctx("labels")?);
        }
    }
    let samples = Tensor::f_cat(&samples, 0).ctx("concatenate samples")?;
    let classes = if classes.is_empty() { None } else { Some(Tensor::f_cat(&classes, 0).ctx("labels")?) };
    Ok((samples, classes))
}

/// Sample grid of `rows × cols` images as uint8 `[C, rows·H, cols·W]`, from
/// latents fixed by `seed` (the same at every snapshot of a run); in a
/// conditional generator row `r` shows class `r mod label_dim`. `None` when
/// the generator does not make images.
pub fn sample_grid(
    generator: &dyn Generator,
    rows: i64,
    cols: i64,
    seed: u64,
    device: Device,
) -> Result<Option<Tensor>> {
    let shape = generator.sample_shape();
    if shape.len() != 3 {
        return Ok(None);
    }
    let _guard = tch::no_grad_guard();
    let n = rows * cols;
    reseed(seed, RngStream::Sampling, u64::MAX);
    let z = generator.sample_latents(n, device)?;
    let label_dim = generator.label_dim();
    let labels = if label_dim > 0 {
        let classes = Tensor::f_arange(n, (Kind::Int64, device))
            .ctx("grid labels")?
            .f_div_scalar_mode(cols, "floor")
            .ctx("grid labels")?;
        let classes = classes.f_remainder(label_dim).ctx("grid labels")?;
        Some(classes.f_one_hot(label_dim).ctx("grid labels")?.f_to_kind(Kind::Float).ctx("grid labels")?)
    } else {
        None
    };
    let images = generator.generate(&z, labels.as_ref())?;
    let images = difi_formats::image::to_uint8(&images)?;
    let (c, h, w) = (shape[0], shape[1], shape[2]);
    let grid = images
        .f_reshape([rows, cols, c, h, w])
        .ctx("grid")?
        .f_permute([2, 0, 3, 1, 4])
        .ctx("grid")?
        .f_reshape([c, rows * h, cols * w])
        .ctx("grid")?;
    Ok(Some(grid))
}
