//! `difi bench CONFIG`: the speed and memory of training iterations for a
//! distillation config (Diff-Instruct) or a teacher-training config (EDM),
//! told apart as `difi check` tells them, timed after a warm-up with the GPU
//! synchronised before every clock reading; with `--compare-pytorch`, side
//! by side with the same iteration in PyTorch eager (`benches/pytorch_eager.py`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use difi_core::registry::Registry;
use difi_train::bench::{BenchReport, bench};
use difi_train::bench_compare::{Contender, check_python, compare, table};
use difi_train::bench_spec::{write_check, write_spec};
use difi_train::bench_teacher_check::write_teacher_check;
use difi_train::config::algorithm_of;
use difi_train::{Algorithm, DiffInstruct, EdmTeacherTraining, RunConfig};

use crate::ConfigArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The RON config.
    config: PathBuf,
    /// Timed iterations.
    #[arg(long, default_value_t = 20)]
    iterations: u64,
    /// Untimed iterations first (allocator, cuDNN autotuning).
    #[arg(long, default_value_t = 3)]
    warmup: u64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Time difi and the PyTorch eager script alternately, each round in a
    /// fresh process, and print both with the ratio.
    #[arg(long)]
    compare_pytorch: bool,
    /// Rounds of each with --compare-pytorch.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The Python with torch for --compare-pytorch (default: the project's .venv/bin/python).
    #[arg(long, value_name = "PATH")]
    python: Option<PathBuf>,
    /// The PyTorch eager script (default: benches/pytorch_eager.py of this repository).
    #[arg(long, value_name = "PATH")]
    script: Option<PathBuf>,
    /// Write the resolved config as the script's JSON spec and exit.
    #[arg(long, value_name = "FILE")]
    write_spec: Option<PathBuf>,
    /// Write the networks' weights, fixed inputs and difi's outputs, for a
    /// teacher-training config also the losses and weights of three training
    /// iterations (the script's --check compares against them), and exit.
    #[arg(long, value_name = "FILE")]
    write_check: Option<PathBuf>,
    #[command(flatten)]
    config_args: ConfigArgs,
}

/// What `difi bench` needs of an algorithm besides timing its iterations.
trait Benched: Algorithm {
    /// What one iteration does, for the printed report.
    fn iteration_summary(&self) -> String;

    /// Fields the `--json` report adds for this algorithm.
    fn json_fields(&self, report: &BenchReport, json: &mut serde_json::Value);

    /// Writes the check file of `--write-check`.
    fn write_check(config: &RunConfig<Self>, registry: &Registry, path: &Path) -> Result<()>;
}

impl Benched for DiffInstruct {
    fn iteration_summary(&self) -> String {
        format!("{} fake-score + 1 generator update", self.fake_updates_per_iter)
    }

    fn json_fields(&self, report: &BenchReport, json: &mut serde_json::Value) {
        let fake_updates = self.fake_updates_per_iter;
        json["fake_updates_per_iter"] = serde_json::json!(fake_updates);
        json["generator_images_per_s"] = serde_json::json!(report.images_per_s);
        json["fake_score_images_per_s"] = serde_json::json!(report.images_per_s * fake_updates as f64);
    }

    fn write_check(config: &RunConfig<Self>, registry: &Registry, path: &Path) -> Result<()> {
        let device = config.run.resolve_device()?;
        Ok(write_check(config, registry, device, path)?)
    }
}

impl Benched for EdmTeacherTraining {
    fn iteration_summary(&self) -> String {
        match self.batch_per_pass {
            Some(per_pass) => format!("1 network update in passes of {per_pass}: EDM loss, Adam, EMA"),
            None => "1 network update: EDM loss, Adam, EMA".into(),
        }
    }

    fn json_fields(&self, _report: &BenchReport, _json: &mut serde_json::Value) {}

    fn write_check(config: &RunConfig<Self>, registry: &Registry, path: &Path) -> Result<()> {
        Ok(write_teacher_check(config, registry, path)?)
    }
}

pub fn run(args: Args) -> Result<ExitCode> {
    let algorithm = algorithm_of(&args.config).with_context(|| format!("reading config {}", args.config.display()))?;
    match algorithm.as_str() {
        DiffInstruct::NAME => run_for::<DiffInstruct>(&args),
        EdmTeacherTraining::NAME => run_for::<EdmTeacherTraining>(&args),
        other => anyhow::bail!(
            "{} is a `{other}` config; `difi bench` times `{}` (distillation) and `{}` (teacher training) configs",
            args.config.display(),
            DiffInstruct::NAME,
            EdmTeacherTraining::NAME
        ),
    }
}

