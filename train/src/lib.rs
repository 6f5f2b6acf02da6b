//! difi-train: one runner for every training algorithm.
//!
//! - [`runner`]: the loop (warm-up, iterations, EMA, ticks, snapshots,
//!   metrics, exact resume, stopping on request, progress);
//! - [`step`] and [`algorithm`]: what an algorithm gives the runner, a
//!   [`Step`](step::Step) over named parts, built from its config section;
//! - [`algorithms`]: Diff-Instruct, EDM teacher training and StyleGAN2 GAN training;
//! - [`config`]: the run config (run settings + the algorithm's section);
//! - [`session`]: what a command runs (new or resumed run, Ctrl-C);
//! - [`distributed`]: data parallelism over c10d (torchrun/Slurm launches);
//! - [`optim`], [`ema`], [`snapshot`], [`run_dir`], [`stats`]: the runner's parts;
//! - [`networks`], [`denoiser_generator`], [`denoising_loss`]: building blocks of the algorithms;
//! - [`generate`], [`run_generator`], [`snapshot_metrics`], [`bench`]: using what was trained;
//! - [`bench_spec`], [`bench_teacher_check`], [`bench_compare`]: timing difi against the PyTorch eager
//!   script side by side, and checking that both compute the same.

pub mod algorithm;
pub mod algorithms;
pub mod augment;
pub mod bench;
pub mod bench_compare;
pub mod bench_spec;
pub mod bench_teacher_check;
pub mod config;
pub mod denoiser_generator;
pub mod denoising_loss;
pub mod distributed;
pub mod ema;
pub mod generate;
pub mod networks;
pub mod optim;
pub mod run_dir;
pub mod run_generator;
pub mod runner;
pub mod session;
pub mod snapshot;
pub mod snapshot_metrics;
pub mod stats;
pub mod step;
pub mod stop;

/// libtorch's random generator is global and unit tests run in parallel
/// threads: a test that seeds it or draws from it holds this lock.
#[cfg(test)]
pub(crate) static TEST_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds [`TEST_RNG`] for the rest of the test.
#[cfg(test)]
pub(crate) fn lock_test_rng() -> std::sync::MutexGuard<'static, ()> {
    TEST_RNG.lock().unwrap_or_else(|e| e.into_inner())
}

pub use algorithm::{Algorithm, BuildEnv};
pub use algorithms::diff_instruct::DiffInstruct;
pub use algorithms::edm_teacher::EdmTeacherTraining;
pub use algorithms::stylegan2_gan::StyleGan2Gan;
pub use config::RunConfig;
pub use session::{ConfigSource, Session};
