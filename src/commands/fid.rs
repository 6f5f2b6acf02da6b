//! `difi fid`: Fréchet distances (FID with Inception-v3, proxy-FID with other
//! detectors) and reference statistics, as EDM's `fid.py` computes them.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use difi_core::device::DeviceSpec;
use difi_datasets::{ImageDataset, ImageDatasetParams};
use difi_metrics::detector::{FeatureDetector, dataset_features};
use difi_metrics::detectors::{DetectorOptions, DetectorSpec};
use difi_metrics::precision_recall::precision_recall;
use difi_metrics::{FeatureStats, frechet_distance};
use difi_train::run_dir::RunDir;
use difi_train::run_generator::RunGenerator;
use difi_train::snapshot_metrics::generator_features;
use difi_zoo::heun_sampler::HeunSampler;
use tch::{Device, Tensor};

use crate::ConfigArgs;

#[derive(clap::Args)]
pub struct DetectorArgs {
    /// Feature detector: inception, fmnist-classifier, or a TorchScript file.
    #[arg(long, default_value = "inception")]
    detector: DetectorSpec,
    /// Path of inception-2015-12-05.pt (default: $DIFI_INCEPTION).
    #[arg(long)]
    inception: Option<PathBuf>,
    /// Images per detector batch.
    #[arg(long, default_value_t = 250)]
    batch: usize,
    /// Device: auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    device: DeviceSpec,
}

#[derive(clap::Subcommand)]
pub enum Command {
    /// Reference statistics of a dataset: every image, no flips.
    Ref {
        /// A dataset .zip or folder.
        dataset: PathBuf,
        /// The statistics to write (.npz with mu and sigma).
        #[arg(short = 'o', long)]
        out: PathBuf,
        #[command(flatten)]
        detector: DetectorArgs,
    },
}

#[derive(clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Reference statistics (.npz with mu and sigma, e.g. EDM's cifar10-32x32.npz).
    #[arg(long = "ref")]
    reference: Option<PathBuf>,
    /// Statistics .npz, features .npy [N, D], a dataset (.zip or folder), a
    /// run directory or one of its snapshots (then --num samples are generated).
    source: Option<PathBuf>,
    /// Images to use: generated from a run (default 50000), or at most this many of a dataset.
    #[arg(long)]
    num: Option<usize>,
    /// Seed of the generated samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// A teacher run: Heun sampler steps (NFE = 2·steps − 1; default: the run's sampler).
    #[arg(long)]
    steps: Option<usize>,
    /// Also write the source's statistics here.
    #[arg(long)]
    save_stats: Option<PathBuf>,
    /// Also compute precision and recall (k = 3) against this dataset's images.
    #[arg(long, value_name = "DATASET")]
    pr: Option<PathBuf>,
    #[command(flatten)]
    detector: DetectorArgs,
    #[command(flatten)]
    config_args: ConfigArgs,
}

fn open_detector(args: &DetectorArgs) -> Result<(Box<dyn FeatureDetector>, Device)> {
    let device = args.device.resolve()?;
    let options = DetectorOptions { inception_path: args.inception.clone(), base_dir: None };
    Ok((args.detector.open(&options, device)?, device))
}

fn open_dataset(path: &Path) -> Result<ImageDataset> {
    Ok(ImageDataset::open(&ImageDatasetParams { path: path.to_path_buf(), ..Default::default() }, Path::new("."))?)
}

fn label(detector: &dyn FeatureDetector) -> &'static str {
    if detector.is_proxy() { "proxy-FID" } else { "FID" }
}

