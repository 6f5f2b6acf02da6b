//! Image runs through the CLI: EDM teacher training on the digits fixture
//! (metrics and sample grids at snapshots, the loss and the proxy-FID going
//! down, sampling and measuring the trained teacher) and Diff-Instruct on an
//! EDM teacher; both stopped with Ctrl-C and resumed to the same weights as
//! an uninterrupted run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{arg, difi_ok, latest_snapshot, root, scratch, spawn_difi};
use difi_formats::weights;

/// A teacher-training config: a small conditional SongUNet on the 8×8 digits,
/// proxy-FID (the Fashion-MNIST classifier, upsampled) at every snapshot.
fn teacher_config(dir: &Path) -> PathBuf {
    let dataset = root().join("tests/fixtures/data/digits-8x8-labelled.zip");
    let config = dir.join("teacher.ron");
    std::fs::write(
        &config,
        format!(
            r#"(
    version: 1,
    seed: 2,
    device: "cpu",
    network: (plugin: "edm", params: (network: (
        precond: "EDMPrecond", img_resolution: 8, img_channels: 1, label_dim: 10, model_type: "SongUNet",
        model_channels: 16, channel_mult: [1, 2], num_blocks: 1, attn_resolutions: [], dropout: 0.1,
    ))),
    sampler: (num_steps: 6),
    dataset: (plugin: "zip", params: (path: "{}")),
    optim: (network: (lr: 2e-3, betas: (0.9, 0.999))),
    schedule: (batch_size: 32, total_kimg: 3.2, tick_kimg: 0.64, snapshot_ticks: 1, ema_halflife_kimg: 0.5),
    metrics: (list: ["fid1k_full"], detector: "fmnist-classifier"),
)"#,
            dataset.display()
        ),
    )
    .unwrap();
    config
}

/// A Diff-Instruct config on the smallest EDM fixture network.
fn distill_config(dir: &Path) -> PathBuf {
    let teacher = root().join("tests/fixtures/edm/songunet-skip-vp.safetensors");
    let config = dir.join("distill.ron");
    std::fs::write(
        &config,
        format!(
            r#"(
    version: 1,
    seed: 4,
    device: "cpu",
    teacher: (plugin: "edm", params: (checkpoint: "{}")),
    generator: (init_from: "teacher"),
    fake_score: (init_from: "teacher"),
    optim: (generator: (lr: 1e-4), fake_score: (lr: 1e-4, nonfinite: "clamp")),
    schedule: (batch_size: 8, total_kimg: 0.096, tick_kimg: 0.016, snapshot_ticks: 1),
)"#,
            teacher.display()
        ),
    )
    .unwrap();
    config
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// Largest difference between the same files of two snapshots.
fn max_difference(a: &Path, b: &Path, files: &[&str]) -> f64 {
    let mut worst: f64 = 0.0;
    for file in files {
        let left = weights::load(&a.join(file)).unwrap().into_map();
        let right = weights::load(&b.join(file)).unwrap().into_map();
        assert_eq!(left.len(), right.len(), "{file}");
        for (name, tensor) in &left {
            worst = worst.max((tensor - &right[name]).abs().max().double_value(&[]));
        }
    }
    worst
}

/// Runs `difi ARGS…`, interrupts it with SIGINT once `RUN/stats.jsonl`
/// exists, and checks it stops with a snapshot and exit code 130.
fn interrupt(args: &[&str], run: &Path) {
    let child = spawn_difi(args);
    let started = Instant::now();
    while !run.join("stats.jsonl").exists() {
        assert!(started.elapsed() < Duration::from_secs(300), "no tick written");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap().success());
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("--resume"), "{stderr}");
    assert!(latest_snapshot(run).join("state.json").is_file());
}

#[test]
fn a_teacher_trains_measures_and_resumes_exactly() {
    let dir = scratch("image-teacher");
    let config = teacher_config(&dir);
    let whole = dir.join("whole");
    difi_ok(&["train-teacher", arg(&config), "--outdir", arg(&whole)]);

    let stats = lines(&whole.join("stats.jsonl"));
    let losses: Vec<f64> = stats.iter().map(|l| l["loss_network"].as_f64().unwrap()).collect();
    assert!(losses.last().unwrap() < &(0.7 * losses[0]), "loss did not fall: {losses:?}");
    let metrics = lines(&whole.join("metrics.jsonl"));
    let fids: Vec<f64> = metrics.iter().map(|l| l["results"]["proxy-FID"].as_f64().unwrap()).collect();
    assert_eq!(fids.len(), 5, "{metrics:?}");
    assert!(fids.last().unwrap() < &fids[0], "proxy-FID did not fall: {fids:?}");
    let last = latest_snapshot(&whole);
    assert!(last.join("samples.png").is_file());

    // The trained teacher samples with any number of Heun steps, and measures.
    let grid = dir.join("grid.png");
    let out = difi_ok(&["sample", "--run", arg(&whole), "--n", "20", "--steps", "3", "--out", arg(&grid)]);
    assert!(grid.is_file(), "{out}");
    let reference = whole.join("metrics-reference.npz");
    let fid = difi_ok(&[
        "fid",
        "--ref",
        arg(&reference),
        arg(&whole),
        "--detector",
        "fmnist-classifier",
        "--num",
        "300",
        "--steps",
        "3",
        "--device",
        "cpu",
    ]);
    assert!(fid.starts_with("proxy-FID "), "{fid}");

    // Stopped by Ctrl-C and resumed: the same weights as the whole run.
    let interrupted = dir.join("interrupted");
    interrupt(&["train-teacher", arg(&config), "--outdir", arg(&interrupted)], &interrupted);
    difi_ok(&["train-teacher", "--resume", arg(&interrupted)]);
    let files = ["network.safetensors", "network_ema.safetensors", "adam_network.safetensors"];
    let difference = max_difference(&last, &latest_snapshot(&interrupted), &files);
    assert_eq!(difference, 0.0, "resumed teacher differs by {difference}");
    // A teacher run is resumed by its own command.
    let err = common::difi_err(&["distill", "--resume", arg(&interrupted)]);
    assert!(err.contains("edm-teacher"), "{err}");
}

#[test]
fn an_image_distillation_resumes_exactly_after_ctrl_c() {
    let dir = scratch("image-distill");
    let config = distill_config(&dir);
    let whole = dir.join("whole");
    difi_ok(&["distill", arg(&config), "--outdir", arg(&whole)]);
    let last = latest_snapshot(&whole);
    assert!(last.join("samples.png").is_file());
    let stats = lines(&whole.join("stats.jsonl"));
    assert!(stats.iter().all(|l| l["skipped_updates"].as_u64() == Some(0)), "{stats:?}");

    let interrupted = dir.join("interrupted");
    interrupt(&["distill", arg(&config), "--outdir", arg(&interrupted)], &interrupted);
    difi_ok(&["distill", "--resume", arg(&interrupted)]);
    let files = ["generator.safetensors", "generator_ema.safetensors", "fake_score.safetensors"];
    let difference = max_difference(&last, &latest_snapshot(&interrupted), &files);
    assert_eq!(difference, 0.0, "resumed generator differs by {difference}");
}
