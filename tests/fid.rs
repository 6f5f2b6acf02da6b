//! FID as the field computes it: the reference fixtures (EDM's `fid.py` with
//! scipy), statistics files, the TorchScript detector path (a stand-in with
//! Inception-v3's interface made by the project's Python), the built-in
//! Fashion-MNIST proxy detector, and metrics during training.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{arg, difi_err, difi_ok, root, scratch};
use difi_metrics::{FeatureStats, frechet_distance};
use tch::{Kind, Tensor};

fn fid_fixture(name: &str) -> PathBuf {
    root().join("tests/fixtures/fid").join(name)
}

/// The value of the last line (`FID x` or `proxy-FID x`).
fn last_value(output: &str, label: &str) -> f64 {
    let line = output.lines().last().unwrap_or_default();
    let value = line
        .strip_prefix(&format!("{label} "))
        .unwrap_or_else(|| panic!("last line `{line}` is not `{label} <value>`"));
    value.parse().unwrap()
}

fn python(script: &str, args: &[&str]) {
    let python = root().join(".venv/bin/python");
    assert!(python.exists(), "{} missing: run `make setup`", python.display());
    let status = Command::new(python).arg(root().join("tests/python").join(script)).args(args).status().unwrap();
    assert!(status.success(), "{script} {args:?} failed");
}

fn max_relative_difference(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b.abs().max().double_value(&[]).max(1e-300);
    (a - b).abs().max().double_value(&[]) / scale
}

#[test]
fn fixture_fids_match_edms_to_1e6() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fid_fixture("fid-expected.json")).unwrap()).unwrap();
    let dir = scratch("fid-fixtures");
    for case in expected.as_array().unwrap() {
        let name = case["case"].as_str().unwrap();
        let reference = case["fid"].as_f64().unwrap();
        let [features_a, stats_a, stats_b] =
            [format!("{name}-features-a.npy"), format!("{name}-stats-a.npz"), format!("{name}-stats-b.npz")]
                .map(|f| fid_fixture(&f));
        let saved = dir.join(format!("{name}-a.npz"));
        for source in [&features_a, &stats_a] {
            let out = difi_ok(&["fid", "--ref", arg(&stats_b), arg(source), "--save-stats", arg(&saved)]);
            let fid = last_value(&out, "FID");
            assert!(
                ((fid - reference) / reference).abs() <= 1e-6,
                "{name} from {}: {fid} vs {reference}",
                source.display()
            );
        }
        // Statistics written from the features equal the fixture's.
        let ours = FeatureStats::load(&saved).unwrap();
        let theirs = FeatureStats::load(&stats_a).unwrap();
        assert!(max_relative_difference(&ours.mu, &theirs.mu) < 1e-12, "{name}: mu");
        assert!(max_relative_difference(&ours.sigma, &theirs.sigma) < 1e-12, "{name}: sigma");
        let stats = FeatureStats::from_features(&Tensor::read_npy(&features_a).unwrap()).unwrap();
        let fid = frechet_distance(&stats, &FeatureStats::load(&stats_b).unwrap()).unwrap();
        assert!(((fid - reference) / reference).abs() <= 1e-6);
    }
}

#[test]
fn distances_are_robust_when_rank_deficient_or_nearly_equal() {
    let features = Tensor::read_npy(fid_fixture("fid-512d-features-a.npy")).unwrap().to_kind(Kind::Double);
    // 100 samples in 512 dimensions: rank 99 covariances.
    let few_a = FeatureStats::from_features(&features.narrow(0, 0, 100)).unwrap();
    let few_b = FeatureStats::from_features(&features.narrow(0, 100, 100)).unwrap();
    let fid = frechet_distance(&few_a, &few_b).unwrap();
    assert!(fid.is_finite() && fid > 0.0, "{fid}");
    let self_distance = frechet_distance(&few_a, &few_a).unwrap();
    let scale = few_a.sigma.trace().double_value(&[]);
    assert!(self_distance.abs() < 1e-10 * scale, "{self_distance} (trace {scale})");
    // Nearly equal: the same samples with tiny noise.
    let all = FeatureStats::from_features(&features).unwrap();
    let nudged = FeatureStats::from_features(&(&features + features.randn_like() * 1e-6)).unwrap();
    let fid = frechet_distance(&all, &nudged).unwrap();
    let scale = all.sigma.trace().double_value(&[]);
    assert!(fid.abs() < 1e-9 * scale, "{fid} (trace {scale})");
}

