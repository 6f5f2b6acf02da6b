//! What the training commands share: `CONFIG --outdir DIR` starts a run,
//! `--resume DIR` continues one; difi-train does the rest.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use difi_train::runner::Outcome;
use difi_train::stop::STOPPED_EXIT_CODE;
use difi_train::{Algorithm, Session};

use crate::ConfigArgs;

#[derive(clap::Args)]
pub struct Args {
    /// The RON config (not with --resume).
    #[arg(required_unless_present = "resume", conflicts_with = "resume")]
    config: Option<PathBuf>,
    /// The new run directory (created; must be empty or absent).
    #[arg(long, required_unless_present = "resume", conflicts_with = "resume")]
    outdir: Option<PathBuf>,
    /// Continue the run in this directory from its latest snapshot.
    #[arg(long, value_name = "RUN_DIR")]
    resume: Option<PathBuf>,
    /// Train data-parallel as this many local processes (ranks), as
    /// `torchrun --standalone --nproc-per-node N` would; `schedule.batch_size`
    /// is the global batch. Under torchrun or Slurm, leave it out: the
    /// launcher's RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT are read instead.
    #[arg(long = "nproc-per-node", value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    nproc_per_node: Option<u32>,
    #[command(flatten)]
    config_args: ConfigArgs,
}

/// Trains algorithm `A`; `command` names the subcommand in messages.
pub fn run<A: Algorithm>(args: Args, command: &str) -> Result<ExitCode> {
    if let Some(nproc) = args.nproc_per_node.filter(|&n| n > 1) {
        return super::launch::run_local_ranks(nproc);
    }
    let session = match (&args.resume, &args.config, &args.outdir) {
        (Some(dir), _, _) => Session::<A>::resume(dir, &args.config_args.source())?,
        (None, Some(path), Some(outdir)) => {
            let (config, registry) = args
                .config_args
                .source()
                .load::<A>(path)
                .with_context(|| format!("checking config {}", path.display()))?;
            Session::create(config, &registry, outdir).context("building the run")?
        }
        _ => bail!("give a config and --outdir, or --resume RUN_DIR"),
    };
    let root = session.run.root().to_path_buf();
    let finished = session.run()?;
    let kimg = finished.state.nimg as f64 / 1000.0;
    match finished.outcome {
        Outcome::Finished => {
            let snapshot = finished.snapshot.map(|p| p.display().to_string()).unwrap_or_default();
            eprintln!("finished: {kimg:.3} kimg in {:.1} s; latest snapshot {snapshot}", finished.state.elapsed_s);
            Ok(ExitCode::SUCCESS)
        }
        Outcome::Stopped => {
            eprintln!("stopped at kimg {kimg:.3}; continue with `difi {command} --resume {}`", root.display());
            Ok(ExitCode::from(STOPPED_EXIT_CODE))
        }
    }
}
