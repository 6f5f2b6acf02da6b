//! `difi sample`: samples of a trained generator (`--run`) or of a teacher
//! through EDM's Heun sampler (`--teacher`), as .npy, a PNG grid or a folder
//! of PNGs.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use difi_core::device::DeviceSpec;
use difi_core::draws::random_labels;
use difi_core::rng::{RngStream, reseed};
use difi_formats::{image, npz};
use difi_train::generate::generate_samples;
use difi_train::run_generator::RunGenerator;
use difi_zoo::heun_sampler::HeunSampler;
use tch::{Device, Kind, Tensor};

use crate::ConfigArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The run directory whose generator is sampled.
    #[arg(long, required_unless_present = "teacher", conflicts_with = "teacher")]
    run: Option<PathBuf>,
    /// Sample the teacher of this config with EDM's Heun sampler instead.
    #[arg(long, value_name = "CONFIG")]
    teacher: Option<PathBuf>,
    /// A snapshot directory of the run (default: the latest).
    #[arg(long, requires = "run")]
    checkpoint: Option<PathBuf>,
    /// Number of samples.
    #[arg(long, default_value_t = 10000)]
    n: i64,
    /// Seed of the latents (and labels).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output: FILE.npy (float32, [N, D] or [N, C, H, W] in [−1, 1]), FILE.png
    /// (a grid of images) or a directory (one PNG per image).
    #[arg(long)]
    out: PathBuf,
    /// Samples per forward pass.
    #[arg(long, default_value_t = 500)]
    batch: i64,
    /// Use the raw generator weights instead of their EMA.
    #[arg(long, requires = "run")]
    no_ema: bool,
    /// Also sample this run's generator on the same latents and classes and
    /// put its grid beside --run's (a .png --out only); repeatable: a
    /// before | after picture of a refinement.
    #[arg(long, value_name = "RUN_DIR", requires = "run")]
    beside: Vec<PathBuf>,
    /// Pixels per image pixel in a .png grid.
    #[arg(long, default_value_t = 1)]
    scale: i64,
    /// Class of every sample for conditional models (default: uniformly random).
    #[arg(long)]
    class: Option<i64>,
    /// Device: auto, cpu, cuda or cuda:N (default: the config's).
    #[arg(long)]
    device: Option<DeviceSpec>,
    /// Heun sampler: number of noise levels (NFE = 2·steps − 1); default 18,
    /// or a teacher run's own setting.
    #[arg(long)]
    steps: Option<usize>,
    /// Heun sampler: lowest, highest noise level and spacing exponent.
    #[arg(long, default_value_t = 0.002)]
    sigma_min: f64,
    #[arg(long, default_value_t = 80.0)]
    sigma_max: f64,
    #[arg(long, default_value_t = 7.0)]
    rho: f64,
    /// Heun sampler: stochasticity (EDM's S_churn, S_min, S_max, S_noise).
    #[arg(long, default_value_t = 0.0)]
    s_churn: f64,
    #[arg(long, default_value_t = 0.0)]
    s_min: f64,
    #[arg(long)]
    s_max: Option<f64>,
    #[arg(long, default_value_t = 1.0)]
    s_noise: f64,
    #[command(flatten)]
    config_args: ConfigArgs,
}

enum Output {
    Npy,
    Grid,
    Folder,
}

