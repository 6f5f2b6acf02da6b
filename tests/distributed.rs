//! Data-parallel training on c10d's Gloo backend, on this machine's CPU: two
//! ranks reproduce one process with the same global batch (launched by
//! `--nproc-per-node` and as torchrun would), resume across a change of
//! world size, and a rank that dies makes the others stop with its name.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{arg, difi, difi_err, difi_ok, latest_snapshot, root, scratch};
use difi_formats::weights;

/// The toy at 20 iterations of a global batch of 64 (2 fake-score updates
/// each, after 3 warm-up updates): every draw of an iteration matters.
const SHORT: [&str; 10] = [
    "--set",
    "schedule.total_kimg=1.28",
    "--set",
    "schedule.tick_kimg=0.64",
    "--set",
    "schedule.batch_size=64",
    "--set",
    "fake_warmup_iters=3",
    "--set",
    "schedule.snapshot_ticks=1",
];

fn distill_args<'a>(out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["distill", "configs/toy-gmm.ron", "--outdir", arg(out)];
    args.extend(SHORT);
    args.extend(extra);
    args
}

/// The largest difference between two snapshots' tensors, relative to the
/// largest magnitude of each tensor.
fn relative_difference(a: &Path, b: &Path) -> f64 {
    let mut worst: f64 = 0.0;
    for file in ["generator.safetensors", "generator_ema.safetensors", "fake_score.safetensors"] {
        let left = weights::load(&a.join(file)).expect("snapshot").into_map();
        let right = weights::load(&b.join(file)).expect("snapshot").into_map();
        assert_eq!(left.len(), right.len(), "{file}");
        for (name, x) in &left {
            let y = &right[name];
            let scale = x.abs().max().double_value(&[]).max(1e-12);
            worst = worst.max((x - y).abs().max().double_value(&[]) / scale);
        }
    }
    worst
}

