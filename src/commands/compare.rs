//! `difi compare CONFIG --divergences ikl,sid,dmd,sim --outdir DIR`: the
//! same teacher, generator, budget and seed distilled once per divergence
//! (each with its plugin's defaults, or a `--variant`), then one table and
//! one chart of quality against thousands of images seen.
//!
//! Quality is what the teacher allows: against an exact (`gmm`) teacher, the
//! energy-distance excess and the largest mode-share error of every snapshot
//! (as `difi evaluate` measures them); against an image teacher, the metrics
//! the config computes at snapshots (`metrics.list`, e.g. proxy-FID).
//!
//! Runs live in `DIR/LABEL`; running the same command again continues
//! unfinished runs and skips finished ones, so Ctrl-C loses nothing. A run
//! already in `DIR` is taken as recorded: changed `--set` values apply to
//! new runs only.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use difi_core::params::decode_params;
use difi_core::rng::{RngStream, derive_seed};
use difi_train::generate::generate_samples;
use difi_train::run_dir::RunDir;
use difi_train::run_generator::RunGenerator;
use difi_train::runner::Outcome;
use difi_train::snapshot::{STATE_FILE, TrainState};
use difi_train::stop::STOPPED_EXIT_CODE;
use difi_train::{ConfigSource, DiffInstruct, Session};
use difi_zoo::toy::gmm::{Gmm, GmmParams};
use difi_zoo::toy::gmm_report::GmmReport;
use serde::Serialize;

use crate::ConfigArgs;
use crate::report::{Panel, Series, draw_panels};

#[derive(clap::Args)]
pub struct Args {
    /// The distillation config every run starts from.
    config: PathBuf,
    /// Divergence plugins to compare, each with its defaults.
    #[arg(long, value_delimiter = ',', default_value = "ikl,sid,dmd,sim")]
    divergences: Vec<String>,
    /// A further run: LABEL=COMPONENT, e.g. 'sid-1.2=(plugin: "sid", params: (alpha: 1.2))'; repeatable.
    #[arg(long = "variant", value_name = "LABEL=COMPONENT")]
    variants: Vec<String>,
    /// Directory of the runs, the table and the chart.
    #[arg(long)]
    outdir: PathBuf,
    /// Samples per snapshot when judging against an exact (`gmm`) teacher.
    #[arg(long, default_value_t = 5000)]
    n: i64,
    /// Seed of those samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    #[command(flatten)]
    config_args: ConfigArgs,
}

/// One run of the comparison: its label and the divergence component (RON).
struct Entry {
    label: String,
    component: String,
}

/// A quality measure at one snapshot.
#[derive(Serialize)]
struct Point {
    kimg: f64,
    values: Vec<(String, f64)>,
}

/// What one run gave.
#[derive(Serialize)]
struct Outcomes {
    label: String,
    divergence: String,
    /// Training seconds over all sessions (absent when the run failed first).
    seconds: Option<f64>,
    /// Why the run ended early, if it did (e.g. a non-finite loss).
    error: Option<String>,
    points: Vec<Point>,
}

fn entries(args: &Args) -> Result<Vec<Entry>> {
    let mut entries: Vec<Entry> = Vec::new();
    for name in args.divergences.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
        entries.push(Entry { label: name.to_string(), component: format!("(plugin: {name:?})") });
    }
    for variant in &args.variants {
        let Some((label, component)) = variant.split_once('=') else {
            bail!(
                "--variant {variant:?}: expected LABEL=COMPONENT, e.g. 'sid-1.2=(plugin: \"sid\", params: (alpha: 1.2))'"
            );
        };
        entries.push(Entry { label: label.trim().to_string(), component: component.trim().to_string() });
    }
    for (i, entry) in entries.iter().enumerate() {
        let safe = entry.label.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if entry.label.is_empty() || !safe || entry.label.starts_with('.') {
            bail!("run label {:?} must be a plain name (letters, digits, - _ .)", entry.label);
        }
        if entries[..i].iter().any(|e| e.label == entry.label) {
            bail!("run label {:?} appears twice", entry.label);
        }
    }
    if entries.is_empty() {
        bail!("nothing to compare: give --divergences or --variant");
    }
    Ok(entries)
}

/// Where training stood when `snapshot` was written.
fn state_of(snapshot: &Path) -> Result<TrainState> {
    let path = snapshot.join(STATE_FILE);
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    serde_json::from_str(&text).with_context(|| path.display().to_string())
}

/// The recorded progress of a run directory, if it has a snapshot.
fn progress(dir: &Path) -> Result<Option<TrainState>> {
    RunDir::open(dir)?.latest_snapshot()?.map(|snapshot| state_of(&snapshot)).transpose()
}

