//! Side-by-side timing of two implementations of the same iteration (difi
//! and the PyTorch eager script): each round runs every contender once, as a
//! child process that prints one JSON object with the fields of
//! `difi bench --json`, the order alternating from round to round so that
//! drifts in the machine's load fall on both. Children run one at a time, so
//! each one's memory figures are its own.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use difi_core::error::{Error, Result};

use crate::bench::median;

/// One side of a comparison: a program and its arguments.
#[derive(Clone, Debug)]
pub struct Contender {
    /// Its name in the table (`difi`, `pytorch eager`).
    pub name: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// What one contender measured over all rounds.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub name: String,
    /// The median seconds per iteration of each round, in round order.
    pub rounds: Vec<f64>,
    /// The median of `rounds`.
    pub sec_per_iteration: f64,
    pub batch_size: i64,
    /// The largest peak resident memory of any round, MiB.
    pub peak_rss_mib: Option<f64>,
    /// The largest GPU memory in use of any round, MiB.
    pub gpu_mem_mib: Option<f64>,
    /// The largest CUDA allocator peak (tensors only) of any round, MiB.
    pub gpu_max_allocated_mib: Option<f64>,
    pub device: String,
    pub threads: Option<i64>,
}

impl Summary {
    /// Generator samples per second at the median time.
    pub fn images_per_s(&self) -> f64 {
        self.batch_size as f64 / self.sec_per_iteration
    }
}

fn error(message: String) -> Error {
    Error::Plugin { plugin: "bench --compare-pytorch".into(), message }
}

