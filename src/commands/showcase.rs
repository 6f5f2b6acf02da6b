//! `difi showcase RUN`: a distilled generator beside its teacher, measured
//! the same way. Writes one PNG with the teacher's samples (Heun, many NFE)
//! on the left and the student's (1 NFE) on the right, from the same
//! latents and classes, and prints a table of proxy-FID (or FID) and samples
//! per second: the teacher at full and at few steps, the student before
//! training (iteration 0) and after.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use difi_core::traits::Generator;
use difi_formats::image::to_uint8;
use difi_metrics::detectors::{DetectorOptions, DetectorSpec};
use difi_metrics::{FeatureStats, frechet_distance};
use difi_train::generate::{generate_samples, sample_grid};
use difi_train::run_generator::{RunGenerator, RunKind};
use difi_zoo::heun_sampler::{HeunSampler, SampledGenerator};
use tch::{Device, Kind, Tensor};

use crate::ConfigArgs;

#[derive(clap::Args)]
pub struct Args {
    /// A Diff-Instruct run directory.
    run: PathBuf,
    /// The picture to write (PNG).
    #[arg(long)]
    out: PathBuf,
    /// Samples per measurement.
    #[arg(long, default_value_t = 2000)]
    n: i64,
    /// Heun steps of the teacher's reference sampling (NFE = 2·steps − 1).
    #[arg(long, default_value_t = 18)]
    teacher_steps: usize,
    /// Heun steps of the teacher's few-step sampling, to compare with one step.
    #[arg(long, default_value_t = 3)]
    few_steps: usize,
    /// Detector (default: the run's metrics.detector).
    #[arg(long)]
    detector: Option<DetectorSpec>,
    /// Reference statistics .npz (default: the run's metrics.reference).
    #[arg(long = "ref")]
    reference: Option<PathBuf>,
    /// Seed of latents and classes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Samples per forward pass.
    #[arg(long, default_value_t = 250)]
    batch: i64,
    /// Pixels per image pixel in the picture.
    #[arg(long, default_value_t = 3)]
    zoom: i64,
    #[command(flatten)]
    config_args: ConfigArgs,
}

/// One line of the table.
struct Measured {
    what: String,
    nfe: usize,
    distance: f64,
    samples_per_s: f64,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let loaded = RunGenerator::load(&args.run, None, false, None, None, &args.config_args.source())?;
    let RunKind::DiffInstruct(config) = &loaded.kind else {
        bail!(
            "{}: `difi showcase` compares a distilled generator with its teacher; this is a teacher run",
            args.run.display()
        );
    };
    let device = loaded.device;
    let metrics = &config.run.metrics;
    let detector_spec = args.detector.clone().unwrap_or_else(|| metrics.detector.clone());
    let reference = match (&args.reference, &metrics.reference) {
        (Some(path), _) => path.clone(),
        (None, Some(path)) => config.path(path),
        (None, None) => bail!("give --ref REF.npz (the run names no metrics.reference)"),
    };
    let options = DetectorOptions {
        inception_path: metrics.inception_path.as_ref().map(|p| config.path(p)),
        base_dir: Some(config.base_dir().to_path_buf()),
    };
    let detector = detector_spec.open(&options, device)?;
    let reference = FeatureStats::load(&reference)?;
    let label = if detector.is_proxy() { "proxy-FID" } else { "FID" };

    let registry = config.registry()?;
    let env = config.build_env(&registry, device, None);
    let sampled = |steps: usize| -> Result<SampledGenerator> {
        let teacher = config.algorithm.build_teacher(&env)?;
        Ok(SampledGenerator::new(teacher, HeunSampler { num_steps: steps, ..Default::default() })?)
    };
    let teacher = sampled(args.teacher_steps)?;
    let few = sampled(args.few_steps)?;
    let mut initial = config.algorithm.build_generator(&env).context("building the iteration-0 student")?;
    initial.set_train(false);

    let measure = |what: &str, generator: &dyn Generator, nfe: usize| -> Result<Measured> {
        let started = Instant::now();
        let (samples, _) = generate_samples(generator, args.n, args.batch, args.seed, device)?;
        let seconds = started.elapsed().as_secs_f64();
        eprintln!("{what}: {} samples in {seconds:.1} s", args.n);
        let images = to_uint8(&samples)?;
        let mut features = Vec::new();
        for batch in images.split(args.batch.max(1), 0) {
            features.push(detector.features(&batch)?);
        }
        let stats = FeatureStats::from_features(&Tensor::f_cat(&features, 0)?)?;
        let distance = frechet_distance(&stats, &reference)?;
        Ok(Measured { what: what.to_string(), nfe, distance, samples_per_s: args.n as f64 / seconds })
    };
    let rows = vec![
        measure("teacher", &teacher, teacher.sampler().nfe())?,
        measure("teacher, few steps", &few, few.sampler().nfe())?,
        measure("student at iteration 0", initial.as_ref(), 1)?,
        measure("student", loaded.generator.as_ref(), 1)?,
    ];

    let side = if teacher.label_dim() > 0 { teacher.label_dim() } else { 8 };
    let left = sample_grid(&teacher, side, side, args.seed, device)?.context("the teacher does not make images")?;
    let right = sample_grid(loaded.generator.as_ref(), side, side, args.seed, device)?
        .context("the student does not make images")?;
    let gap = Tensor::f_full([left.size()[0], left.size()[1], 2], 255, (Kind::Uint8, Device::Cpu))?;
    let picture = Tensor::f_cat(&[left.to_device(Device::Cpu), gap, right.to_device(Device::Cpu)], 2)?;
    let zoom = args.zoom.max(1);
    let picture = picture.f_repeat_interleave_self_int(zoom, 1, None)?.f_repeat_interleave_self_int(zoom, 2, None)?;
    let right_x = ((left.size()[2] + 2) * zoom) as usize;
    let caption =
        |m: &Measured| format!("{}, {} NFE: {label} {:.1}, {:.0}/s", m.what, m.nfe, m.distance, m.samples_per_s);
    let captions = [(2, caption(&rows[0])), (right_x + 2, caption(&rows[3]))];
    crate::report::write_captioned(&picture, &captions, &args.out)?;

    println!("{:<26} {:>5} {:>12} {:>12}", "", "NFE", label, "samples/s");
    for row in &rows {
        println!("{:<26} {:>5} {:>12.2} {:>12.1}", row.what, row.nfe, row.distance, row.samples_per_s);
    }
    println!(
        "{} samples each against {}; {} with {}",
        args.n,
        detector.name(),
        args.out.display(),
        format_args!(
            "the teacher ({} NFE, left) and the student (1 NFE, right), same latents and classes",
            rows[0].nfe
        )
    );
    Ok(ExitCode::SUCCESS)
}
