//! `difi train-gan` end to end on tiny networks: a class-conditional
//! StyleGAN2 on the 8×8 digits fixture trains through the runner (lazy R1
//! included), saves both networks, samples (also beside another run),
//! resumes exactly, and refuses unknown fields; `configs/gan-fmnist.ron` checks out.

mod common;

use std::path::Path;

use common::{arg, difi_err, difi_ok, latest_snapshot, root, scratch};
use difi_formats::weights;

/// A tiny GAN: 8×8 digits, 10 classes, 8 channels, batch 4 in mbstd groups
/// of 2, R1 every 4 iterations; 8 iterations in two ticks.
fn config(dataset: &Path) -> String {
    format!(
        r#"(
            version: 1,
            algorithm: "stylegan2-gan",
            seed: 3,
            device: "cpu",
            generator: (
                z_dim: 8, c_dim: 10, w_dim: 8, img_resolution: 8, img_channels: 1,
                mapping_kwargs: (num_layers: 2),
                synthesis_kwargs: (channel_base: 64, channel_max: 8, conv_clamp: 256),
            ),
            discriminator: (channel_base: 64, channel_max: 8, mapping_kwargs: (num_layers: 2), epilogue_kwargs: (mbstd_group_size: 2)),
            r1_gamma: 1.0,
            d_reg_interval: 4,
            dataset: (plugin: "zip", params: (path: "{}", xflip: true)),
            optim: (generator: (lr: 0.0025, betas: (0.0, 0.99)), discriminator: (lr: 0.0025, betas: (0.0, 0.99))),
            schedule: (batch_size: 4, total_kimg: 0.032, tick_kimg: 0.016, snapshot_ticks: 1, ema_halflife_kimg: 0.01),
        )"#,
        dataset.display()
    )
}

fn write_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("gan.ron");
    std::fs::write(&path, config(&root().join("tests/fixtures/data/digits-8x8-labelled.zip"))).unwrap();
    path
}

fn max_difference(a: &Path, b: &Path) -> f64 {
    let mut worst: f64 = 0.0;
    for file in ["generator", "generator_ema", "discriminator", "adam_discriminator"] {
        let left = weights::load(&a.join(format!("{file}.safetensors"))).unwrap().into_map();
        let right = weights::load(&b.join(format!("{file}.safetensors"))).unwrap().into_map();
        assert_eq!(left.len(), right.len(), "{file}");
        for (name, tensor) in &left {
            worst = worst.max((tensor - &right[name]).abs().max().double_value(&[]));
        }
    }
    worst
}

#[test]
fn a_tiny_gan_trains_samples_and_resumes_exactly() {
    let dir = scratch("gan-train");
    let config = write_config(&dir);
    let whole = dir.join("whole");
    difi_ok(&["train-gan", arg(&config), "--outdir", arg(&whole)]);
    let last = latest_snapshot(&whole);
    for file in ["generator", "generator_ema", "discriminator", "adam_generator", "adam_discriminator"] {
        assert!(last.join(format!("{file}.safetensors")).is_file(), "{file} in {}", last.display());
    }
    // The discriminator's tensors carry the reference's names.
    let d = weights::load(&last.join("discriminator.safetensors")).unwrap().into_map();
    for name in
        ["b8.fromrgb.weight", "b8.conv1.resample_filter", "b4.fc.weight", "b4.out.weight", "mapping.embed.weight"]
    {
        assert!(d.contains_key(name), "{name} missing from {:?}", d.keys().collect::<Vec<_>>());
    }
    let stats = std::fs::read_to_string(whole.join("stats.jsonl")).unwrap();
    assert_eq!(stats.lines().count(), 2, "{stats}");
    for line in stats.lines() {
        let line: serde_json::Value = serde_json::from_str(line).unwrap();
        for key in ["loss_generator", "loss_discriminator"] {
            assert!(line[key].as_f64().is_some_and(f64::is_finite), "{key}: {line}");
        }
    }
    let samples = dir.join("samples.npy");
    difi_ok(&["sample", "--run", arg(&whole), "--n", "5", "--out", arg(&samples)]);
    assert_eq!(tch::Tensor::read_npy(&samples).unwrap().size(), vec![5, 1, 8, 8]);

    // Half the run, then resumed to the end: the same weights and Adam moments.
    let split = dir.join("split");
    difi_ok(&["train-gan", arg(&config), "--outdir", arg(&split), "--set", "schedule.total_kimg=0.016"]);
    difi_ok(&["train-gan", "--resume", arg(&split), "--set", "schedule.total_kimg=0.032"]);
    let resumed = latest_snapshot(&split);
    let difference = max_difference(&last, &resumed);
    assert!(difference == 0.0, "resumed run differs by {difference}");

    // Two runs' grids side by side, on the same latents: a before | after picture.
    let picture = dir.join("beside.png");
    difi_ok(&["sample", "--run", arg(&whole), "--beside", arg(&split), "--n", "4", "--out", arg(&picture)]);
    assert!(std::fs::metadata(&picture).unwrap().len() > 0);
    let err = difi_err(&["sample", "--run", arg(&whole), "--beside", arg(&split), "--n", "4", "--out", arg(&samples)]);
    assert!(err.contains(".png"), "{err}");
}

