//! The StyleGAN2-ADA discriminator against the reference's outputs
//! (`tests/fixtures/stylegan2-disc/`, written by
//! `tests/python/stylegan2_discriminator_reference.py`): the same tensor
//! names, logits within 1e-4 relative L2, and the gradient of the logits
//! with respect to the images (what R1 penalises) too.

use std::path::PathBuf;

use difi_formats::weights;
use difi_zoo::edm::fixture::relative_l2;
use difi_zoo::stylegan2::discriminator::{DiscriminatorArgs, StyleGan2Discriminator, minibatch_std};
use tch::{Device, Kind, Tensor};

const BOUND: f64 = 1e-4;

fn fixtures() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/stylegan2-disc");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 3, "the discriminator fixtures: resnet, skip, orig");
    files
}

#[test]
fn every_discriminator_fixture_matches_the_reference() {
    for file in fixtures() {
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let loaded = weights::load(&file).unwrap();
        let kwargs: serde_json::Value = serde_json::from_str(&loaded.metadata["kwargs"]).unwrap();
        let config = DiscriminatorArgs::from_kwargs(&kwargs).unwrap().resolve().unwrap();
        assert_eq!(config.to_args().resolve().unwrap(), config, "{name}: kwargs round trip");
        let tensors = loaded.into_map();
        let network: std::collections::HashMap<String, Tensor> = tensors
            .iter()
            .filter(|(k, _)| k.starts_with('b') || k.starts_with("mapping."))
            .map(|(k, t)| (k.clone(), t.shallow_clone()))
            .collect();
        let mut d = StyleGan2Discriminator::new(&config, Device::Cpu).unwrap();
        // Every reference tensor, and no other, under the reference's name.
        d.load_weights(&network, &file).unwrap_or_else(|e| panic!("{name}: {e}"));

        let img = tensors["img"].set_requires_grad(true);
        let logits = d.forward(&img, tensors.get("c")).unwrap();
        let grad = Tensor::run_backward(&[logits.sum(Kind::Float)], &[&img], false, false).remove(0);
        let logits_error = relative_l2(&logits, &tensors["expected_logits"]).unwrap();
        let grad_error = relative_l2(&grad, &tensors["expected_img_grad"]).unwrap();
        eprintln!(
            "{name}: logits {logits_error:.3e}, image gradient {grad_error:.3e}, {} parameters",
            d.parameter_count()
        );
        assert!(logits_error <= BOUND, "{name}: logits rel L2 {logits_error}");
        assert!(grad_error <= BOUND, "{name}: gradient rel L2 {grad_error}");
    }
}

#[test]
fn minibatch_std_appends_the_group_deviation_and_refuses_a_ragged_batch() {
    // Two groups of two: samples 0 and 2 form one group, 1 and 3 the other (the reference's reshape).
    let x = Tensor::from_slice(&[0.0f32, 10.0, 2.0, 10.0]).reshape([4, 1, 1, 1]);
    let y = minibatch_std(&x, Some(2), 1).unwrap();
    assert_eq!(y.size(), [4, 2, 1, 1]);
    let stds = Vec::<f32>::try_from(y.select(1, 1).flatten(0, -1)).unwrap();
    assert!((stds[0] - 1.0).abs() < 1e-4 && stds[1].abs() < 1e-3, "{stds:?}");
    assert!((stds[2] - 1.0).abs() < 1e-4 && stds[3].abs() < 1e-3, "{stds:?}");
    let err = minibatch_std(&Tensor::zeros([3, 1, 2, 2], (Kind::Float, Device::Cpu)), Some(2), 1).unwrap_err();
    assert!(err.to_string().contains("multiple"), "{err}");
}

#[test]
fn unknown_keywords_are_refused() {
    let kwargs = serde_json::json!({"img_resolution": 16, "img_channels": 3, "epilogue_kwargs": {"mbstd_groups": 2}});
    assert!(DiscriminatorArgs::from_kwargs(&kwargs).is_err());
    let tiny = serde_json::json!({"img_resolution": 4, "img_channels": 3});
    assert!(DiscriminatorArgs::from_kwargs(&tiny).unwrap().resolve().is_err());
}
