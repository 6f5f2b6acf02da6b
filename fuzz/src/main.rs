//! `difi-fuzz`: fuzz one reader of untrusted files for a while, or replay
//! one input through it. See `difi-fuzz --help` and docs/security.md.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use difi_fuzz::campaign::{self, Outcome, Plan};
use difi_fuzz::supervisor::{self, Ending};
use difi_fuzz::targets::{self, TARGETS, Target, Verdict};
use difi_fuzz::{findings, memory_limit};

/// Fuzzes difi's readers of untrusted files (stable Rust, no coverage feedback).
#[derive(Parser)]
#[command(name = "difi-fuzz")]
struct Args {
    /// The target to fuzz (see --list).
    target: Option<String>,
    /// Lists the targets.
    #[arg(long)]
    list: bool,
    /// How long to fuzz.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Seed of the mutations (a run is repeatable with the same seed).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Starting inputs (default: fuzz/corpus/<target> and fuzz/regressions/<target>).
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Where findings are written.
    #[arg(long, default_value_os_t = findings::default_dir())]
    findings: PathBuf,
    /// Runs these inputs through the target once each, and says how each went.
    #[arg(long, num_args = 1..)]
    replay: Vec<PathBuf>,
    /// Runs the campaign in this process instead of a supervised child.
    #[arg(long)]
    in_process: bool,
    /// Internal: the child of a supervised campaign, writing each input here first.
    #[arg(long, hide = true)]
    worker_current: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        for target in TARGETS {
            println!("{:18} {}", target.name, target.about);
        }
        return ExitCode::SUCCESS;
    }
    let Some(name) = args.target.as_deref() else {
        eprintln!("give a target (difi-fuzz --list shows them)");
        return ExitCode::from(2);
    };
    let Some(target) = targets::find(name) else {
        eprintln!("no target `{name}` (difi-fuzz --list shows them)");
        return ExitCode::from(2);
    };
    let result = run(&args, target);
    targets::remove_scratch_dir();
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("difi-fuzz: {err}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args, target: &Target) -> std::io::Result<ExitCode> {
    let supervised = !args.in_process && args.worker_current.is_none() && args.replay.is_empty();
    if supervised {
        return supervise(args, target);
    }
    memory_limit::apply()?;
    if !args.replay.is_empty() {
        return replay(&args.replay, target);
    }
    // Panics are findings, reported with their inputs: the default hook's output would only be noise.
    std::panic::set_hook(Box::new(|_| {}));
    let corpus = match &args.corpus {
        Some(dir) => vec![dir.clone()],
        None => vec![target.corpus_dir(), target.regressions_dir()],
    };
    let plan = Plan {
        seconds: args.seconds,
        seed: args.seed,
        corpus,
        findings_dir: args.findings.clone(),
        current: args.worker_current.clone(),
    };
    let summary = campaign::run(target, &plan)?;
    let secs = summary.elapsed.as_secs_f64().max(1e-9);
    println!(
        "{}: {} execs in {:.1} s ({:.0}/s), {} accepted, {} inputs in the pool, {} findings",
        target.name,
        summary.execs,
        secs,
        summary.execs as f64 / secs,
        summary.accepted,
        summary.pool,
        summary.findings.len()
    );
    Ok(if summary.findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn supervise(args: &Args, target: &Target) -> std::io::Result<ExitCode> {
    std::fs::create_dir_all(&args.findings)?;
    let current = args.findings.join(format!(".current-{}-{}", target.name, std::process::id()));
    let mut worker = vec![
        target.name.to_string(),
        "--seconds".into(),
        args.seconds.to_string(),
        "--seed".into(),
        args.seed.to_string(),
        "--findings".into(),
        args.findings.display().to_string(),
        "--worker-current".into(),
        current.display().to_string(),
    ];
    if let Some(corpus) = &args.corpus {
        worker.extend(["--corpus".into(), corpus.display().to_string()]);
    }
    let ending = supervisor::supervise(&worker, target.name, args.seconds, &current, &args.findings);
    // The scratch file is only useful while the worker runs.
    let _ = std::fs::remove_file(&current);
    Ok(match ending? {
        Ending::Finished(0) => ExitCode::SUCCESS,
        Ending::Finished(_) | Ending::Crashed(_) => ExitCode::from(1),
    })
}

fn replay(files: &[PathBuf], target: &Target) -> std::io::Result<ExitCode> {
    let mut failed = false;
    for file in files {
        let input = std::fs::read(file)?;
        let outcome = campaign::run_one(target, &input);
        let text = match &outcome {
            Outcome::Verdict(Verdict::Accepted) => "accepted".to_string(),
            Outcome::Verdict(Verdict::Refused(message)) => format!("refused: {message}"),
            Outcome::Verdict(Verdict::Suspicious(message)) => format!("FINDING, suspicious error: {message}"),
            Outcome::Panicked(message) => format!("FINDING, panic: {message}"),
        };
        failed |= outcome.finding().is_some();
        println!("{}: {text}", file.display());
    }
    Ok(if failed { ExitCode::from(1) } else { ExitCode::SUCCESS })
}
