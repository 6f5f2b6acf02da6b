//! Bad input gets a clear error naming the thing, and leaves existing
//! outputs intact; `difi check` prints the resolved config.

mod common;

use common::{arg, difi_err, difi_ok, latest_snapshot, scratch};

#[test]
fn check_prints_the_resolved_config_with_every_default() {
    let out =
        difi_ok(&["check", "configs/toy-gmm.ron", "--set", "teacher.params.stds=[0.2,0.2,0.2,0.2,0.2,0.2,0.2,0.2]"]);
    for expected in
        ["version: 1", "noise_features: 32", "max_nonfinite_iters: 10", "stds: [0.2, 0.2", "loss_scale: 1.0"]
    {
        assert!(out.contains(expected), "`{expected}` missing from:\n{out}");
    }
    // The printed config is itself a valid config.
    let dir = scratch("check-roundtrip");
    let printed = dir.join("resolved.ron");
    std::fs::write(&printed, &out).unwrap();
    assert_eq!(difi_ok(&["check", arg(&printed)]), out);
}

#[test]
fn config_errors_name_the_key() {
    let cases: [(&[&str], &[&str]); 8] = [
        (&["--set", "teacher.params.sdts=[0.3]"], &["teacher.params", "sdts"]),
        (&["--set", r#"teacher.plugin="gmn""#], &["teacher.plugin", "gmn", "gmm"]),
        (&["--set", "teacher.params.stds=[0.3]"], &["teacher.params.stds", "1 values for 8"]),
        (&["--set", "schedule.totl_kimg=3"], &["schedule", "totl_kimg"]),
        (&["--set", "schedule.total_kimg=-1"], &["schedule.total_kimg", "positive"]),
        (&["--set", "optim.generator.betas=(1.5, 0.9)"], &["optim.generator.betas"]),
        (&["--set", "device=tpu"], &["device", "tpu"]),
        (&["--set", "version=2"], &["version 2"]),
    ];
    for (overrides, expected) in cases {
        let mut args = vec!["check", "configs/toy-gmm.ron"];
        args.extend(overrides);
        let err = difi_err(&args);
        for needle in expected {
            assert!(err.contains(needle), "{overrides:?}: `{needle}` missing from: {err}");
        }
    }
}

#[test]
fn compare_checks_every_divergence_before_training_any() {
    let out = scratch("compare-bad");
    let runs = out.join("runs");
    let cases: [(&[&str], &[&str]); 4] = [
        (&["--divergences", "ikl,kld"], &["kld", "run kld"]),
        (&["--divergences", "ikl", "--variant", "sid-2=(plugin: \"sid\", params: (alfa: 2.0))"], &["sid-2", "alfa"]),
        (&["--divergences", "ikl,ikl"], &["ikl", "twice"]),
        (&["--divergences", "", "--variant", "sub/run=(plugin: \"ikl\")"], &["sub/run", "plain name"]),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["compare", "configs/toy-gmm.ron", "--outdir", arg(&runs)];
        args.extend(extra);
        let err = difi_err(&args);
        for needle in expected {
            assert!(err.contains(needle), "{extra:?}: `{needle}` missing from: {err}");
        }
        assert!(!runs.exists(), "{extra:?}: nothing may be written before every run resolves");
    }
}

#[test]
fn missing_and_malformed_files_are_named() {
    let err = difi_err(&["check", "configs/nope.ron"]);
    assert!(err.contains("configs/nope.ron"), "{err}");
    let dir = scratch("malformed");
    let bad = dir.join("bad.ron");
    std::fs::write(&bad, "(version: 1, teacher: (plugin: \"gmm\"").unwrap();
    let err = difi_err(&["check", arg(&bad)]);
    assert!(err.contains("bad.ron") && err.contains("RON"), "{err}");
    let err = difi_err(&["sample", "--run", arg(&dir), "--out", "x.npy"]);
    assert!(err.contains("not a run directory"), "{err}");
}

#[test]
fn an_existing_run_is_never_overwritten() {
    let dir = scratch("no-overwrite");
    let run = dir.join("run");
    difi_ok(&["distill", "configs/toy-gmm.ron", "--outdir", arg(&run), "--set", "schedule.total_kimg=2"]);
    let before = std::fs::read_to_string(run.join("config.ron")).unwrap();
    let err = difi_err(&["distill", "configs/toy-gmm.ron", "--outdir", arg(&run), "--set", "seed=5"]);
    assert!(err.contains("--resume"), "{err}");
    assert_eq!(std::fs::read_to_string(run.join("config.ron")).unwrap(), before);

    // A config that cannot be built leaves no run directory behind.
    let never = dir.join("never");
    difi_err(&["distill", "configs/toy-gmm.ron", "--outdir", arg(&never), "--set", "teacher.params.stds=[1.0]"]);
    assert!(!never.exists());
}

#[test]
fn diverging_training_stops_with_an_error_and_keeps_the_snapshots() {
    let dir = scratch("nan");
    let run = dir.join("run");
    difi_ok(&["distill", "configs/toy-gmm.ron", "--outdir", arg(&run), "--set", "schedule.total_kimg=4"]);
    let good = latest_snapshot(&run);
    let weights = std::fs::read(good.join("generator_ema.safetensors")).unwrap();

    let err = difi_err(&[
        "distill",
        "--resume",
        arg(&run),
        "--set",
        "schedule.total_kimg=40",
        "--set",
        "optim.generator.lr=1e30",
        "--set",
        "optim.fake_score.lr=1e30",
    ]);
    assert!(err.contains("not finite") && err.contains("lower the learning rates"), "{err}");
    assert_eq!(latest_snapshot(&run), good, "no snapshot of the diverged weights");
    assert_eq!(std::fs::read(good.join("generator_ema.safetensors")).unwrap(), weights);
    let out = dir.join("ok.npy");
    difi_ok(&["sample", "--run", arg(&run), "--n", "10", "--out", arg(&out)]);
}

#[test]
fn sample_refuses_bad_arguments() {
    let dir = scratch("sample-args");
    let run = dir.join("run");
    difi_ok(&["distill", "configs/toy-gmm.ron", "--outdir", arg(&run), "--set", "schedule.total_kimg=2"]);
    let err = difi_err(&["sample", "--run", arg(&run), "--n", "5", "--out", arg(&dir.join("x.png"))]);
    assert!(err.contains(".npy"), "{err}");
    let err = difi_err(&["sample", "--run", arg(&run), "--n", "0", "--out", arg(&dir.join("x.npy"))]);
    assert!(err.contains("--n"), "{err}");
    let err = difi_err(&["sample", "--run", arg(&run), "--checkpoint", arg(&dir), "--out", arg(&dir.join("x.npy"))]);
    assert!(err.contains("generator_ema.safetensors"), "{err}");
}

#[test]
fn cuda_support_is_linked_into_the_binary() {
    let info = difi_ok(&["info"]);
    assert!(info.contains("libtorch_cuda linked"), "{info}");
    assert!(info.contains("libtorch 2.11.0"), "{info}");
}

#[test]
fn bench_reports_speed_and_memory() {
    let out = difi_ok(&[
        "bench",
        "configs/toy-gmm.ron",
        "--iterations",
        "3",
        "--warmup",
        "1",
        "--json",
        "--set",
        "device=cpu",
    ]);
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["batch_size"], 256);
    for key in [
        "sec_per_iteration",
        "sec_per_iteration_median",
        "generator_images_per_s",
        "sec_per_kimg",
        "rss_mib",
        "peak_rss_mib",
    ] {
        assert!(report[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {report}");
    }
}

#[test]
fn compare_pytorch_without_python_says_so() {
    let err = difi_err(&[
        "bench",
        "configs/toy-gmm.ron",
        "--compare-pytorch",
        "--python",
        "/nonexistent/python3",
        "--set",
        "device=cpu",
    ]);
    assert!(err.contains("/nonexistent/python3") && err.contains("--python PATH"), "{err}");
}

#[test]
fn bench_writes_the_pytorch_scripts_spec() {
    let dir = scratch("bench-spec");
    let path = dir.join("spec.json");
    difi_ok(&["bench", "configs/toy-gmm.ron", "--write-spec", arg(&path)]);
    let spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(spec["config"]["schedule"]["batch_size"], 256);
    assert_eq!(spec["config"]["fake_updates_per_iter"], 2);
    assert!(spec["base_dir"].as_str().is_some_and(|d| d.ends_with("configs")), "{spec}");
}

#[test]
fn bench_times_teacher_training_and_refuses_other_algorithms() {
    let digits = common::root().join("tests/fixtures/data/digits-8x8-labelled.zip");
    let dataset = format!("dataset.params.path={:?}", digits.to_str().unwrap());
    let config = "benches/configs/teacher-fmnist-b16.ron";
    let small = ["--set", "network.params.network.img_resolution=8", "--set", &dataset];
    let mut args = vec!["bench", config, "--iterations", "2", "--warmup", "1", "--json"];
    args.extend(small);
    let report: serde_json::Value = serde_json::from_str(&difi_ok(&args)).unwrap();
    assert_eq!(report["algorithm"], "edm-teacher");
    assert_eq!(report["batch_size"], 16);
    for key in ["sec_per_iteration", "sec_per_iteration_median", "images_per_s", "peak_rss_mib"] {
        assert!(report[key].as_f64().is_some_and(|v| v > 0.0), "{key}: {report}");
    }

    let dir = scratch("bench-teacher-spec");
    let path = dir.join("spec.json");
    let mut args = vec!["bench", config, "--write-spec", arg(&path)];
    args.extend(small);
    difi_ok(&args);
    let spec: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(spec["config"]["algorithm"], "edm-teacher");
    assert_eq!(spec["config"]["loss"]["kind"], "edm");
    assert!(spec["config"]["optim"]["network"]["lr"].is_number(), "{spec}");

    let err = difi_err(&["bench", "configs/gan-fmnist.ron"]);
    assert!(err.contains("stylegan2-gan") && err.contains("edm-teacher"), "{err}");
}

#[test]
fn the_paper_configs_check_before_their_files_are_downloaded() {
    for config in ["configs/cifar10-uncond.ron", "configs/cifar10-cond.ron", "configs/imagenet64-cond.ron"] {
        let out = common::difi(&["check", config]);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "{config}: {stderr}");
        for setting in
            ["sigma_init: 1.0", "lr: 0.00001", "betas: [0.0, 0.999]", "nonfinite: \"clamp\"", "batch_size: 128"]
        {
            assert!(stdout.contains(setting), "{config}: `{setting}` missing from:\n{stdout}");
        }
        assert!(stdout.contains("ema_halflife_kimg: 500.0") && stdout.contains("generator_loss_mode: \"train\""));
        assert!(stderr.contains("checks out") || stderr.contains(": ok"), "{config}: {stderr}");
    }
    let uncond = difi_ok(&["check", "configs/cifar10-uncond.ron"]);
    assert!(uncond.contains("p: 0.12") && uncond.contains("dropout: 0.13"), "{uncond}");
}

#[test]
fn the_demo_distills_the_embedded_teacher_and_shows_it() {
    let dir = scratch("demo-config");
    let run = dir.join("run");
    difi_ok(&[
        "distill",
        "configs/demo-fmnist.ron",
        "--outdir",
        arg(&run),
        "--set",
        "schedule.total_kimg=0.032",
        "--set",
        "schedule.tick_kimg=0.016",
        "--set",
        "schedule.snapshot_ticks=1",
        "--set",
        "metrics.list=[\"fid1k_full\"]",
    ]);
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 2, "{metrics}");
    assert!(latest_snapshot(&run).join("samples.png").is_file());
    let picture = dir.join("showcase.png");
    let table = difi_ok(&[
        "showcase",
        arg(&run),
        "--out",
        arg(&picture),
        "--n",
        "100",
        "--teacher-steps",
        "3",
        "--few-steps",
        "2",
    ]);
    for row in ["teacher", "student at iteration 0", "proxy-FID", "samples/s"] {
        assert!(table.contains(row), "{row} missing from:\n{table}");
    }
    assert!(picture.is_file());
    difi_ok(&["report", arg(&run)]);
    assert!(run.join("report.png").is_file());
}

#[test]
fn networks_too_large_to_be_meant_are_refused_before_allocation() {
    for set in [
        "generator.params.hidden=[100000000, 100000000]",
        "fake_score.params.hidden=[9223372036854775807]",
        "generator.params.latent_dim=9223372036854775807",
    ] {
        let err = difi_err(&["check", "configs/toy-gmm.ron", "--set", set]);
        assert!(err.contains("parameters") || err.contains("at least 1"), "{set}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{set}: {err}");
    }
}