fn state(snapshot: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(snapshot.join("state.json")).expect("state")).expect("json")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// Rank `rank` of `world` as torchrun starts it.
fn spawn_rank(args: &[&str], rank: u32, world: u32, port: u16) -> Child {
    Command::new(env!("CARGO_BIN_EXE_difi"))
        .current_dir(root())
        .env("OMP_NUM_THREADS", "1")
        .env("RANK", rank.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .args(["--log", "warn"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start a rank")
}

#[test]
fn two_gloo_ranks_reproduce_one_process() {
    let dir = scratch("distributed-equal");
    let (one, launched, torchrun) = (dir.join("one"), dir.join("launched"), dir.join("torchrun"));
    difi_ok(&distill_args(&one, &[]));
    difi_ok(&distill_args(&launched, &["--nproc-per-node", "2"]));

    let args = distill_args(&torchrun, &[]);
    let port = free_port();
    let ranks: Vec<Child> = (0..2).map(|rank| spawn_rank(&args, rank, 2, port)).collect();
    for (rank, child) in ranks.into_iter().enumerate() {
        let output = child.wait_with_output().expect("rank output");
        assert!(output.status.success(), "rank {rank}: {}", String::from_utf8_lossy(&output.stderr));
    }

    let reference = latest_snapshot(&one);
    for run in [&launched, &torchrun] {
        let snapshot = latest_snapshot(run);
        assert_eq!(snapshot.file_name(), reference.file_name());
        let difference = relative_difference(&reference, &snapshot);
        assert!(difference < 1e-4, "{}: weights differ by {difference:e} (relative)", run.display());
        assert_eq!(state(&snapshot)["world_size"], 2);
        assert_eq!(state(&snapshot)["iteration"], state(&reference)["iteration"]);
        let stats = std::fs::read_to_string(run.join("stats.jsonl")).expect("stats");
        assert_eq!(stats.lines().count(), 2, "only rank 0 writes the stats");
        let line: serde_json::Value = serde_json::from_str(stats.lines().last().expect("a tick")).expect("json");
        assert_eq!(line["world_size"], 2);
    }
    assert_eq!(state(&reference)["world_size"], 1);
}

#[test]
fn torchrun_launches_difi_ranks() {
    let dir = scratch("distributed-torchrun");
    let torchrun = root().join(".venv/bin/torchrun");
    assert!(torchrun.is_file(), "make setup installs torch, and torchrun with it, into .venv");
    let (one, launched) = (dir.join("one"), dir.join("torchrun"));
    difi_ok(&distill_args(&one, &[]));
    let mut args = vec!["--standalone", "--nproc-per-node", "2", "--max-restarts", "0", "--no-python", "--"];
    args.push(env!("CARGO_BIN_EXE_difi"));
    args.extend(distill_args(&launched, &[]));
    let output = Command::new(&torchrun)
        .current_dir(root())
        .env("OMP_NUM_THREADS", "1")
        .args(&args)
        .output()
        .expect("run torchrun");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let snapshot = latest_snapshot(&launched);
    let difference = relative_difference(&latest_snapshot(&one), &snapshot);
    assert!(difference < 1e-4, "weights differ by {difference:e} (relative)");
    assert_eq!(state(&snapshot)["world_size"], 2);
}

#[test]
fn a_run_resumes_on_another_number_of_ranks() {
    let dir = scratch("distributed-resume");
    let (whole, split) = (dir.join("whole"), dir.join("split"));
    difi_ok(&distill_args(&whole, &[]));
    // The first half on two ranks, the second in one process.
    difi_ok(&distill_args(&split, &["--nproc-per-node", "2", "--set", "schedule.total_kimg=0.64"]));
    difi_ok(&["distill", "--resume", arg(&split), "--set", "schedule.total_kimg=1.28"]);
    let difference = relative_difference(&latest_snapshot(&whole), &latest_snapshot(&split));
    assert!(difference < 1e-4, "weights differ by {difference:e} (relative)");
    assert_eq!(state(&latest_snapshot(&split))["world_size"], 1);
}

/// Trains the toy on two ranks, kills rank `victim` once rank 0 has written
/// a snapshot, and returns the other rank's stderr after it has exited
/// (with a failure, within a minute).
fn kill_rank(name: &str, victim: usize) -> (String, std::path::PathBuf) {
    let run = scratch(name).join("run");
    let args = distill_args(&run, &["--set", "schedule.total_kimg=100000"]);
    let port = free_port();
    let mut ranks: Vec<Child> = (0..2).map(|rank| spawn_rank(&args, rank, 2, port)).collect();
    let snapshots = run.join("snapshots");
    let started = Instant::now();
    while std::fs::read_dir(&snapshots).map(|d| d.count()).unwrap_or(0) == 0 {
        assert!(started.elapsed() < Duration::from_secs(120), "no snapshot within two minutes");
        assert!(ranks.iter_mut().all(|r| r.try_wait().expect("poll").is_none()), "a rank ended early");
        std::thread::sleep(Duration::from_millis(100));
    }
    ranks[victim].kill().expect("kill a rank");
    let killed = Instant::now();
    let survivor = &mut ranks[1 - victim];
    let status = loop {
        if let Some(status) = survivor.try_wait().expect("poll") {
            break status;
        }
        assert!(killed.elapsed() < Duration::from_secs(60), "a rank still running a minute after the other died");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success());
    let mut stderr = String::new();
    std::io::Read::read_to_string(survivor.stderr.as_mut().expect("stderr"), &mut stderr).expect("read stderr");
    let _ = ranks[victim].wait();
    (stderr, run)
}

#[test]
fn a_killed_rank_is_named_by_the_others() {
    let (stderr, run) = kill_rank("distributed-kill-1", 1);
    assert!(stderr.contains("rank 0: ") && stderr.contains("rank 1 exited"), "{stderr}");
    assert!(latest_snapshot(&run).exists(), "the snapshots written so far stay");
}

#[test]
fn a_killed_rank_0_is_named_as_the_store_host() {
    let (stderr, _) = kill_rank("distributed-kill-0", 0);
    assert!(stderr.contains("rank 1: ") && stderr.contains("rank 0 (which serves the store"), "{stderr}");
}

#[test]
fn a_batch_that_does_not_split_is_refused() {
    let dir = scratch("distributed-batch");
    let message = difi_err(&distill_args(&dir.join("run"), &["--nproc-per-node", "3"]));
    assert!(message.contains("schedule.batch_size") && message.contains("3 ranks"), "{message}");
    assert!(!dir.join("run").exists(), "nothing is left behind");
}

#[test]
fn the_launcher_refuses_to_nest_in_torchrun() {
    let dir = scratch("distributed-nested");
    let output = Command::new(env!("CARGO_BIN_EXE_difi"))
        .current_dir(root())
        .env("WORLD_SIZE", "2")
        .args(distill_args(&dir.join("run"), &["--nproc-per-node", "2"]))
        .output()
        .expect("run difi");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("cannot be combined with WORLD_SIZE"));
    let bad = difi(&["distill", "configs/toy-gmm.ron", "--outdir", arg(&dir.join("x")), "--nproc-per-node", "0"]);
    assert!(!bad.status.success());
}

#[test]
fn ctrl_c_at_the_launcher_stops_every_rank_and_the_run_resumes() {
    let dir = scratch("distributed-ctrl-c");
    let (whole, interrupted) = (dir.join("whole"), dir.join("interrupted"));
    difi_ok(&distill_args(&whole, &["--set", "schedule.total_kimg=6.4", "--set", "schedule.snapshot_ticks=0"]));
    let long = ["--set", "schedule.total_kimg=6.4", "--set", "schedule.snapshot_ticks=0", "--nproc-per-node", "2"];
    let launcher = common::spawn_difi(&distill_args(&interrupted, &long));
    let started = Instant::now();
    while !interrupted.join("stats.jsonl").exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "no tick written");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(Command::new("kill").args(["-INT", &launcher.id().to_string()]).status().unwrap().success());
    let output = launcher.wait_with_output().expect("launcher output");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    let stopped = latest_snapshot(&interrupted);
    assert!(state(&stopped)["iteration"].as_u64().unwrap() < 100, "it stopped early");
    difi_ok(&["distill", "--resume", arg(&interrupted), "--nproc-per-node", "2"]);
    let difference = relative_difference(&latest_snapshot(&whole), &latest_snapshot(&interrupted));
    assert!(difference < 1e-4, "weights differ by {difference:e} (relative)");
}

#[test]
fn teacher_training_and_its_metrics_on_two_ranks_equal_one_process() {
    let dir = scratch("distributed-teacher");
    let config = dir.join("teacher.ron");
    let dataset = root().join("tests/fixtures/data/digits-8x8-labelled.zip");
    std::fs::write(
        &config,
        format!(
            r#"(
    version: 1,
    seed: 2,
    device: "cpu",
    network: (plugin: "edm", params: (network: (
        precond: "EDMPrecond", img_resolution: 8, img_channels: 1, label_dim: 10, model_type: "SongUNet",
        model_channels: 16, channel_mult: [1, 2], num_blocks: 1, attn_resolutions: [], dropout: 0.0,
    ))),
    sampler: (num_steps: 3),
    dataset: (plugin: "zip", params: (path: "{}")),
    optim: (network: (lr: 2e-3, betas: (0.9, 0.999))),
    schedule: (batch_size: 16, total_kimg: 0.096, tick_kimg: 0.048, snapshot_ticks: 2, ema_halflife_kimg: 0.5),
    metrics: (list: ["fid1k_full"], detector: "fmnist-classifier", batch_size: 100),
)"#,
            dataset.display()
        ),
    )
    .expect("write config");
    let (one, two) = (dir.join("one"), dir.join("two"));
    difi_ok(&["train-teacher", arg(&config), "--outdir", arg(&one)]);
    difi_ok(&["train-teacher", arg(&config), "--outdir", arg(&two), "--nproc-per-node", "2"]);
    let (a, b) = (latest_snapshot(&one), latest_snapshot(&two));
    let mut worst: f64 = 0.0;
    for file in ["network.safetensors", "network_ema.safetensors"] {
        let left = weights::load(&a.join(file)).expect("snapshot").into_map();
        let right = weights::load(&b.join(file)).expect("snapshot").into_map();
        for (name, x) in &left {
            let scale = x.abs().max().double_value(&[]).max(1e-12);
            worst = worst.max((x - &right[name]).abs().max().double_value(&[]) / scale);
        }
    }
    // The losses show the ranks drew and computed what one process does; the
    // weights drift further apart than the toy's because Adam's first steps
    // (m/√v ≈ ±1) turn rounding in gradients that nearly cancel into whole
    // learning-rate steps (measured: 5e-4 after 6 iterations).
    assert!(worst < 1e-2, "teacher weights differ by {worst:e} (relative)");
    let losses = |run: &Path| -> Vec<f64> {
        let text = std::fs::read_to_string(run.join("stats.jsonl")).expect("stats");
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["loss_network"].as_f64().unwrap())
            .collect()
    };
    let (x, y) = (losses(&one), losses(&two));
    assert_eq!(x.len(), y.len());
    for (a, b) in x.iter().zip(&y) {
        assert!((a - b).abs() <= 1e-5 * a.abs(), "losses {x:?} vs {y:?}");
    }
    // The two ranks each measured half of the 1,000 samples; rank 0 alone wrote the result.
    let fid = |run: &Path| -> f64 {
        let text = std::fs::read_to_string(run.join("metrics.jsonl")).expect("metrics");
        assert_eq!(text.lines().count(), 1, "{text}");
        let line: serde_json::Value = serde_json::from_str(text.trim()).expect("json");
        line["results"]["proxy-FID"].as_f64().expect("a proxy-FID")
    };
    let (x, y) = (fid(&one), fid(&two));
    assert!((x - y).abs() <= 1e-4 * x, "proxy-FID {x} vs {y}");
}