pub fn run(args: Args) -> Result<ExitCode> {
    if let Some(Command::Ref { dataset, out, detector }) = &args.command {
        let (detector, _) = open_detector(detector)?;
        let dataset = open_dataset(dataset)?;
        let features = dataset_features(&dataset, detector.as_ref(), args.batch_for_ref(), None)?;
        FeatureStats::from_features(&features)?.save(out)?;
        eprintln!(
            "{} images, {} features from {} → {}",
            features.size()[0],
            features.size()[1],
            detector.name(),
            out.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let reference = args.reference.as_ref().context("give --ref REF.npz (or use `difi fid ref`)")?;
    let source = args.source.as_ref().context("give the SOURCE to measure")?;
    let reference_stats = FeatureStats::load(reference)?;
    let mut detector_name = String::from("read from the file");
    let mut proxy_label = None;
    let mut features: Option<Tensor> = None;
    let stats = match source.extension().and_then(|e| e.to_str()) {
        Some("npz") => FeatureStats::load(source)?,
        Some("npy") => {
            let f = difi_formats::npz::read_npy(source)
                .with_context(|| format!("reading features {}", source.display()))?;
            if f.dim() != 2 {
                bail!("{}: features must be a [N, D] array, got shape {:?}", source.display(), f.size());
            }
            let f = match args.num {
                Some(n) => f.narrow(0, 0, (n as i64).min(f.size()[0])),
                None => f,
            };
            let stats = FeatureStats::from_features(&f)?;
            features = Some(f);
            stats
        }
        _ => {
            let (detector, device) = open_detector(&args.detector)?;
            detector_name = detector.name();
            proxy_label = Some(label(detector.as_ref()));
            let f = if source.join("config.ron").is_file() || source.join("state.json").is_file() {
                generated_features(&args, source, detector.as_ref(), device)?
            } else {
                let dataset = open_dataset(source)?;
                dataset_features(&dataset, detector.as_ref(), args.detector.batch.max(1), args.num)?
            };
            if let Some(real) = &args.pr {
                let n = f.size()[0] as usize;
                let real =
                    dataset_features(&open_dataset(real)?, detector.as_ref(), args.detector.batch.max(1), Some(n))?;
                let (precision, recall) = precision_recall(&real, &f, 3)?;
                println!("precision {precision:.5}");
                println!("recall {recall:.5}");
            }
            let stats = FeatureStats::from_features(&f)?;
            features = Some(f);
            stats
        }
    };
    if args.pr.is_some() && proxy_label.is_none() {
        bail!("--pr needs images (a dataset or a run), not statistics or features");
    }
    if let Some(path) = &args.save_stats {
        stats.save(path)?;
    }
    if stats.dim() != reference_stats.dim() {
        bail!(
            "{} has {}-d features but {} has {}-d: compute both with the same detector",
            source.display(),
            stats.dim(),
            reference.display(),
            reference_stats.dim()
        );
    }
    let fid = frechet_distance(&stats, &reference_stats)?;
    if let Some(f) = &features {
        eprintln!("{} samples, {}-d features ({detector_name})", f.size()[0], f.size()[1]);
    }
    println!("{} {fid}", proxy_label.unwrap_or("FID"));
    Ok(ExitCode::SUCCESS)
}

impl Args {
    fn batch_for_ref(&self) -> usize {
        match &self.command {
            Some(Command::Ref { detector, .. }) => detector.batch.max(1),
            None => self.detector.batch.max(1),
        }
    }
}

/// Features of `--num` samples from the EMA generator of a run (or snapshot).
fn generated_features(args: &Args, source: &Path, detector: &dyn FeatureDetector, device: Device) -> Result<Tensor> {
    let (run_dir, snapshot) = if source.join("state.json").is_file() {
        let run = source.parent().and_then(Path::parent).context("a snapshot lives in RUN/snapshots/")?;
        (run.to_path_buf(), source.to_path_buf())
    } else {
        let run = RunDir::open(source)?;
        let latest = run.latest_snapshot()?.with_context(|| format!("{} has no snapshot yet", source.display()))?;
        (source.to_path_buf(), latest)
    };
    let sampler = args.steps.map(|num_steps| HeunSampler { num_steps, ..Default::default() });
    let loaded =
        RunGenerator::load(&run_dir, Some(&snapshot), false, Some(device), sampler, &args.config_args.source())?;
    eprintln!("{} samples from {} ({} NFE)", args.num.unwrap_or(50_000), loaded.weights.display(), loaded.nfe);
    let num = args.num.unwrap_or(50_000);
    Ok(generator_features(loaded.generator.as_ref(), detector, num, args.detector.batch.max(1), args.seed, device)?)
}
