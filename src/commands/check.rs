//! `difi check CONFIG`: validate and build without training.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::ConfigArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The RON config.
    config: PathBuf,
    #[command(flatten)]
    config_args: ConfigArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let (config, registry) = super::load_resolved(&args.config, &args.config_args)?;
    difi_train::session::build_runner(&config, &registry).context("building the networks")?;
    print!("{}", config.to_ron());
    eprintln!("{}: ok", args.config.display());
    Ok(ExitCode::SUCCESS)
}
