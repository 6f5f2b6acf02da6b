//! Runs resume exactly: a run stopped after a snapshot (by its schedule or by
//! Ctrl-C) and resumed ends with the same weights as an uninterrupted run
//! with the same seed.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{arg, difi_ok, latest_snapshot, scratch, spawn_difi};
use difi_formats::weights;

/// A short toy run: 200 kimg in ticks of 4 kimg, a snapshot every 2 ticks.
const SHORT: [&str; 8] = [
    "--set",
    "schedule.total_kimg=200",
    "--set",
    "schedule.tick_kimg=4",
    "--set",
    "schedule.snapshot_ticks=2",
    "--set",
    "fake_warmup_iters=20",
];

fn distill(run: &Path, extra: &[&str]) {
    let mut args = vec!["distill", "configs/toy-gmm.ron", "--outdir", arg(run)];
    args.extend(SHORT);
    args.extend(extra);
    difi_ok(&args);
}

/// Largest absolute difference between the same tensors of two snapshots.
fn max_difference(a: &Path, b: &Path) -> f64 {
    let mut worst: f64 = 0.0;
    for file in ["generator.safetensors", "generator_ema.safetensors", "fake_score.safetensors"] {
        let left = weights::load(&a.join(file)).expect("snapshot").into_map();
        let right = weights::load(&b.join(file)).expect("snapshot").into_map();
        assert_eq!(left.len(), right.len(), "{file}");
        for (name, tensor) in &left {
            let other = right.get(name).unwrap_or_else(|| panic!("{file} lacks {name}"));
            worst = worst.max((tensor - other).abs().max().double_value(&[]));
        }
    }
    worst
}

fn state(snapshot: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(snapshot.join("state.json")).expect("state")).expect("json")
}

#[test]
fn resumed_run_ends_where_an_uninterrupted_one_does() {
    let dir = scratch("resume-schedule");
    let whole = dir.join("whole");
    distill(&whole, &[]);

    let split = dir.join("split");
    distill(&split, &["--set", "schedule.total_kimg=100"]);
    let halfway = latest_snapshot(&split);
    assert_eq!(state(&halfway)["nimg"], 100096);
    difi_ok(&["distill", "--resume", arg(&split), "--set", "schedule.total_kimg=200"]);

    let (a, b) = (latest_snapshot(&whole), latest_snapshot(&split));
    assert_eq!(state(&a)["iteration"], state(&b)["iteration"]);
    let difference = max_difference(&a, &b);
    assert!(difference <= 1e-6, "resumed weights differ by {difference}");
    // Stats continue in the same file up to the same end.
    let last_kimg = |run: &Path| -> f64 {
        let text = std::fs::read_to_string(run.join("stats.jsonl")).expect("stats");
        let last: serde_json::Value = serde_json::from_str(text.lines().last().expect("a line")).expect("json");
        last["kimg"].as_f64().expect("kimg")
    };
    assert_eq!(last_kimg(&split), last_kimg(&whole));
}

#[test]
fn ctrl_c_writes_a_snapshot_that_resumes_exactly() {
    let dir = scratch("resume-ctrl-c");
    let whole = dir.join("whole");
    distill(&whole, &[]);

    let interrupted = dir.join("interrupted");
    let mut args = vec!["distill", "configs/toy-gmm.ron", "--outdir", arg(&interrupted)];
    args.extend(SHORT);
    let child = spawn_difi(&args);
    // Interrupt once the first tick is written, well before the end.
    let stats = interrupted.join("stats.jsonl");
    let started = Instant::now();
    while !stats.exists() {
        assert!(started.elapsed() < Duration::from_secs(120), "no tick written");
        std::thread::sleep(Duration::from_millis(5));
    }
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let output = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("--resume"), "{stderr}");
    let stopped = latest_snapshot(&interrupted);
    let stopped_at = state(&stopped)["nimg"].as_u64().expect("nimg");
    assert!(stopped_at < 200_000, "stopped at {stopped_at}, after the end");

    difi_ok(&["distill", "--resume", arg(&interrupted)]);
    let difference = max_difference(&latest_snapshot(&whole), &latest_snapshot(&interrupted));
    assert!(difference <= 1e-6, "resumed weights differ by {difference}");
}

#[test]
fn samples_are_reproducible_from_the_seed() {
    let dir = scratch("sample-seed");
    let run = dir.join("run");
    distill(&run, &["--set", "schedule.total_kimg=8"]);
    let [a, b, c] = ["a.npy", "b.npy", "c.npy"].map(|f| dir.join(f));
    for (out, seed) in [(&a, "3"), (&b, "3"), (&c, "4")] {
        difi_ok(&["sample", "--run", arg(&run), "--n", "300", "--seed", seed, "--out", arg(out)]);
    }
    let read = |p: &Path| tch::Tensor::read_npy(p).expect("npy");
    assert_eq!(read(&a).size(), vec![300, 2]);
    assert!(read(&a).equal(&read(&b)));
    assert!(!read(&a).equal(&read(&c)));
    // An earlier snapshot can be chosen.
    let first = std::fs::read_dir(run.join("snapshots")).unwrap().next().unwrap().unwrap().path();
    difi_ok(&["sample", "--run", arg(&run), "--checkpoint", arg(&first), "--n", "10", "--out", arg(&c)]);
    assert_eq!(read(&c).size(), vec![10, 2]);
}