fn output_kind(path: &Path) -> Output {
    match path.extension().and_then(|e| e.to_str()) {
        Some("npy") => Output::Npy,
        Some("png") => Output::Grid,
        _ => Output::Folder,
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    if args.n < 1 {
        bail!("--n must be at least 1");
    }
    if !(1..=16).contains(&args.scale) {
        bail!("--scale must be 1 to 16");
    }
    if let Some(ext) = args.out.extension().and_then(|e| e.to_str()).filter(|e| !["npy", "png"].contains(e)) {
        bail!("--out {}: write .npy, .png (a grid) or a directory, not .{ext}", args.out.display());
    }
    if !args.beside.is_empty() {
        return write_beside(&args);
    }
    let (samples, what) = match (&args.run, &args.teacher) {
        (Some(run), _) => sample_generator(&args, run)?,
        (None, Some(config)) => sample_teacher(&args, config)?,
        (None, None) => bail!("give --run RUN_DIR or --teacher CONFIG"),
    };
    write_samples(&samples, &args.out, args.scale)?;
    eprintln!("wrote {} samples {:?} from {what} to {}", args.n, samples.size(), args.out.display());
    Ok(ExitCode::SUCCESS)
}

fn sample_generator(args: &Args, run: &Path) -> Result<(Tensor, String)> {
    if args.class.is_some() {
        bail!("--class applies to --teacher; a run's generator samples uniformly random classes");
    }
    let device = args.device.map(DeviceSpec::resolve).transpose()?;
    let sampler = args.steps.map(|_| heun_sampler(args));
    let loaded =
        RunGenerator::load(run, args.checkpoint.as_deref(), args.no_ema, device, sampler, &args.config_args.source())?;
    let (samples, _) = generate_samples(loaded.generator.as_ref(), args.n, args.batch, args.seed, loaded.device)?;
    Ok((samples, format!("{} ({} NFE)", loaded.weights.display(), loaded.nfe)))
}

/// Grids of `--run` and every `--beside` run, sampled from the same seed,
/// side by side in one PNG with a white column between them.
fn write_beside(args: &Args) -> Result<ExitCode> {
    if !matches!(output_kind(&args.out), Output::Grid) {
        bail!("--beside writes a picture: give --out FILE.png");
    }
    let runs: Vec<&PathBuf> = args.run.iter().chain(&args.beside).collect();
    let mut parts = Vec::new();
    for run in &runs {
        let (samples, what) = sample_generator(args, run)?;
        if samples.dim() != 4 {
            bail!("{}: samples of shape {:?} are not images", run.display(), samples.size());
        }
        let grid = image::grid(&image::to_uint8(&samples)?)?;
        if let Some(previous) = parts.last() {
            let previous: &Tensor = previous;
            if previous.size()[..2] != grid.size()[..2] {
                bail!("{}: its images do not have the shape of the first run's", run.display());
            }
            let [c, h, _] = grid.size()[..] else { bail!("a grid is [C, H, W]") };
            parts.push(Tensor::f_full([c, h, GAP_PIXELS], 255, (Kind::Uint8, Device::Cpu))?);
        }
        eprintln!("{what}");
        parts.push(grid);
    }
    let picture = enlarge(&Tensor::f_cat(&parts, 2)?, args.scale)?;
    difi_formats::atomic::write_with(&args.out, |tmp| image::write_png(tmp, &picture))?;
    eprintln!(
        "wrote {} grids of {} samples (seed {}) side by side to {}",
        runs.len(),
        args.n,
        args.seed,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// A picture `[C, H, W]` with every pixel repeated `scale` × `scale` times.
fn enlarge(picture: &Tensor, scale: i64) -> Result<Tensor> {
    if scale == 1 {
        return Ok(picture.shallow_clone());
    }
    Ok(picture.f_repeat_interleave_self_int(scale, Some(1), None)?.f_repeat_interleave_self_int(
        scale,
        Some(2),
        None,
    )?)
}

/// White columns between the grids of `--beside`.
const GAP_PIXELS: i64 = 4;

/// The Heun sampler the arguments describe.
fn heun_sampler(args: &Args) -> HeunSampler {
    HeunSampler {
        num_steps: args.steps.unwrap_or(HeunSampler::default().num_steps),
        sigma_min: args.sigma_min,
        sigma_max: args.sigma_max,
        rho: args.rho,
        s_churn: args.s_churn,
        s_min: args.s_min,
        s_max: args.s_max,
        s_noise: args.s_noise,
    }
}

fn sample_teacher(args: &Args, config_path: &Path) -> Result<(Tensor, String)> {
    let (mut config, registry) = super::load_teacher(config_path, &args.config_args)?;
    if let Some(device) = args.device {
        config.run.device = device;
    }
    let device = config.run.resolve_device()?;
    let teacher = config.algorithm.build_teacher(&config.build_env(&registry, device, None))?;
    let sampler = heun_sampler(args);
    let label_dim = teacher.label_dim();
    if let Some(class) = args.class
        && !(0..label_dim).contains(&class)
    {
        bail!("--class {class}: the teacher has {label_dim} classes");
    }
    let progress = indicatif::ProgressBar::new(args.n as u64);
    let mut batches = Vec::new();
    let mut done = 0;
    let mut index = 0;
    while done < args.n {
        let b = args.batch.max(1).min(args.n - done);
        reseed(args.seed, RngStream::Sampling, index);
        let mut shape = vec![b];
        shape.extend(teacher.sample_shape());
        let latents = Tensor::f_randn(&shape, (Kind::Float, device))?;
        let labels = match args.class {
            Some(class) => {
                Some(Tensor::f_full([b], class, (Kind::Int64, device))?.f_one_hot(label_dim)?.f_to_kind(Kind::Float)?)
            }
            None => random_labels(b, label_dim, device)?,
        };
        let x = sampler.sample(teacher.as_ref(), &latents, labels.as_ref())?;
        batches.push(x.f_to_kind(Kind::Float)?.f_to_device(Device::Cpu)?);
        done += b;
        index += 1;
        progress.set_position(done as u64);
    }
    progress.finish_and_clear();
    let nfe = sampler.nfe();
    eprintln!("Heun sampler: {} steps, {nfe} NFE per sample", sampler.num_steps);
    Ok((Tensor::f_cat(&batches, 0)?, format!("the teacher of {} ({nfe} NFE)", config_path.display())))
}

/// Writes samples as .npy, a PNG grid, or a folder of PNGs; files are
/// written through a temporary name so an existing one is only replaced whole.
fn write_samples(samples: &Tensor, out: &Path, scale: i64) -> Result<()> {
    let is_image = samples.dim() == 4;
    match output_kind(out) {
        Output::Npy => npz::write_npy(out, samples)?,
        Output::Grid | Output::Folder if !is_image => {
            bail!("{}: samples of shape {:?} are not images; write .npy", out.display(), samples.size())
        }
        Output::Grid => {
            let grid = enlarge(&image::grid(&image::to_uint8(samples)?)?, scale)?;
            difi_formats::atomic::write_with(out, |tmp| image::write_png(tmp, &grid))?;
        }
        Output::Folder => {
            std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
            let images = image::to_uint8(samples)?;
            for i in 0..images.size()[0] {
                image::write_png(&out.join(format!("{i:06}.png")), &images.get(i))?;
            }
        }
    }
    Ok(())
}