#[test]
fn torchscript_detectors_give_the_references_statistics() {
    let dir = scratch("fid-torchscript");
    let detector = dir.join("stand-in.pt");
    python("detector_reference.py", &["make", arg(&detector)]);
    let digits = |n: &str| root().join("tests/fixtures/data").join(n);
    let mut stats = Vec::new();
    for name in ["digits-8x8-rgb.zip", "digits-8x8-labelled.zip"] {
        let python_stats = dir.join(format!("{name}.python.npz"));
        python("detector_reference.py", &["stats", arg(&digits(name)), arg(&detector), arg(&python_stats)]);
        let ours = dir.join(format!("{name}.difi.npz"));
        difi_ok(&["fid", "ref", arg(&digits(name)), "--detector", arg(&detector), "-o", arg(&ours), "--device", "cpu"]);
        let (a, b) = (FeatureStats::load(&ours).unwrap(), FeatureStats::load(&python_stats).unwrap());
        assert!(
            max_relative_difference(&a.mu, &b.mu) < 1e-6 && max_relative_difference(&a.sigma, &b.sigma) < 1e-6,
            "{name}"
        );
        stats.push(python_stats);
    }
    // The grayscale dataset against the RGB one's statistics, from images.
    let out = difi_ok(&[
        "fid",
        "--ref",
        arg(&stats[0]),
        arg(&digits("digits-8x8-labelled.zip")),
        "--detector",
        arg(&detector),
        "--device",
        "cpu",
    ]);
    let ours = last_value(&out, "proxy-FID");
    let theirs =
        frechet_distance(&FeatureStats::load(&stats[1]).unwrap(), &FeatureStats::load(&stats[0]).unwrap()).unwrap();
    assert!(((ours - theirs) / theirs).abs() < 1e-6, "{ours} vs {theirs}");

    // Mismatched dimensions and a missing Inception file are explained.
    let err = difi_err(&[
        "fid",
        "--ref",
        arg(&fid_fixture("fid-64d-stats-b.npz")),
        arg(&digits("digits-8x8-rgb.zip")),
        "--detector",
        arg(&detector),
        "--device",
        "cpu",
    ]);
    assert!(err.contains("32-d") && err.contains("64-d"), "{err}");
    let err = common::difi_err_env(
        &["fid", "--ref", arg(&stats[0]), arg(&digits("digits-8x8-rgb.zip"))],
        &[("DIFI_INCEPTION", None)],
    );
    assert!(err.contains("inception-2015-12-05.pt") && err.contains("DIFI_INCEPTION"), "{err}");
}