#[test]
fn unknown_fields_and_bad_settings_are_refused() {
    let dir = scratch("gan-refusals");
    let config = write_config(&dir);
    let out = dir.join("run");
    let err = difi_err(&["train-gan", arg(&config), "--outdir", arg(&out), "--set", "r1_gama=1.0"]);
    assert!(err.contains("r1_gama"), "{err}");
    let err = difi_err(&["train-gan", arg(&config), "--outdir", arg(&out), "--set", "discriminator.mbstd=4"]);
    assert!(err.contains("mbstd"), "{err}");
    let err = difi_err(&["train-gan", arg(&config), "--outdir", arg(&out), "--set", "schedule.batch_size=5"]);
    assert!(err.contains("mbstd_group_size"), "{err}");
    let err = difi_err(&["train-gan", arg(&config), "--outdir", arg(&out), "--set", "generator.img_resolution=16"]);
    assert!(err.contains("shape") || err.contains("16"), "{err}");
    assert!(!out.exists(), "a refused config leaves no run behind");
}

#[test]
fn the_fashion_mnist_gan_config_checks_out() {
    // The dataset may be absent (`make teacher-data`); the config itself must resolve.
    let out = common::difi(&["check", "configs/gan-fmnist.ron"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() || stderr.contains("fashion-mnist"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("r1_gamma"), "{stderr}");
}

#[test]
fn gan_training_on_two_ranks_follows_one_process() {
    let dir = scratch("gan-distributed");
    let config = write_config(&dir);
    let (one, two) = (dir.join("one"), dir.join("two"));
    // Minibatch std is a statistic of the batch each process sees (the
    // reference's groups are strided over its per-GPU batch), so only
    // without it can two ranks equal one process.
    let no_mbstd = ["--set", "discriminator.epilogue_kwargs.mbstd_group_size=1"];
    let mut args = vec!["train-gan", arg(&config), "--outdir", arg(&one)];
    args.extend(no_mbstd);
    difi_ok(&args);
    args[3] = arg(&two);
    args.extend(["--nproc-per-node", "2"]);
    difi_ok(&args);
    // Each rank draws its rows of the global batch (real images, latents,
    // labels, noise inputs), so the losses are one process's up to rounding.
    let losses = |run: &Path| -> Vec<(f64, f64)> {
        let text = std::fs::read_to_string(run.join("stats.jsonl")).unwrap();
        text.lines()
            .map(|l| {
                let line: serde_json::Value = serde_json::from_str(l).unwrap();
                (line["loss_generator"].as_f64().unwrap(), line["loss_discriminator"].as_f64().unwrap())
            })
            .collect()
    };
    let (a, b) = (losses(&one), losses(&two));
    assert_eq!(a.len(), b.len());
    for ((g1, d1), (g2, d2)) in a.iter().zip(&b) {
        assert!((g1 - g2).abs() <= 1e-4 * g1.abs() && (d1 - d2).abs() <= 1e-4 * d1.abs(), "{a:?} vs {b:?}");
    }
    let difference = max_difference(&latest_snapshot(&one), &latest_snapshot(&two));
    assert!(difference < 1e-2, "weights differ by {difference}");
}
