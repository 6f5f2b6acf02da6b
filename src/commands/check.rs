//! `difi check CONFIG`: validate and build without training.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use difi_core::error::Error;
use difi_train::config::algorithm_of;
use difi_train::{Algorithm, DiffInstruct, EdmTeacherTraining, StyleGan2Gan};

use crate::ConfigArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The RON config.
    config: PathBuf,
    #[command(flatten)]
    config_args: ConfigArgs,
}

/// Validates the config (every field and every plugin's params), prints it
/// resolved, and builds its networks. A file the config names that is not
/// there yet (a checkpoint to download) is reported, not an error: the
/// config itself checks out.
pub fn run(args: Args) -> Result<ExitCode> {
    let algorithm = algorithm_of(&args.config).with_context(|| format!("reading config {}", args.config.display()))?;
    match algorithm.as_str() {
        EdmTeacherTraining::NAME => check::<EdmTeacherTraining>(&args),
        StyleGan2Gan::NAME => check::<StyleGan2Gan>(&args),
        _ => check::<DiffInstruct>(&args),
    }
}

fn check<A: Algorithm>(args: &Args) -> Result<ExitCode> {
    let (config, registry) = args
        .config_args
        .source()
        .load::<A>(&args.config)
        .with_context(|| format!("checking config {}", args.config.display()))?;
    print!("{}", config.to_ron());
    match difi_train::session::build_runner(&config, &registry) {
        Ok(_) => eprintln!("{}: ok ({})", args.config.display(), A::NAME),
        Err(Error::Io { path, source }) if source.kind() == std::io::ErrorKind::NotFound => eprintln!(
            "{}: the config checks out ({}); its networks were not built because {} is missing (download it first)",
            args.config.display(),
            A::NAME,
            path.display()
        ),
        Err(err) => return Err(anyhow::Error::new(err).context("building the networks")),
    }
    Ok(ExitCode::SUCCESS)
}
