//! Training batches from a dataset: shuffled per epoch from a seed, read on
//! demand (the dataset is never loaded whole), uint8 → float in [−1, 1],
//! labels one-hot. x-flips come from the dataset (see [`crate::ImageDataset`]).

use difi_core::error::{Result, TorchContext};
use difi_core::traits::Dataset;
use tch::{Device, Kind, Tensor};

/// A batch: images float `[B, C, H, W]` in [−1, 1], one-hot labels `[B, label_dim]`.
pub struct Batch {
    pub images: Tensor,
    pub labels: Option<Tensor>,
    /// Indices of the images in the dataset.
    pub indices: Vec<usize>,
}

/// The order of epoch `epoch`: a permutation of `0..len` drawn from `seed`
/// (Fisher–Yates with splitmix64), the same on every machine.
pub fn epoch_order(len: usize, seed: u64, epoch: u64) -> Vec<usize> {
    let mut state = seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

/// Batches of one pass over `dataset` in the order of [`epoch_order`] (or in
/// index order without `shuffle`); the last batch may be smaller.
pub struct Batches<'a> {
    dataset: &'a dyn Dataset,
    order: Vec<usize>,
    position: usize,
    batch_size: usize,
    device: Device,
}

impl<'a> Batches<'a> {
    pub fn new(dataset: &'a dyn Dataset, batch_size: usize, shuffle: Option<(u64, u64)>, device: Device) -> Self {
        let order = match shuffle {
            Some((seed, epoch)) => epoch_order(dataset.len(), seed, epoch),
            None => (0..dataset.len()).collect(),
        };
        Batches { dataset, order, position: 0, batch_size: batch_size.max(1), device }
    }

    fn load(&self, indices: &[usize]) -> Result<Batch> {
        let mut images = Vec::with_capacity(indices.len());
        let mut classes = Vec::with_capacity(indices.len());
        for &i in indices {
            let (image, label) = self.dataset.get(i)?;
            images.push(image);
            classes.push(label.unwrap_or(0));
        }
        let images = Tensor::f_stack(&images, 0).ctx("batch")?.f_to_device(self.device).ctx("batch")?;
        let images = images.f_to_kind(Kind::Float).ctx("batch")? / 127.5 - 1.0;
        let label_dim = self.dataset.label_dim();
        let labels = if label_dim > 0 {
            let classes = Tensor::from_slice(&classes).f_to_device(self.device).ctx("labels")?;
            Some(classes.f_one_hot(label_dim).ctx("labels")?.f_to_kind(Kind::Float).ctx("labels")?)
        } else {
            None
        };
        Ok(Batch { images, labels, indices: indices.to_vec() })
    }
}

impl Iterator for Batches<'_> {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.position >= self.order.len() {
            return None;
        }
        let end = (self.position + self.batch_size).min(self.order.len());
        let indices = self.order[self.position..end].to_vec();
        self.position = end;
        Some(self.load(&indices))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_permutations_that_differ() {
        let a = epoch_order(100, 7, 0);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
        assert_eq!(a, epoch_order(100, 7, 0));
        assert_ne!(a, epoch_order(100, 7, 1));
        assert_ne!(a, epoch_order(100, 8, 0));
    }
}
