//! `difi train-teacher CONFIG --outdir DIR` and `--resume DIR`: EDM's
//! training of a diffusion model on a dataset, to distill later.

use std::process::ExitCode;

use anyhow::Result;
use difi_train::EdmTeacherTraining;

pub use super::training::Args;

pub fn run(args: Args) -> Result<ExitCode> {
    super::training::run::<EdmTeacherTraining>(args, "train-teacher")
}