/// Trains (or continues) one run; `Ok(None)` when Ctrl-C stopped it.
fn train(config: &Path, entry: &Entry, dir: &Path, args: &ConfigArgs) -> Result<Option<f64>> {
    let source = args.source();
    let session = if dir.join("config.ron").is_file() {
        let recorded = ConfigSource { overrides: Vec::new(), plugins: source.plugins.clone() };
        let (config, _) = recorded.load::<DiffInstruct>(&dir.join("config.ron"))?;
        let total_nimg = (config.run.schedule.total_kimg * 1000.0).round() as u64;
        if let Some(state) = progress(dir)?
            && state.nimg >= total_nimg
        {
            eprintln!("{}: finished earlier ({:.1} kimg)", entry.label, state.nimg as f64 / 1000.0);
            return Ok(Some(state.elapsed_s));
        }
        Session::<DiffInstruct>::resume(dir, &recorded)?
    } else {
        let mut with_divergence = source.clone();
        with_divergence.overrides.push(format!("divergence={}", entry.component));
        let (config, registry) = with_divergence
            .load::<DiffInstruct>(config)
            .with_context(|| format!("config {} with divergence {}", config.display(), entry.component))?;
        Session::create(config, &registry, dir)?
    };
    eprintln!("{}: training in {}", entry.label, dir.display());
    let finished = session.run()?;
    Ok(match finished.outcome {
        Outcome::Finished => Some(finished.state.elapsed_s),
        Outcome::Stopped => None,
    })
}

/// Energy-distance excess (as a share of E‖X − X′‖), largest mode-share
/// error and largest mode-spread error (all in %) of every snapshot of a run
/// against its exact teacher: the quality bar of `tests/toy_gmm.rs`.
fn gmm_points(dir: &Path, params: &GmmParams, args: &Args) -> Result<Vec<Point>> {
    let source = ConfigSource { overrides: Vec::new(), plugins: args.config_args.plugins.clone() };
    let gmm = Gmm::new(params, tch::Device::Cpu)?;
    let mut points = Vec::new();
    for snapshot in RunDir::open(dir)?.snapshots()? {
        let state = state_of(&snapshot)?;
        let loaded = RunGenerator::load(dir, Some(&snapshot), false, None, None, &source)?;
        let (samples, _) = generate_samples(loaded.generator.as_ref(), args.n, 1000, args.seed, loaded.device)?;
        tch::manual_seed(derive_seed(args.seed, RngStream::Sampling, u64::MAX));
        let report = GmmReport::measure(&gmm, &params.stds, &samples)?;
        let spread_error =
            report.spreads.iter().zip(&report.stds).map(|(s, std)| (s - std).abs() / std).fold(0.0, f64::max);
        points.push(Point {
            kimg: state.nimg as f64 / 1000.0,
            values: vec![
                ("energy excess %".into(), report.energy_excess * 100.0),
                ("max mode-share error %".into(), report.max_share_error * 100.0),
                ("max spread error %".into(), spread_error * 100.0),
            ],
        });
    }
    Ok(points)
}

/// The snapshot metrics a run recorded (`metrics.jsonl`), one point per snapshot.
fn recorded_points(dir: &Path) -> Result<Vec<Point>> {
    let path = RunDir::open(dir)?.metrics_path();
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let mut points: Vec<Point> = Vec::new();
    for (i, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), i + 1))?;
        let (Some(kimg), Some(metric)) = (value["kimg"].as_f64(), value["metric"].as_str()) else { continue };
        let results = value["results"].as_object().into_iter().flatten();
        let values = results.filter_map(|(key, v)| Some((format!("{metric} {key}"), v.as_f64()?)));
        match points.iter_mut().find(|p| p.kimg == kimg) {
            Some(point) => point.values.extend(values),
            None => points.push(Point { kimg, values: values.collect() }),
        }
    }
    points.sort_by(|a, b| a.kimg.total_cmp(&b.kimg));
    Ok(points)
}

impl Outcomes {
    /// `(kimg, value)` of `measure` at every snapshot that has it.
    fn series(&self, measure: &str) -> Vec<(f64, f64)> {
        let value_at = |p: &Point| p.values.iter().find(|(name, _)| name == measure).map(|(_, v)| (p.kimg, *v));
        self.points.iter().filter_map(value_at).collect()
    }
}

