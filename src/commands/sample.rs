//! `difi sample --run DIR --n N --seed S --out FILE.npy`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use difi_core::checkpoint;
use difi_core::components::{build_generator, build_teacher};
use difi_core::device::parse_device;
use difi_core::run_dir::RunDir;
use difi_core::sampling::generate_samples;
use difi_core::trainer::{GENERATOR, GENERATOR_EMA};

use crate::ConfigArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The run directory.
    #[arg(long)]
    run: PathBuf,
    /// A snapshot directory of the run (default: the latest).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Number of samples.
    #[arg(long, default_value_t = 10000)]
    n: i64,
    /// Seed of the latents (and labels).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output file: float32 .npy, [N, D] for vectors, [N, C, H, W] for images.
    #[arg(long)]
    out: PathBuf,
    /// Samples per forward pass.
    #[arg(long, default_value_t = 1000)]
    batch: i64,
    /// Use the raw generator weights instead of their EMA.
    #[arg(long)]
    no_ema: bool,
    /// Device (default: the run's).
    #[arg(long)]
    device: Option<String>,
    #[command(flatten)]
    config_args: ConfigArgs,
}

pub fn run(args: Args) -> Result<ExitCode> {
    if args.n < 1 {
        bail!("--n must be at least 1");
    }
    if args.out.extension().and_then(|e| e.to_str()) != Some("npy") {
        bail!("--out {}: samples are written as .npy; name the file *.npy", args.out.display());
    }
    let run = RunDir::open(&args.run)?;
    let snapshot = match &args.checkpoint {
        Some(path) => path.clone(),
        None => run.latest_snapshot()?.with_context(|| format!("{} has no snapshot yet", run.root().display()))?,
    };
    let (mut config, registry) = super::load_resolved(&run.config_path(), &args.config_args)?;
    if let Some(device) = &args.device {
        config.device = device.clone();
    }
    let device = parse_device(&config.device)?;
    let teacher = build_teacher(&config, &registry, device)?;
    let mut generator = build_generator(&config, &registry, device, teacher.as_ref())?;
    let weights = snapshot.join(if args.no_ema { GENERATOR } else { GENERATOR_EMA });
    checkpoint::load_into(generator.var_store_mut(), &weights)?;
    generator.set_train(false);

    let (samples, _classes) = generate_samples(generator.as_ref(), args.n, args.batch, args.seed, device)?;
    write_npy(&samples, &args.out)?;
    eprintln!("wrote {} samples {:?} from {} to {}", args.n, samples.size(), weights.display(), args.out.display());
    Ok(ExitCode::SUCCESS)
}

/// Writes through a temporary file so an existing output is replaced only by a complete one.
fn write_npy(tensor: &tch::Tensor, path: &Path) -> Result<()> {
    let tmp = path.with_extension("npy.tmp");
    tensor.write_npy(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}
