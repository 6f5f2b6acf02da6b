//! Drawing samples from a trained generator.

use tch::{Device, Kind, Tensor};

use crate::device::{Stream, reseed};
use crate::error::{Result, TorchContext};
use crate::trainer::random_labels;
use crate::traits::Generator;

/// `n` generator samples `[n, *sample_shape]` (float32, on the CPU) and, for
/// conditional generators, their class indices `[n]`. Latents and labels come
/// from `seed`, batch by batch, so the same seed and batch size give the same
/// samples.
pub fn generate_samples(
    generator: &dyn Generator,
    n: i64,
    batch_size: i64,
    seed: u64,
    device: Device,
) -> Result<(Tensor, Option<Tensor>)> {
    let _guard = tch::no_grad_guard();
    let batch_size = batch_size.max(1);
    let mut samples = Vec::new();
    let mut classes = Vec::new();
    let mut done = 0;
    let mut index = 0;
    while done < n {
        let b = batch_size.min(n - done);
        reseed(seed, Stream::Sampling, index);
        let z = generator.sample_latents(b, device)?;
        let labels = random_labels(b, generator.label_dim(), device)?;
        let x = generator.generate(&z, labels.as_ref())?;
        samples.push(x.f_to_device(Device::Cpu).ctx("copy samples")?.f_to_kind(Kind::Float).ctx("samples")?);
        if let Some(labels) = labels {
            classes.push(labels.f_argmax(1, false).ctx("labels")?.f_to_device(Device::Cpu).ctx("labels")?);
        }
        done += b;
        index += 1;
    }
    let samples = Tensor::f_cat(&samples, 0).ctx("concatenate samples")?;
    let classes = if classes.is_empty() { None } else { Some(Tensor::f_cat(&classes, 0).ctx("labels")?) };
    Ok((samples, classes))
}
