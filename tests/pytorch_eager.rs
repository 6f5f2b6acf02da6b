//! `benches/pytorch_eager.py` builds the same networks as difi: its
//! `--check` loads difi's weights and compares every network's forward pass
//! on difi's inputs (relative L2 ≤ 1e-5 in float32), and for teacher
//! training also three training iterations from the same weights (the
//! losses, the trained weights and their EMA). `make setup` installs the
//! project's Python with torch, which difi links against anyway, so a
//! missing one is a failure, not a skip.

mod common;

use std::process::Command;

fn python() -> std::path::PathBuf {
    let python = common::root().join(".venv/bin/python");
    let ok = Command::new(&python).args(["-c", "import torch"]).output().is_ok_and(|o| o.status.success());
    assert!(ok, "{} cannot import torch: run `make setup`", python.display());
    python
}

/// The script's `--check` report on `config` with difi's `--set overrides`.
fn report(config: &str, overrides: &[String]) -> serde_json::Value {
    let python = python();
    let out = Command::new(python)
        .current_dir(common::root())
        .env("OMP_NUM_THREADS", "1")
        .args(["benches/pytorch_eager.py", "--config", config, "--check", "--json", "--difi"])
        .arg(env!("CARGO_BIN_EXE_difi"))
        .args(overrides.iter().flat_map(|o| ["--set", o.as_str()]))
        .output()
        .expect("run the script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{config}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.trim()).unwrap()
}

fn check(config: &str) {
    let report = report(config, &[]);
    for network in ["teacher", "fake_score", "generator"] {
        let error = report["relative_l2"][network].as_f64().unwrap();
        assert!(error <= 1e-5, "{config} {network}: {error}");
    }
}

#[test]
fn the_scripts_edm_networks_match_difis() {
    check("configs/demo-fmnist.ron");
}

#[test]
fn the_scripts_toy_networks_match_difis() {
    check("configs/toy-gmm.ron");
}

/// The teacher-training bench config's network at 8×8 on the digits fixture
/// (10 classes), with dropout on and no learning-rate ramp (so that every
/// iteration's Adam update moves the weights), plus `extra` overrides.
fn teacher_report(extra: &[&str]) -> serde_json::Value {
    let digits = common::root().join("tests/fixtures/data/digits-8x8-labelled.zip");
    let mut overrides = vec![
        "network.params.network.img_resolution=8".to_string(),
        format!("dataset.params.path={:?}", digits.to_str().unwrap()),
        "network.params.network.dropout=0.1".to_string(),
        "optim.network.warmup_kimg=0".to_string(),
    ];
    overrides.extend(extra.iter().map(|o| o.to_string()));
    report("benches/configs/teacher-fmnist-b16.ron", &overrides)
}

fn relative_l2(report: &serde_json::Value, key: &str) -> f64 {
    report["relative_l2"][key].as_f64().unwrap_or_else(|| panic!("{key} missing: {report}"))
}

#[test]
fn the_scripts_teacher_training_matches_difis() {
    let report = teacher_report(&[]);
    // The same kernels in the same order: the forward pass and the first
    // iteration's loss (same batch, σ, ε and dropout masks) are bit-identical.
    assert_eq!(relative_l2(&report, "network"), 0.0, "{report}");
    assert_eq!(report["losses"][0], report["difi_losses"][0], "{report}");
    // torch.optim.Adam's per-tensor arithmetic rounds differently from
    // difi's (`exp_avg_sq.mul_().addcmul_()` against `lerp_`, `addcdiv_`
    // against a reciprocal): ~2e-7 after three updates.
    assert!(relative_l2(&report, "step_loss") <= 1e-6, "{report}");
    for key in ["step_network", "step_network_ema"] {
        assert!(relative_l2(&report, key) <= 5e-6, "{key}: {report}");
    }
}

#[test]
fn the_scripts_teacher_training_with_fused_adam_is_bit_identical() {
    // Both sides call libtorch's `_fused_adam_`: nothing differs at all.
    let report = teacher_report(&["optim.network.fused=true"]);
    for key in ["network", "step_loss", "step_network", "step_network_ema"] {
        assert_eq!(relative_l2(&report, key), 0.0, "{key}: {report}");
    }
}
