//! `difi train-gan CONFIG --outdir DIR` and `--resume DIR`: StyleGAN2's
//! GAN training on a dataset, a generator to refine later.

use std::process::ExitCode;

use anyhow::Result;
use difi_train::StyleGan2Gan;

pub use super::training::Args;

pub fn run(args: Args) -> Result<ExitCode> {
    super::training::run::<StyleGan2Gan>(args, "train-gan")
}