/// Checks that `python` runs and imports torch; returns torch's version.
pub fn check_python(python: &Path) -> Result<String> {
    let output = Command::new(python).args(["-c", "import torch; print(torch.__version__)"]).output().map_err(|e| {
        error(format!(
            "cannot run the Python interpreter `{}` ({e}); pass --python PATH to a Python with torch \
                 installed (the project's `.venv/bin/python`, made by `make setup`)",
            python.display()
        ))
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let last = stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("no message");
        return Err(error(format!(
            "`{}` cannot import torch ({last}); pass --python PATH to a Python with torch installed",
            python.display()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Runs `contender` once and parses the last line of its standard output
/// as JSON.
pub fn run_once(contender: &Contender) -> Result<serde_json::Value> {
    tracing::info!("running {}", contender.name);
    let output = Command::new(&contender.program)
        .args(&contender.args)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|e| error(format!("cannot run {} (`{}`): {e}", contender.name, contender.program.display())))?;
    if !output.status.success() {
        return Err(error(format!("{} failed ({})", contender.name, output.status)));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let line = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    serde_json::from_str(line)
        .map_err(|e| error(format!("{} printed no JSON report ({e}): `{}`", contender.name, line.trim())))
}

/// Runs `rounds` rounds of every contender, alternating their order, and
/// summarises each.
pub fn compare(contenders: &[Contender], rounds: usize) -> Result<Vec<Summary>> {
    let mut reports: Vec<Vec<serde_json::Value>> = vec![Vec::new(); contenders.len()];
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..contenders.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            reports[i].push(run_once(&contenders[i])?);
        }
    }
    contenders.iter().zip(&reports).map(|(c, r)| summarise(&c.name, r)).collect()
}

/// Summarises the JSON reports of one contender's rounds.
pub fn summarise(name: &str, reports: &[serde_json::Value]) -> Result<Summary> {
    let number = |report: &serde_json::Value, key: &str| report.get(key).and_then(serde_json::Value::as_f64);
    let rounds = reports
        .iter()
        .map(|r| {
            number(r, "sec_per_iteration_median")
                .or_else(|| number(r, "sec_per_iteration"))
                .ok_or_else(|| error(format!("{name}'s report has no sec_per_iteration")))
        })
        .collect::<Result<Vec<_>>>()?;
    let largest = |key: &str| reports.iter().filter_map(|r| number(r, key)).reduce(f64::max);
    let first = reports.first().ok_or_else(|| error(format!("{name} ran no rounds")))?;
    Ok(Summary {
        name: name.to_string(),
        sec_per_iteration: median(&rounds),
        rounds,
        batch_size: first.get("batch_size").and_then(serde_json::Value::as_i64).unwrap_or(0),
        peak_rss_mib: largest("peak_rss_mib"),
        gpu_mem_mib: largest("gpu_mem_mib"),
        gpu_max_allocated_mib: largest("gpu_max_allocated_mib"),
        device: first.get("device").and_then(|d| d.as_str()).unwrap_or("?").to_string(),
        threads: first.get("threads").and_then(serde_json::Value::as_i64),
    })
}

/// The comparison as a text table; the ratio is the last summary's time over
/// the first's (PyTorch time / difi time when difi comes first).
pub fn table(summaries: &[Summary]) -> String {
    let mib = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    let mut out = format!(
        "{:<14} {:>10} {:>9} {:>12} {:>10} {:>13}  {}\n",
        "", "s/iter", "images/s", "peak RSS MiB", "GPU MiB", "GPU alloc MiB", "rounds (median s/iter each)"
    );
    for s in summaries {
        let rounds: Vec<String> = s.rounds.iter().map(|r| format!("{r:.4}")).collect();
        out += &format!(
            "{:<14} {:>10.4} {:>9.1} {:>12} {:>10} {:>13}  {}\n",
            s.name,
            s.sec_per_iteration,
            s.images_per_s(),
            mib(s.peak_rss_mib),
            mib(s.gpu_mem_mib),
            mib(s.gpu_max_allocated_mib),
            rounds.join(", ")
        );
    }
    if let [first, .., last] = summaries {
        out += &format!(
            "ratio ({} time / {} time): {:.2}x\n",
            last.name,
            first.name,
            last.sec_per_iteration / first.sec_per_iteration
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_python_is_a_clear_error() {
        let err = check_python(Path::new("/nonexistent/bin/python")).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/bin/python") && err.contains("--python"), "{err}");
    }

    #[test]
    fn a_python_without_torch_is_a_clear_error() {
        // `false` runs and fails, as a Python without torch does.
        let err = check_python(Path::new("false")).unwrap_err().to_string();
        assert!(err.contains("cannot import torch"), "{err}");
    }

    #[test]
    fn rounds_alternate_and_are_summarised() {
        let log = std::env::temp_dir().join(format!("difi-compare-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let contender = |name: &str, seconds: &str| Contender {
            name: name.into(),
            program: "sh".into(),
            args: vec![
                "-c".into(),
                format!(
                    "echo {name} >> {}; echo noise; echo '{{\"sec_per_iteration_median\": {seconds}, \
                     \"batch_size\": 8, \"peak_rss_mib\": 100, \"device\": \"Cpu\"}}'",
                    log.display()
                )
                .into(),
            ],
        };
        let summaries = compare(&[contender("a", "0.5"), contender("b", "1.0")], 3).unwrap();
        let order = std::fs::read_to_string(&log).unwrap();
        std::fs::remove_file(&log).unwrap();
        assert_eq!(order.split_whitespace().collect::<Vec<_>>(), ["a", "b", "b", "a", "a", "b"]);
        assert_eq!(summaries[0].rounds, [0.5, 0.5, 0.5]);
        assert_eq!(summaries[1].images_per_s(), 8.0);
        let text = table(&summaries);
        assert!(text.contains("ratio (b time / a time): 2.00x"), "{text}");
    }

    #[test]
    fn a_child_without_a_report_is_named() {
        let c = Contender { name: "pytorch eager".into(), program: "true".into(), args: vec![] };
        let err = run_once(&c).unwrap_err().to_string();
        assert!(err.contains("pytorch eager printed no JSON report"), "{err}");
    }
}