#[test]
fn the_fashion_mnist_proxy_detector_is_accurate_and_its_reference_reproducible() {
    let source = Path::new("/usr/share/datasets/fashion-mnist");
    assert!(source.is_dir(), "{} missing: install Debian's dataset-fashion-mnist (.ci/run does)", source.display());
    let dir = scratch("fid-fashion-mnist");
    let (train, test) = (dir.join("train.zip"), dir.join("test.zip"));
    difi_ok(&[
        "dataset",
        "convert",
        "--source",
        arg(&source.join("train-images-idx3-ubyte.gz")),
        "--dest",
        arg(&train),
    ]);
    difi_ok(&["dataset", "convert", "--source", arg(&source.join("t10k-images-idx3-ubyte.gz")), "--dest", arg(&test)]);

    // Test accuracy as recorded with the committed weights.
    use difi_metrics::fmnist_classifier::FmnistClassifier;
    let weights = difi_metrics::detectors::FMNIST_CLASSIFIER;
    let metadata = difi_formats::weights::parse(weights, Path::new("fmnist-classifier")).unwrap().metadata;
    let recorded: f64 = metadata["test_accuracy"].parse().unwrap();
    let classifier = FmnistClassifier::from_bytes(weights, Path::new("fmnist-classifier"), tch::Device::Cpu).unwrap();
    let (images, labels) =
        difi_datasets::export::to_tensors(&difi_datasets::ImageArchive::open(&test).unwrap()).unwrap();
    let accuracy = classifier.accuracy(&images, &labels.unwrap()).unwrap();
    eprintln!("fmnist-classifier test accuracy {accuracy:.4} (recorded {recorded})");
    assert!((accuracy - recorded).abs() < 1e-3 && accuracy > 0.9, "{accuracy} vs {recorded}");

    // The committed reference statistics are those of the training set.
    let committed = root().join("metrics/weights/fashion-mnist-32x32-fmnist-classifier.npz");
    let again = dir.join("ref.npz");
    difi_ok(&["fid", "ref", arg(&train), "--detector", "fmnist-classifier", "-o", arg(&again), "--device", "cpu"]);
    let (a, b) = (FeatureStats::load(&again).unwrap(), FeatureStats::load(&committed).unwrap());
    assert!(max_relative_difference(&a.mu, &b.mu) < 1e-5 && max_relative_difference(&a.sigma, &b.sigma) < 1e-5);
    // Held-out images are close to it, and labelled as a proxy.
    let out =
        difi_ok(&["fid", "--ref", arg(&committed), arg(&test), "--detector", "fmnist-classifier", "--device", "cpu"]);
    let proxy = last_value(&out, "proxy-FID");
    assert!(proxy > 0.0 && proxy < 0.05, "{proxy}");
}

#[test]
fn training_appends_metrics_at_every_snapshot() {
    let dir = scratch("fid-training");
    let detector = dir.join("stand-in.pt");
    python("detector_reference.py", &["make", arg(&detector)]);
    let teacher = root().join("tests/fixtures/edm/songunet-skip-vp.safetensors");
    let dataset = root().join("tests/fixtures/data/digits-8x8-labelled.zip");
    let config = dir.join("run.ron");
    std::fs::write(
        &config,
        format!(
            r#"(
                version: 1,
                device: "cpu",
                teacher: (plugin: "edm", params: (checkpoint: "{teacher}")),
                generator: (init_from: "teacher"),
                fake_score: (init_from: "teacher"),
                dataset: (plugin: "zip", params: (path: "{dataset}", use_labels: Some(false))),
                schedule: (batch_size: 8, total_kimg: 0.032, tick_kimg: 0.016, snapshot_ticks: 1),
                metrics: (list: ["fid1k_full", "pr1k3_full"], detector: "{detector}"),
            )"#,
            teacher = teacher.display(),
            dataset = dataset.display(),
            detector = detector.display()
        ),
    )
    .unwrap();
    let run = dir.join("run");
    difi_ok(&["distill", arg(&config), "--outdir", arg(&run)]);
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4, "{metrics}");
    for line in &lines {
        assert!(line["snapshot"].as_str().unwrap().starts_with("snapshot-"));
        let results = &line["results"];
        match line["metric"].as_str().unwrap() {
            "fid1k_full" => assert!(results["proxy-FID"].as_f64().is_some_and(|v| v.is_finite() && v > 0.0), "{line}"),
            _ => assert!(results["precision"].as_f64().is_some() && results["recall"].as_f64().is_some(), "{line}"),
        }
    }
    assert!(run.join("metrics-reference.npz").is_file());
    // The same number from the command line.
    let out = difi_ok(&[
        "fid",
        "--ref",
        arg(&run.join("metrics-reference.npz")),
        arg(&run),
        "--num",
        "1000",
        "--detector",
        arg(&detector),
        "--device",
        "cpu",
    ]);
    let cli = last_value(&out, "proxy-FID");
    let trained =
        lines.iter().rev().find(|l| l["metric"] == "fid1k_full").unwrap()["results"]["proxy-FID"].as_f64().unwrap();
    assert!(((cli - trained) / trained).abs() < 1e-6, "{cli} vs {trained}");
}
