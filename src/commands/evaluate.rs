//! `difi evaluate --run DIR`: how close a distilled generator is to an exact
//! (`gmm`) teacher. Image runs are judged by `difi fid`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use difi_core::checkpoint;
use difi_core::components::{build_generator, build_teacher};
use difi_core::device::{Stream, derive_seed, parse_device};
use difi_core::registry::decode_params;
use difi_core::run_dir::RunDir;
use difi_core::sampling::generate_samples;
use difi_core::trainer::GENERATOR_EMA;
use difi_zoo::gmm::{Gmm, GmmParams};
use difi_zoo::gmm_report::GmmReport;

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
    let (config, registry) = super::load_resolved(&run.config_path(), &args.config_args)?;
    if config.teacher.plugin.as_deref() != Some("gmm") {
        bail!("`difi evaluate` measures runs with an exact `gmm` teacher; judge image runs with FID");
    }
    let params: GmmParams = decode_params(&config.teacher.params)?;
    let snapshot = match &args.checkpoint {
        Some(path) => path.clone(),
        None => run.latest_snapshot()?.with_context(|| format!("{} has no snapshot yet", run.root().display()))?,
    };
    let device = parse_device(&config.device)?;
    let teacher = build_teacher(&config, &registry, device)?;
    let mut generator = build_generator(&config, &registry, device, teacher.as_ref())?;
    checkpoint::load_into(generator.var_store_mut(), &snapshot.join(GENERATOR_EMA))?;
    generator.set_train(false);
    let (samples, _) = generate_samples(generator.as_ref(), args.n, 1000, args.seed, device)?;

    let gmm = Gmm::new(&params, tch::Device::Cpu)?;
    tch::manual_seed(derive_seed(args.seed, Stream::Sampling, u64::MAX));
    let report = GmmReport::measure(&gmm, &params.stds, &samples)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{} ({} samples from {})", run.root().display(), args.n, snapshot.display());
        println!("{}", report.summary());
    }
    Ok(ExitCode::SUCCESS)
}
