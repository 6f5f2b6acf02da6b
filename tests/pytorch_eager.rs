//! `benches/pytorch_eager.py` builds the same networks as difi: its
//! `--check` loads difi's weights and compares every network's forward pass
//! on difi's inputs (relative L2 ≤ 1e-5 in float32). `make setup` installs
//! the project's Python with torch, which difi links against anyway, so a
//! missing one is a failure, not a skip.

mod common;

use std::process::Command;

fn python() -> std::path::PathBuf {
    let python = common::root().join(".venv/bin/python");
    let ok = Command::new(&python).args(["-c", "import torch"]).output().is_ok_and(|o| o.status.success());
    assert!(ok, "{} cannot import torch: run `make setup`", python.display());
    python
}

fn check(config: &str) {
    let python = python();
    let out = Command::new(python)
        .current_dir(common::root())
        .env("OMP_NUM_THREADS", "1")
        .args(["benches/pytorch_eager.py", "--config", config, "--check", "--json", "--difi"])
        .arg(env!("CARGO_BIN_EXE_difi"))
        .output()
        .expect("run the script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{config}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
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
