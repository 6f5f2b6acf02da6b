//! One fuzzing campaign in this process: starting from the corpus (and the
//! regression inputs), mutate, run the target under `catch_unwind`, keep
//! accepted inputs as new starting points, and record every panic or
//! suspicious error as a finding. Before each run the input is written to
//! the `current` file, so a supervisor can recover an input that crashed or
//! hung the process.

use std::collections::HashSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::findings;
use crate::mutate::mutate;
use crate::rng::Rng;
use crate::targets::{Target, Verdict};

/// Accepted inputs kept as starting points, at most.
const MAX_POOL: usize = 4096;

/// What a campaign is asked to do.
pub struct Plan {
    pub seconds: u64,
    pub seed: u64,
    /// Directories of starting inputs.
    pub corpus: Vec<PathBuf>,
    pub findings_dir: PathBuf,
    /// Where each input is written before it runs (none: not supervised).
    pub current: Option<PathBuf>,
}

/// What a campaign did.
#[derive(Debug, Default)]
pub struct Summary {
    pub execs: u64,
    pub elapsed: Duration,
    pub pool: usize,
    pub accepted: u64,
    pub findings: Vec<PathBuf>,
}

/// How one input went, panics included.
pub enum Outcome {
    Verdict(Verdict),
    Panicked(String),
}

impl Outcome {
    /// The description of a finding, if this is one.
    pub fn finding(&self) -> Option<String> {
        match self {
            Outcome::Verdict(Verdict::Suspicious(message)) => Some(format!("suspicious error: {message}")),
            Outcome::Panicked(message) => Some(format!("panic: {message}")),
            Outcome::Verdict(_) => None,
        }
    }
}

/// Runs `target` on `input`, catching panics.
pub fn run_one(target: &Target, input: &[u8]) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| (target.run)(input))) {
        Ok(verdict) => Outcome::Verdict(verdict),
        Err(payload) => Outcome::Panicked(
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "a panic without a message".into()),
        ),
    }
}

/// Every file directly inside `dirs` (missing directories are skipped), in name order.
pub fn read_inputs(dirs: &[PathBuf]) -> std::io::Result<Vec<(PathBuf, Vec<u8>)>> {
    let mut inputs = Vec::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else { continue };
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.retain(|p| p.is_file());
        paths.sort();
        for path in paths {
            let bytes = std::fs::read(&path)?;
            inputs.push((path, bytes));
        }
    }
    Ok(inputs)
}

/// Records the input about to run, for a supervisor.
struct CurrentInput(Option<File>);

impl CurrentInput {
    fn open(path: Option<&Path>) -> std::io::Result<Self> {
        Ok(CurrentInput(path.map(File::create).transpose()?))
    }

    /// Writes the length (8 bytes) and the bytes; a crash leaves them in the file.
    fn set(&self, input: &[u8]) -> std::io::Result<()> {
        if let Some(file) = &self.0 {
            file.write_all_at(&(input.len() as u64).to_le_bytes(), 0)?;
            file.write_all_at(input, 8)?;
        }
        Ok(())
    }
}

/// Reads what [`CurrentInput::set`] last wrote.
pub fn read_current(path: &Path) -> std::io::Result<Vec<u8>> {
    let bytes = std::fs::read(path)?;
    let len = bytes.get(..8).map(|b| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]))).unwrap_or(0) as usize;
    Ok(bytes.get(8..8 + len).map(<[u8]>::to_vec).unwrap_or_default())
}

/// Runs a campaign of `target` per `plan`.
pub fn run(target: &Target, plan: &Plan) -> std::io::Result<Summary> {
    let current = CurrentInput::open(plan.current.as_deref())?;
    let mut summary = Summary::default();
    let mut seen = HashSet::new();
    let mut found = HashSet::new();
    let mut record = |input: &[u8], description: String, summary: &mut Summary| -> std::io::Result<()> {
        if found.insert(findings::hash(input)) {
            let path = findings::record(&plan.findings_dir, target.name, input, &description)?;
            eprintln!("finding: {} ({description})", path.display());
            summary.findings.push(path);
        }
        Ok(())
    };
    let mut pool: Vec<Vec<u8>> = Vec::new();
    for (path, input) in read_inputs(&plan.corpus)? {
        current.set(&input)?;
        let outcome = run_one(target, &input);
        if let Some(description) = outcome.finding() {
            record(&input, format!("{description} (corpus file {})", path.display()), &mut summary)?;
        }
        seen.insert(findings::hash(&input));
        pool.push(input);
    }
    if pool.is_empty() {
        pool.push(Vec::new());
    }
    let mut rng = Rng::new(plan.seed);
    let start = Instant::now();
    let deadline = Duration::from_secs(plan.seconds);
    while start.elapsed() < deadline {
        for _ in 0..32 {
            let mut input = rng.pick(&pool).clone();
            let other = rng.pick(&pool).clone();
            mutate(&mut input, &other, &mut rng);
            current.set(&input)?;
            let outcome = run_one(target, &input);
            summary.execs += 1;
            if let Some(description) = outcome.finding() {
                record(&input, description, &mut summary)?;
            } else if matches!(outcome, Outcome::Verdict(Verdict::Accepted)) {
                summary.accepted += 1;
                if pool.len() < MAX_POOL && seen.insert(findings::hash(&input)) {
                    pool.push(input);
                }
            }
        }
    }
    summary.elapsed = start.elapsed();
    summary.pool = pool.len();
    Ok(summary)
}
