//! `checkpoint_activations`: networks recompute their activations in
//! backward; the run's trajectory does not change.

mod common;

use common::{arg, difi_err, difi_ok, latest_snapshot, scratch};
use difi_formats::weights;

/// Eight iterations of the tiny ADM (attention, dropout 0.1, labels) with
/// SiD, whose generator gradient flows through the teacher and the fake score.
const SHORT: [&str; 8] = [
    "--set",
    "schedule.total_kimg=0.064",
    "--set",
    "schedule.tick_kimg=0.032",
    "--set",
    "fake_warmup_iters=1",
    "--set",
    "divergence=(plugin: \"sid\")",
];

fn run(dir: &std::path::Path, extra: &[&str]) -> (Vec<(String, tch::Tensor)>, String) {
    let mut args = vec!["distill", "benches/configs/tiny-adm.ron", "--outdir", arg(dir)];
    args.extend(SHORT);
    args.extend(extra);
    difi_ok(&args);
    let mut tensors: Vec<_> = weights::load(&latest_snapshot(dir).join("generator.safetensors"))
        .expect("snapshot")
        .into_map()
        .into_iter()
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    (tensors, std::fs::read_to_string(dir.join("stats.jsonl")).expect("stats"))
}

fn losses(stats: &str) -> Vec<f64> {
    stats
        .lines()
        .flat_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("json");
            ["loss_generator", "loss_fake_score"].map(|k| v[k].as_f64().expect("a loss"))
        })
        .collect()
}

#[test]
fn checkpointed_networks_follow_the_same_trajectory() {
    let dir = scratch("checkpointing-same");
    let (plain, plain_stats) = run(&dir.join("plain"), &[]);
    let (ckpt, ckpt_stats) =
        run(&dir.join("ckpt"), &["--set", "checkpoint_activations=[\"teacher\", \"generator\", \"fake_score\"]"]);
    let config = std::fs::read_to_string(dir.join("ckpt/config.ron")).expect("config");
    assert!(config.contains("checkpoint_activations"), "the run records it:\n{config}");
    for (a, b) in losses(&plain_stats).iter().zip(losses(&ckpt_stats)) {
        assert!((a - b).abs() <= 1e-5 * a.abs().max(1e-3), "losses {a} and {b}");
    }
    assert_eq!(plain.len(), ckpt.len());
    for ((name, x), (_, y)) in plain.iter().zip(&ckpt) {
        let scale = x.abs().max().double_value(&[]).max(1e-6);
        let difference = (x - y).abs().max().double_value(&[]) / scale;
        assert!(difference < 1e-4, "{name}: relative difference {difference}");
    }
}

#[test]
fn unknown_roles_and_networks_that_cannot_are_refused_by_name() {
    let dir = scratch("checkpointing-refused");
    let message = difi_err(&[
        "distill",
        "benches/configs/tiny-adm.ron",
        "--outdir",
        arg(&dir.join("a")),
        "--set",
        "checkpoint_activations=[\"critic\"]",
    ]);
    assert!(message.contains("critic") && message.contains("fake_score"), "{message}");
    let message = difi_err(&[
        "distill",
        "configs/toy-gmm.ron",
        "--outdir",
        arg(&dir.join("b")),
        "--set",
        "checkpoint_activations=[\"generator\"]",
    ]);
    assert!(message.contains("checkpoint_activations") && message.contains("generator"), "{message}");
    assert!(!dir.join("b").join("stats.jsonl").exists());
}
