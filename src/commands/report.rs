//! `difi report RUN`: a run's losses (`stats.jsonl`) and metrics
//! (`metrics.jsonl`) against thousands of images seen, as one PNG.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};

use crate::report::{Series, draw};

#[derive(clap::Args)]
pub struct Args {
    /// The run directory.
    run: PathBuf,
    /// The chart to write (default: RUN/report.png).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// The JSON objects of a `.jsonl` file (none when it does not exist).
fn read_lines(path: &Path) -> Result<Vec<serde_json::Value>> {
    if !path.exists() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), i + 1)))
        .collect()
}

pub fn run(args: Args) -> Result<ExitCode> {
    if !args.run.join("config.ron").is_file() {
        bail!("{}: not a run directory (no config.ron)", args.run.display());
    }
    let mut series: BTreeMap<String, Series> = BTreeMap::new();
    for line in read_lines(&args.run.join("stats.jsonl"))? {
        let Some(kimg) = line["kimg"].as_f64() else { continue };
        for (key, value) in line.as_object().into_iter().flatten() {
            if key.starts_with("loss_") {
                let entry = series.entry(key.clone()).or_insert_with(|| Series {
                    title: key.replace('_', " "),
                    points: Vec::new(),
                    markers: false,
                });
                entry.points.push((kimg, value.as_f64().unwrap_or(f64::NAN)));
            }
        }
    }
    let mut metric_series: BTreeMap<String, Series> = BTreeMap::new();
    for line in read_lines(&args.run.join("metrics.jsonl"))? {
        let (Some(kimg), Some(metric)) = (line["kimg"].as_f64(), line["metric"].as_str()) else { continue };
        for (key, value) in line["results"].as_object().into_iter().flatten() {
            let title = format!("{metric} {key} ({})", line["detector"].as_str().unwrap_or("?"));
            let entry = metric_series.entry(title.clone()).or_insert_with(|| Series {
                title,
                points: Vec::new(),
                markers: true,
            });
            entry.points.push((kimg, value.as_f64().unwrap_or(f64::NAN)));
        }
    }
    let all: Vec<Series> = series.into_values().chain(metric_series.into_values()).collect();
    if all.is_empty() {
        bail!("{}: no ticks or metrics recorded yet", args.run.display());
    }
    let out = args.out.unwrap_or_else(|| args.run.join("report.png"));
    draw(&all, "kimg", &out)?;
    eprintln!("{} charts → {}", all.len(), out.display());
    Ok(ExitCode::SUCCESS)
}
