//! `difi distill CONFIG --outdir DIR` and `difi distill --resume DIR`:
//! Diff-Instruct.

use std::process::ExitCode;

use anyhow::Result;
use difi_train::DiffInstruct;

pub use super::training::Args;

pub fn run(args: Args) -> Result<ExitCode> {
    super::training::run::<DiffInstruct>(args, "distill")
}