fn run_for<A: Benched>(args: &Args) -> Result<ExitCode> {
    let (config, registry) = args
        .config_args
        .source()
        .load::<A>(&args.config)
        .with_context(|| format!("checking config {}", args.config.display()))?;
    if let Some(path) = &args.write_spec {
        write_spec(&config, path).with_context(|| format!("writing {}", path.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(path) = &args.write_check {
        A::write_check(&config, &registry, path).with_context(|| format!("writing {}", path.display()))?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.compare_pytorch {
        return compare_pytorch(args, &config);
    }
    let report = bench(&config, &registry, args.iterations, args.warmup).context("timing iterations")?;
    if args.json {
        let mut json = serde_json::to_value(&report)?;
        json["implementation"] = serde_json::json!("difi");
        json["config"] = serde_json::json!(args.config);
        json["algorithm"] = serde_json::json!(A::NAME);
        config.algorithm.json_fields(&report, &mut json);
        println!("{json}");
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} ({}) on {}, batch {}, {} threads",
        args.config.display(),
        A::NAME,
        report.device,
        report.batch_size,
        report.threads
    );
    println!(
        "  {:.4} s per iteration, median (mean {:.4}; {})",
        report.sec_per_iteration_median,
        report.sec_per_iteration,
        config.algorithm.iteration_summary()
    );
    println!("  {:.1} images/s, {:.1} s per kimg", report.images_per_s, report.sec_per_kimg);
    if report.cuda_graph {
        println!("  timed iterations replayed from a CUDA graph");
    }
    if let Some(mib) = report.gpu_mem_mib {
        println!("  GPU memory in use {mib:.0} MiB");
    }
    if let Some(mib) = report.gpu_max_allocated_mib {
        let parts: Vec<String> = report
            .gpu_max_allocated_mib_by_part
            .iter()
            .flatten()
            .map(|(part, mib)| format!("{part} {mib:.0}"))
            .collect();
        println!("  GPU memory held by tensors at peak {mib:.0} MiB (per update: {})", parts.join(", "));
    }
    println!(
        "  resident memory {:.0} MiB (peak {:.0} MiB)",
        report.rss_mib.unwrap_or(f64::NAN),
        report.peak_rss_mib.unwrap_or(f64::NAN)
    );
    Ok(ExitCode::SUCCESS)
}

/// `path` relative to the working directory if it is there, else to this
/// repository (where the binary was built).
fn in_repository(path: &str) -> PathBuf {
    let local = PathBuf::from(path);
    if local.exists() { local } else { Path::new(env!("CARGO_MANIFEST_DIR")).join(path) }
}

fn compare_pytorch<A: Algorithm>(args: &Args, config: &RunConfig<A>) -> Result<ExitCode> {
    let python = args.python.clone().unwrap_or_else(|| in_repository(".venv/bin/python"));
    let torch = check_python(&python)?;
    let script = args.script.clone().unwrap_or_else(|| in_repository("benches/pytorch_eager.py"));
    anyhow::ensure!(script.exists(), "the PyTorch script {} does not exist; pass --script PATH", script.display());
    let spec = std::env::temp_dir().join(format!("difi-bench-spec-{}.json", std::process::id()));
    write_spec(config, &spec).with_context(|| format!("writing {}", spec.display()))?;

    let counts = |mut v: Vec<OsString>| {
        v.extend(
            ["--json", "--iterations", &args.iterations.to_string(), "--warmup", &args.warmup.to_string()]
                .map(OsString::from),
        );
        v
    };
    let mut difi_args: Vec<OsString> = vec!["bench".into(), args.config.clone().into()];
    for value in &args.config_args.overrides {
        difi_args.extend(["--set".into(), value.into()]);
    }
    for plugin in &args.config_args.plugins {
        difi_args.extend(["--plugin".into(), plugin.into()]);
    }
    let contenders = [
        Contender {
            name: "difi".into(),
            program: std::env::current_exe().context("locating the difi binary")?,
            args: counts(difi_args),
        },
        Contender {
            name: "pytorch eager".into(),
            program: python.clone(),
            args: counts(vec![script.into(), "--spec".into(), spec.clone().into()]),
        },
    ];
    let summaries = compare(&contenders, args.rounds.max(1));
    let _ = std::fs::remove_file(&spec);
    let summaries = summaries.context("comparing with PyTorch")?;
    if args.json {
        let rows: Vec<_> = summaries
            .iter()
            .map(|s| {
                serde_json::json!({
                    "implementation": s.name, "device": s.device, "threads": s.threads, "batch_size": s.batch_size,
                    "sec_per_iteration": s.sec_per_iteration, "rounds": s.rounds, "images_per_s": s.images_per_s(),
                    "peak_rss_mib": s.peak_rss_mib, "gpu_mem_mib": s.gpu_mem_mib,
                })
            })
            .collect();
        let ratio = summaries[1].sec_per_iteration / summaries[0].sec_per_iteration;
        println!("{}", serde_json::json!({"config": args.config, "torch": torch, "results": rows, "ratio": ratio}));
        return Ok(ExitCode::SUCCESS);
    }
    let first = &summaries[0];
    println!(
        "{} on {}, batch {}, {} threads, {} rounds of {} iterations (torch {torch})",
        args.config.display(),
        first.device,
        first.batch_size,
        first.threads.map_or("?".into(), |t| t.to_string()),
        args.rounds.max(1),
        args.iterations
    );
    print!("{}", table(&summaries));
    Ok(ExitCode::SUCCESS)
}
