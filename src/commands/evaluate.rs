//! `difi evaluate --run DIR`: how close a distilled generator is to an exact
//! (`gmm`) teacher. Image runs are judged by `difi fid`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use difi_core::params::decode_params;
use difi_core::rng::{RngStream, derive_seed};
use difi_train::generate::generate_samples;
use difi_train::run_dir::RunDir;
use difi_train::run_generator::{RunGenerator, RunKind};
use difi_zoo::toy::gmm::{Gmm, GmmParams};
use difi_zoo::toy::gmm_report::GmmReport;

use crate::ConfigArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The run directory.
    #[arg(long)]
    run: PathBuf,
    /// A snapshot directory of the run (default: the latest).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Number of generator samples (and of each exact sample set).
    #[arg(long, default_value_t = 5000)]
    n: i64,
    /// Seed of the generator's latents and of the exact samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print one JSON object instead of a summary.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    config_args: ConfigArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let run = RunDir::open(&args.run)?;
    let loaded =
        RunGenerator::load(&args.run, args.checkpoint.as_deref(), false, None, None, &args.config_args.source())?;
    let RunKind::DiffInstruct(config) = &loaded.kind else {
        bail!("`difi evaluate` measures distilled generators against an exact `gmm` teacher; judge teachers with FID");
    };
    let teacher = &config.algorithm.teacher;
    if teacher.plugin.as_deref() != Some("gmm") {
        bail!("`difi evaluate` measures runs with an exact `gmm` teacher; judge image runs with FID");
    }
    let params: GmmParams = decode_params(&teacher.params)?;
    let (samples, _) = generate_samples(loaded.generator.as_ref(), args.n, 1000, args.seed, loaded.device)?;

    let gmm = Gmm::new(&params, tch::Device::Cpu)?;
    tch::manual_seed(derive_seed(args.seed, RngStream::Sampling, u64::MAX));
    let report = GmmReport::measure(&gmm, &params.stds, &samples)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{} ({} samples from {})", run.root().display(), args.n, loaded.weights.display());
        println!("{}", report.summary());
    }
    Ok(ExitCode::SUCCESS)
}