/// The markdown table: per run, the last and best value of each measure.
fn table(results: &[Outcomes], measures: &[String]) -> String {
    let mut out = String::from("| run | divergence | seconds | kimg |");
    for measure in measures {
        out += &format!(" {measure} (last) | {measure} (best) |");
    }
    out += "\n|---|---|---:|---:|";
    out += &"---:|---:|".repeat(measures.len());
    out += "\n";
    for result in results {
        let seconds = result.seconds.map_or("—".into(), |s| format!("{s:.0}"));
        let kimg = result.points.last().map_or("—".into(), |p| format!("{}", p.kimg));
        out += &format!("| {} | `{}` | {seconds} | {kimg} |", result.label, result.divergence);
        for measure in measures {
            let series: Vec<f64> = result.series(measure).into_iter().map(|(_, v)| v).collect();
            let last = series.last().map_or("—".into(), |v| format!("{v:.4}"));
            let best = series.iter().copied().filter(|v| v.is_finite()).reduce(f64::min);
            out += &format!(" {last} | {} |", best.map_or("—".into(), |v| format!("{v:.4}")));
        }
        if let Some(error) = &result.error {
            out += &format!(" failed: {}", error.replace('|', "/").replace('\n', " "));
        }
        out += "\n";
    }
    out
}

pub fn run(args: Args) -> Result<ExitCode> {
    let entries = entries(&args)?;
    let (base, _) = args
        .config_args
        .source()
        .load::<DiffInstruct>(&args.config)
        .with_context(|| format!("checking config {}", args.config.display()))?;
    let exact: Option<GmmParams> = match base.algorithm.teacher.plugin.as_deref() {
        Some("gmm") => Some(decode_params(&base.algorithm.teacher.params)?),
        _ if base.run.metrics.list.is_empty() => bail!(
            "{}: an image teacher is compared by the metrics computed at snapshots; the config lists none \
             (metrics.list, e.g. --set 'metrics.list=[\"fid2k_full\"]')",
            args.config.display()
        ),
        _ => None,
    };
    check_entries_resolve(&args.config, &entries, &args.config_args)?;
    std::fs::create_dir_all(&args.outdir).with_context(|| args.outdir.display().to_string())?;

    let mut results = Vec::new();
    for entry in &entries {
        let dir = args.outdir.join(&entry.label);
        let (seconds, error) = match train(&args.config, entry, &dir, &args.config_args) {
            Ok(Some(seconds)) => (Some(seconds), None),
            Ok(None) => {
                eprintln!("stopped; run the same command again to continue");
                return Ok(ExitCode::from(STOPPED_EXIT_CODE));
            }
            Err(err) if dir.join("config.ron").is_file() => {
                eprintln!("{}: {err:#}", entry.label);
                (None, Some(format!("{err:#}")))
            }
            Err(err) => return Err(err.context(format!("run {}", entry.label))),
        };
        let points = match &exact {
            Some(params) => gmm_points(&dir, params, &args)?,
            None => recorded_points(&dir)?,
        };
        results.push(Outcomes {
            label: entry.label.clone(),
            divergence: entry.component.clone(),
            seconds,
            error,
            points,
        });
    }

    let mut measures: Vec<String> = Vec::new();
    for (name, _) in results.iter().flat_map(|r| r.points.iter().flat_map(|p| p.values.iter())) {
        if !measures.contains(name) {
            measures.push(name.clone());
        }
    }
    let markdown = table(&results, &measures);
    let table_path = args.outdir.join("compare.md");
    difi_formats::atomic::write_atomically(&table_path, markdown.as_bytes())?;
    let json_path = args.outdir.join("compare.json");
    difi_formats::atomic::write_atomically(&json_path, serde_json::to_string_pretty(&results)?.as_bytes())?;
    let panels: Vec<Panel> = measures
        .iter()
        .map(|measure| Panel {
            title: measure.clone(),
            log_y: spans_decades(&results, measure),
            lines: results
                .iter()
                .map(|r| Series { title: r.label.clone(), points: r.series(measure), markers: true })
                .collect(),
        })
        .collect();
    let chart_path = args.outdir.join("compare.png");
    draw_panels(&panels, "kimg", &chart_path)?;
    print!("{markdown}");
    eprintln!("table {}, chart {}, data {}", table_path.display(), chart_path.display(), json_path.display());
    Ok(ExitCode::SUCCESS)
}

/// Whether a measure's positive values span more than two decades across the
/// runs (a diverged run next to converged ones): then it is drawn on a log axis.
fn spans_decades(results: &[Outcomes], measure: &str) -> bool {
    let values = results.iter().flat_map(|r| &r.points).flat_map(|p| &p.values);
    let positive: Vec<f64> =
        values.filter(|(n, v)| n == measure && *v > 0.0 && v.is_finite()).map(|(_, v)| *v).collect();
    let (lo, hi) = positive.iter().fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    !positive.is_empty() && hi / lo > 100.0
}

/// Every divergence must resolve before the first run starts, so a typo in
/// the last one does not surface after hours of training.
fn check_entries_resolve(config: &Path, entries: &[Entry], args: &ConfigArgs) -> Result<()> {
    for entry in entries {
        let mut source = args.source();
        source.overrides.push(format!("divergence={}", entry.component));
        source
            .load::<DiffInstruct>(config)
            .with_context(|| format!("run {}: divergence {}", entry.label, entry.component))?;
    }
    Ok(())
}
