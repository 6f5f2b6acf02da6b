//! Teacher training as a second algorithm on the same runner: EDM's loss on
//! dataset images (the digits fixture, 8×8 grayscale, 10 classes) with a
//! small conditional EDM network. Its denoising error on held-out draws
//! falls, its EMA is saved, and a resumed run equals an uninterrupted one.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;

use difi_core::registry::Registry;
use difi_core::rng::{RngStream, reseed};
use difi_train::EdmTeacherTraining;
use difi_train::config::RunConfig;
use difi_train::denoising_loss::DenoisingLoss;
use difi_train::run_dir::RunDir;
use difi_train::runner::Outcome;
use difi_train::session::build_runner;
use tch::{Device, Kind, Tensor};

/// libtorch's generator is global and the tests of this file run in parallel
/// threads; training reseeds it, so they take turns.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn teacher_config(overrides: &[String]) -> (RunConfig<EdmTeacherTraining>, Registry) {
    difi_zoo::link();
    difi_datasets::link();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let text = r#"(
        version: 1,
        seed: 1,
        device: "cpu",
        network: (plugin: "edm", params: (network: (
            precond: "EDMPrecond", img_resolution: 8, img_channels: 1, label_dim: 10,
            model_type: "SongUNet", model_channels: 16, channel_mult: [1, 2], num_blocks: 1,
            attn_resolutions: [], dropout: 0.0,
        ))),
        dataset: (plugin: "zip", params: (path: "tests/fixtures/data/digits-8x8-labelled.zip")),
        optim: (network: (lr: 2e-3, betas: (0.9, 0.999))),
        schedule: (batch_size: 32, total_kimg: 1.28, tick_kimg: 0.32, snapshot_ticks: 2, ema_halflife_kimg: 0.1),
    )"#;
    let mut config = RunConfig::<EdmTeacherTraining>::parse(text, overrides).unwrap();
    config.run.base_dir = Some(root);
    let registry = config.registry().unwrap();
    let config = config.resolve(&registry).unwrap();
    (config, registry)
}

/// The EDM loss of `weights` on 256 digits at fixed draws.
fn held_out_loss(config: &RunConfig<EdmTeacherTraining>, registry: &Registry, weights: Option<&PathBuf>) -> f64 {
    let env = config.build_env(registry, Device::Cpu, None);
    let builder = difi_train::networks::NetworkBuilder {
        registry: env.registry,
        device: env.device,
        seed: env.seed,
        base_dir: env.base_dir,
    };
    let mut network = builder.initialised_score_model(&config.algorithm.network, "network", 0).unwrap();
    if let Some(path) = weights {
        difi_formats::weights::load_into(network.var_store_mut().unwrap(), path).unwrap();
    }
    let dataset =
        difi_train::networks::build_dataset(config.run.dataset.as_ref().unwrap(), registry, config.base_dir()).unwrap();
    let (images, labels): (Vec<Tensor>, Vec<i64>) =
        (0..256).map(|i| dataset.get(i * 7).unwrap()).map(|(image, label)| (image, label.unwrap())).unzip();
    let images = Tensor::stack(&images, 0).to_kind(Kind::Float) / 127.5 - 1.0;
    let labels = Tensor::from_slice(&labels).one_hot(10).to_kind(Kind::Float);
    let mut total = 0.0;
    for draw in 0..8 {
        reseed(99, RngStream::Sampling, draw);
        let loss = tch::no_grad(|| DenoisingLoss::default().loss(network.as_ref(), &images, Some(&labels))).unwrap();
        total += loss.double_value(&[]) / 8.0;
    }
    total
}

#[test]
fn a_teacher_learns_to_denoise_dataset_images_and_resumes_exactly() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("difi-edm-teacher");
    let _ = std::fs::remove_dir_all(&scratch);
    let never = AtomicBool::new(false);
    let (config, registry) = teacher_config(&[]);

    let whole = RunDir::create(&scratch.join("whole")).unwrap();
    assert_eq!(build_runner(&config, &registry).unwrap().run(&whole, &never).unwrap(), Outcome::Finished);
    let last = whole.latest_snapshot().unwrap().unwrap();
    let before = held_out_loss(&config, &registry, None);
    let after = held_out_loss(&config, &registry, Some(&last.join("network_ema.safetensors")));
    eprintln!("held-out EDM loss: {before:.4} at initialisation, {after:.4} after 40 iterations (EMA)");
    assert!(after < 0.8 * before, "{before} → {after}");

    let halves = RunDir::create(&scratch.join("halves")).unwrap();
    let (first, _) = teacher_config(&["schedule.total_kimg=0.64".into()]);
    build_runner(&first, &registry).unwrap().run(&halves, &never).unwrap();
    let mut second = build_runner(&config, &registry).unwrap();
    second.load_snapshot(&halves.latest_snapshot().unwrap().unwrap()).unwrap();
    second.run(&halves, &never).unwrap();
    let resumed = halves.latest_snapshot().unwrap().unwrap();
    for file in ["network.safetensors", "network_ema.safetensors", "adam_network.safetensors"] {
        let a = difi_formats::weights::load(&last.join(file)).unwrap().into_map();
        let b = difi_formats::weights::load(&resumed.join(file)).unwrap().into_map();
        for (name, tensor) in &a {
            assert_eq!((tensor - &b[name]).abs().max().double_value(&[]), 0.0, "{file}: {name}");
        }
    }
}

#[test]
fn teacher_training_without_a_dataset_is_refused() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let (mut config, registry) = teacher_config(&[]);
    config.run.dataset = None;
    let err = build_runner(&config, &registry).err().unwrap().to_string();
    assert!(err.contains("dataset"), "{err}");
}

#[test]
fn a_batch_can_be_processed_in_rounds() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("difi-edm-teacher-rounds");
    let _ = std::fs::remove_dir_all(&scratch);
    let (config, registry) = teacher_config(&["batch_per_pass=Some(8)".into(), "schedule.total_kimg=0.32".into()]);
    let run = RunDir::create(&scratch).unwrap();
    build_runner(&config, &registry).unwrap().run(&run, &AtomicBool::new(false)).unwrap();
    let stats = std::fs::read_to_string(run.stats_path()).unwrap();
    let line: serde_json::Value = serde_json::from_str(stats.lines().last().unwrap()).unwrap();
    assert!(line["loss_network"].as_f64().is_some_and(f64::is_finite), "{line}");

    let (config, registry) = teacher_config(&["batch_per_pass=Some(5)".into()]);
    let err = build_runner(&config, &registry).err().unwrap().to_string();
    assert!(err.contains("batch_per_pass") && err.contains("does not divide"), "{err}");
}
