//! Runs survive misuse: a second Ctrl-C, a resume that fails, two processes
//! on one run, a crash between snapshots, a run that fails at once.

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{arg, difi_err, difi_ok, latest_snapshot, scratch, spawn_difi};

/// A toy run long enough to interrupt: ticks of 4 kimg, a snapshot every 2.
const SLOW: [&str; 8] = [
    "--set",
    "schedule.total_kimg=3000",
    "--set",
    "schedule.tick_kimg=4",
    "--set",
    "schedule.snapshot_ticks=2",
    "--set",
    "fake_warmup_iters=20",
];

fn start_run(run: &Path) -> Child {
    let mut args = vec!["distill", "configs/toy-gmm.ron", "--outdir", arg(run)];
    args.extend(SLOW);
    spawn_difi(&args)
}

/// Waits until `run` has written `lines` lines of stats.
fn wait_for_ticks(run: &Path, lines: usize) {
    let started = Instant::now();
    loop {
        let written = std::fs::read_to_string(run.join("stats.jsonl")).map(|t| t.lines().count()).unwrap_or(0);
        if written >= lines {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(180), "{} ticks not written", lines);
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
}

fn ticks(run: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(run.join("stats.jsonl")).expect("stats");
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json")["tick"].as_u64().expect("tick"))
        .collect()
}

fn stop_for_good(run: &Path, mut child: Child) {
    let _ = Command::new("kill").args(["-KILL", &child.id().to_string()]).status();
    let _ = child.wait();
    let _ = run;
}

#[test]
fn a_second_ctrl_c_exits_130_and_keeps_the_last_snapshot() {
    let dir = scratch("run-double-ctrl-c");
    for trial in 0..3 {
        let run = dir.join(format!("trial-{trial}"));
        let child = start_run(&run);
        wait_for_ticks(&run, 3 + trial);
        signal(&child, "INT");
        signal(&child, "INT");
        let output = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(130), "trial {trial}: {stderr}");
        // Whatever the second signal interrupted, the newest complete snapshot loads and the run continues.
        let snapshot = latest_snapshot(&run);
        assert!(snapshot.join("state.json").is_file(), "{}", snapshot.display());
        difi_ok(&["distill", "--resume", arg(&run), "--set", "schedule.total_kimg=40"]);
    }
}

#[test]
fn a_resume_that_fails_changes_nothing_in_the_run() {
    let dir = scratch("run-failed-resume");
    let run = dir.join("run");
    difi_ok(&[
        "distill",
        "configs/toy-gmm.ron",
        "--outdir",
        arg(&run),
        "--set",
        "schedule.total_kimg=16",
        "--set",
        "schedule.tick_kimg=8",
    ]);
    let config_before = std::fs::read(run.join("config.ron")).unwrap();
    let stats_before = std::fs::read(run.join("stats.jsonl")).unwrap();
    let err = difi_err(&["distill", "--resume", arg(&run), "--set", "generator.params.hidden=[64]"]);
    assert!(err.contains("unexpected keys") || err.contains("shape"), "{err}");
    assert_eq!(
        std::fs::read(run.join("config.ron")).unwrap(),
        config_before,
        "config.ron rewritten by a failed resume"
    );
    assert_eq!(std::fs::read(run.join("stats.jsonl")).unwrap(), stats_before);
    difi_ok(&["distill", "--resume", arg(&run), "--set", "schedule.total_kimg=24"]);
    difi_ok(&["evaluate", "--run", arg(&run), "--n", "500"]);
}

#[test]
fn a_run_in_use_is_refused_to_a_second_process() {
    let dir = scratch("run-locked");
    let run = dir.join("run");
    let first = start_run(&run);
    wait_for_ticks(&run, 2);
    let err = difi_err(&["distill", "--resume", arg(&run)]);
    assert!(err.contains("in use by another difi process") && err.contains(&first.id().to_string()), "{err}");
    let err = difi_err(&["distill", "configs/toy-gmm.ron", "--outdir", arg(&run)]);
    assert!(err.contains("not empty"), "{err}");
    signal(&first, "INT");
    let output = first.wait_with_output().expect("wait");
    assert_eq!(output.status.code(), Some(130), "{}", String::from_utf8_lossy(&output.stderr));
    // Released when the process ends.
    difi_ok(&["distill", "--resume", arg(&run), "--set", "schedule.total_kimg=40"]);
}

#[test]
fn after_a_crash_the_resumed_run_neither_repeats_ticks_nor_keeps_half_snapshots() {
    let dir = scratch("run-crash");
    let run = dir.join("run");
    let child = start_run(&run);
    wait_for_ticks(&run, 5);
    stop_for_good(&run, child);
    // A snapshot interrupted while being written, as a crash leaves it.
    let half = run.join("snapshots/.snapshot-000009999.tmp");
    std::fs::create_dir_all(&half).unwrap();
    std::fs::write(half.join("generator.safetensors"), b"partial").unwrap();
    let crashed_ticks = ticks(&run);
    let resumed_from: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(latest_snapshot(&run).join("state.json")).unwrap()).unwrap();
    let snapshot_ticks = resumed_from["tick"].as_u64().unwrap();
    assert!((crashed_ticks.len() as u64) > snapshot_ticks, "the crash came after ticks past the snapshot");

    difi_ok(&["distill", "--resume", arg(&run), "--set", "schedule.total_kimg=60"]);
    let after = ticks(&run);
    assert_eq!(after, (0..after.len() as u64).collect::<Vec<_>>(), "each tick once, in order");
    assert!(!half.exists(), "the half-written snapshot is removed");
}

#[test]
fn a_run_that_fails_before_its_first_snapshot_leaves_nothing_behind() {
    let dir = scratch("run-fails-at-once");
    let run = dir.join("run");
    let args = ["distill", "configs/toy-gmm.ron", "--outdir", arg(&run), "--set", "optim.fake_score.lr=1e30"];
    let err = difi_err(&args);
    assert!(err.contains("not finite"), "{err}");
    assert!(!run.exists(), "{} left behind", run.display());
    // The same command fails the same way rather than on the directory.
    let again = difi_err(&args);
    assert!(again.contains("not finite") && !again.contains("not empty"), "{again}");

    // An empty directory the user made is kept, empty.
    std::fs::create_dir_all(&run).unwrap();
    difi_err(&args);
    assert!(run.is_dir() && std::fs::read_dir(&run).unwrap().next().is_none());
}
