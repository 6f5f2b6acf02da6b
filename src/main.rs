//! `difi`: distill diffusion models into one-step generators without data.

mod commands;
mod error_chain;
mod logging;
mod report;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "difi",
    version,
    about = "Data-free distillation of diffusion models into one-step generators (Diff-Instruct)"
)]
struct Cli {
    /// Log level: error, warn, info, debug or trace (or a RUST_LOG filter).
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

/// Options shared by every command that reads a config.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ConfigArgs {
    /// Replace a config value: PATH=RON_VALUE (e.g. teacher.params.weights=[0.5,0.5]); repeatable.
    #[arg(long = "set", value_name = "PATH=VALUE")]
    pub overrides: Vec<String>,
    /// Load a runtime plugin library (.so) before reading the config; repeatable.
    #[arg(long = "plugin", value_name = "PATH")]
    pub plugins: Vec<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Train a one-step generator from a teacher (or resume a run).
    Distill(commands::distill::Args),
    /// Train a diffusion model (a teacher) on a dataset with EDM's loss (or resume a run).
    TrainTeacher(commands::train_teacher::Args),
    /// Train a StyleGAN2 GAN on a dataset (or resume a run): a generator to refine.
    TrainGan(commands::train_gan::Args),
    /// Time the training iterations of a distillation or teacher-training config (speed and memory).
    Bench(commands::bench::Args),
    /// Validate a config, build its networks, and print it fully resolved.
    Check(commands::check::Args),
    /// Draw samples from a trained generator into a .npy file.
    Sample(commands::sample::Args),
    /// A distilled generator beside its teacher: one picture, proxy-FID and speed of each.
    Showcase(commands::showcase::Args),
    /// FID (or proxy-FID) of a run, dataset, features or statistics against reference statistics.
    Fid(commands::fid::Args),
    /// Measure a run against its exact (`gmm`) teacher: mode shares, spreads, energy distance.
    Evaluate(commands::evaluate::Args),
    /// Distill one config with several divergences (ikl, sid, dmd, sim): a table and a chart of quality against kimg.
    Compare(commands::compare::Args),
    /// Chart a run's losses and metrics against kimg (PNG).
    Report(commands::report::Args),
    /// List every registered plugin with its kind and origin.
    Plugins(commands::plugins::Args),
    /// Print versions, devices and whether CUDA support is linked.
    Info(commands::info::Args),
    /// Datasets in the EDM/StyleGAN format: convert sources, inspect, export.
    Dataset(commands::dataset::Args),
    /// Convert reference checkpoints (EDM and StyleGAN2-ADA network pickles) to safetensors.
    Convert(commands::convert::Args),
    /// The model zoo: verify networks against reference outputs, list presets.
    Zoo(commands::zoo::Args),
}

fn main() -> ExitCode {
    difi_zoo::link();
    difi_divergences::link();
    difi_datasets::link();
    let cli = Cli::parse();
    logging::init(&cli.log);
    let result = match cli.command {
        Command::Distill(args) => commands::distill::run(args),
        Command::TrainTeacher(args) => commands::train_teacher::run(args),
        Command::TrainGan(args) => commands::train_gan::run(args),
        Command::Check(args) => commands::check::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Sample(args) => commands::sample::run(args),
        Command::Showcase(args) => commands::showcase::run(args),
        Command::Evaluate(args) => commands::evaluate::run(args),
        Command::Compare(args) => commands::compare::run(args),
        Command::Fid(args) => commands::fid::run(args),
        Command::Plugins(args) => commands::plugins::run(args),
        Command::Report(args) => commands::report::run(args),
        Command::Info(args) => commands::info::run(args),
        Command::Convert(args) => commands::convert::run(args),
        Command::Dataset(args) => commands::dataset::run(args),
        Command::Zoo(args) => commands::zoo::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", error_chain::one_line(&err));
            ExitCode::FAILURE
        }
    }
}
