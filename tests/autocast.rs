//! `autocast`: mixed precision around every training forward pass.

mod common;

use common::{arg, difi_err, difi_ok, latest_snapshot, scratch};
use difi_formats::weights;

const SHORT: [&str; 6] =
    ["--set", "schedule.total_kimg=0.512", "--set", "schedule.tick_kimg=0.256", "--set", "fake_warmup_iters=2"];

fn generator_weights(run: &std::path::Path) -> Vec<(String, tch::Tensor)> {
    let mut tensors: Vec<_> = weights::load(&latest_snapshot(run).join("generator.safetensors"))
        .expect("snapshot")
        .into_map()
        .into_iter()
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    tensors
}

#[test]
fn bf16_autocast_trains_in_bf16_and_keeps_float32_weights() {
    let dir = scratch("autocast-bf16");
    let (plain, mixed) = (dir.join("plain"), dir.join("bf16"));
    let mut args = vec!["distill", "configs/toy-gmm.ron", "--outdir", arg(&plain)];
    args.extend(SHORT);
    difi_ok(&args);
    args[3] = arg(&mixed);
    args.extend(["--set", "autocast=bf16"]);
    difi_ok(&args);

    let config = std::fs::read_to_string(mixed.join("config.ron")).expect("config");
    assert!(config.contains("autocast: \"bf16\""), "the run records its precision:\n{config}");
    let (a, b) = (generator_weights(&plain), generator_weights(&mixed));
    let mut largest: f64 = 0.0;
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        assert_eq!(y.kind(), tch::Kind::Float, "{name} stays float32");
        assert!(y.isfinite().all().int64_value(&[]) == 1, "{name} is finite");
        largest = largest.max((x - y).abs().max().double_value(&[]));
    }
    // bf16 keeps 8 bits of mantissa: the runs must differ (autocast took
    // effect), by far less than the weights themselves.
    assert!(largest > 1e-6 && largest < 0.5, "largest difference {largest}");
}

#[test]
fn unknown_precisions_are_refused_by_name() {
    let dir = scratch("autocast-unknown");
    let message =
        difi_err(&["distill", "configs/toy-gmm.ron", "--outdir", arg(&dir.join("run")), "--set", "autocast=fp8"]);
    assert!(message.contains("autocast") && message.contains("fp8"), "{message}");
}
