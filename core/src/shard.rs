//! Which rows of a global batch this process computes, in data-parallel
//! training.
//!
//! Every rank reseeds libtorch's generator identically before an iteration
//! (see [`crate::rng`]). A per-sample draw (latents, labels, σ, noise) is made
//! for the *global* batch with [`batch_draw`] and each rank keeps its own
//! rows, so N ranks draw exactly what one process with the same global batch
//! draws, and the generator stays in step on every rank. Outside a
//! [`ShardGuard`] (one process, or sampling and metrics) the draws are
//! plain draws of the local batch.
//!
//! What cannot be sliced, such as dropout masks drawn inside a network,
//! comes from a per-rank stream: see [`per_rank_seed`].

use std::cell::Cell;

use tch::Tensor;

use crate::error::{Result, TorchContext};
use crate::rng::mix_seed;

/// This process's place in the global batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// This process's rank, in `0..world_size`.
    pub rank: i64,
    /// The number of processes sharing each batch.
    pub world_size: i64,
}

impl Shard {
    /// The whole batch, in one process.
    pub const WHOLE: Shard = Shard { rank: 0, world_size: 1 };
}

thread_local! {
    static CURRENT: Cell<Shard> = const { Cell::new(Shard::WHOLE) };
}

/// The shard in effect on this thread.
pub fn current() -> Shard {
    CURRENT.with(Cell::get)
}

/// Puts a shard in effect on this thread until dropped (then restores the
/// previous one). The runner holds one around each training iteration.
pub struct ShardGuard {
    previous: Shard,
}

impl ShardGuard {
    /// Makes `shard` current.
    pub fn enter(shard: Shard) -> Self {
        ShardGuard { previous: CURRENT.with(|c| c.replace(shard)) }
    }
}

impl Drop for ShardGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.previous));
    }
}

/// `draw(n × world_size)`, of which this rank keeps rows
/// `rank·n .. (rank+1)·n` along `dim`: `n` is the local batch. With one
/// process it is just `draw(n)`.
pub fn batch_draw(n: i64, dim: i64, draw: impl FnOnce(i64) -> Result<Tensor>) -> Result<Tensor> {
    let shard = current();
    if shard.world_size == 1 {
        return draw(n);
    }
    let global = draw(n * shard.world_size)?;
    global.f_narrow(dim, shard.rank * n, n).ctx("batch shard")?.f_contiguous().ctx("batch shard")
}

/// Standard normal noise shaped like `x` `[N, …]`, drawn for the global batch.
pub fn randn_like(x: &Tensor) -> Result<Tensor> {
    let size = x.size();
    let n = size.first().copied().unwrap_or(1);
    batch_draw(n, 0, |global| {
        let mut shape = size.clone();
        if let Some(first) = shape.first_mut() {
            *first = global;
        }
        Tensor::f_randn(&shape, (x.kind(), x.device())).ctx("noise")
    })
}

/// The seed for draws that differ by rank (dropout masks) derived from a
/// `seed` all ranks share: `seed` itself in one process, so single-process
/// runs draw what they always did.
pub fn per_rank_seed(seed: i64) -> i64 {
    let shard = current();
    if shard.world_size == 1 { seed } else { mix_seed(seed, shard.rank as u64) }
}

/// After per-rank draws seeded from `seed`, puts every rank's generator
/// back on one shared stream (derived from `seed`), so the following
/// global draws agree again. Nothing to do in one process.
pub fn rejoin_shared_stream(seed: i64) {
    let shard = current();
    if shard.world_size > 1 {
        tch::manual_seed(mix_seed(seed, u64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use tch::{Device, Kind};

    use super::*;

    #[test]
    fn ranks_split_what_one_process_draws() {
        tch::manual_seed(7);
        let whole = randn_like(&Tensor::zeros([6, 3], (Kind::Float, Device::Cpu))).unwrap();
        let mut parts = Vec::new();
        for rank in 0..3 {
            let _guard = ShardGuard::enter(Shard { rank, world_size: 3 });
            tch::manual_seed(7);
            parts.push(randn_like(&Tensor::zeros([2, 3], (Kind::Float, Device::Cpu))).unwrap());
        }
        assert_eq!(current(), Shard::WHOLE, "the guard restores the shard");
        assert!(Tensor::cat(&parts, 0).equal(&whole));
    }

    #[test]
    fn a_draw_along_another_dimension_is_split_there() {
        let draw = |n| Ok(Tensor::arange(2 * n, (Kind::Int64, Device::Cpu)).reshape([2, n]));
        let _guard = ShardGuard::enter(Shard { rank: 1, world_size: 2 });
        let part = batch_draw(3, 1, draw).unwrap();
        assert_eq!(Vec::<i64>::try_from(part.reshape([-1])).unwrap(), vec![3, 4, 5, 9, 10, 11]);
    }

    #[test]
    fn per_rank_seeds_differ_only_with_several_ranks() {
        assert_eq!(per_rank_seed(42), 42);
        let seeds: Vec<i64> = (0..2)
            .map(|rank| {
                let _guard = ShardGuard::enter(Shard { rank, world_size: 2 });
                per_rank_seed(42)
            })
            .collect();
        assert_ne!(seeds[0], seeds[1]);
    }
}
