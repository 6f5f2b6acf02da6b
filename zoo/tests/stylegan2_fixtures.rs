//! Every reference file in `tests/fixtures/stylegan2/` and `stylegan2-arch/` through the
//! generator: W, the image with the stored noise and the image without
//! noise within 1e-4 relative L2 of StyleGAN2-ADA's outputs; and the
//! `stylegan2` generator plugin built from such a file.

use std::path::{Path, PathBuf};

use difi_core::registry::{BuildContext, Registry};
use difi_core::traits::Generator;
use difi_formats::weights;
use difi_zoo::edm::fixture::relative_l2;
use difi_zoo::stylegan2::fixture::verify;
use tch::{Device, Kind, Tensor};

const BOUND: f64 = 1e-4;

/// The shared fixtures (`skip`) and those written here for `orig` and `resnet`.
fn fixtures() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for folder in ["stylegan2", "stylegan2-arch"] {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(folder);
        files.extend(
            std::fs::read_dir(&dir)
                .unwrap_or_else(|e| panic!("{}: {e} (the reference fixtures of the repository)", dir.display()))
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "safetensors")),
        );
    }
    files.sort();
    assert!(files.len() >= 4, "expected the StyleGAN2 fixtures in tests/fixtures/stylegan2*");
    files
}

fn name(file: &Path) -> String {
    file.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn every_stylegan2_fixture_matches_the_reference() {
    for file in fixtures() {
        let report = verify(&file, Device::Cpu).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        eprintln!(
            "{}: ws {:.3e}, img {:.3e}, img_nonoise {:.3e} (psi {}, {} parameters)",
            name(&file),
            report.ws_rel_l2,
            report.img_rel_l2,
            report.img_nonoise_rel_l2,
            report.truncation_psi,
            report.parameters
        );
        assert!(report.worst() <= BOUND, "{}: {report:?}", file.display());
    }
}

#[test]
fn the_generator_plugin_reproduces_a_fixture_from_its_checkpoint() {
    let registry = Registry::with_builtins().unwrap();
    for file in fixtures() {
        let tensors = weights::load(&file).unwrap().into_map();
        let psi: f64 = weights::read_metadata(&file).unwrap()["truncation_psi"].parse().unwrap();
        let params = serde_json::json!({
            "checkpoint": file.file_name().unwrap().to_str().unwrap(),
            "truncation_psi": psi,
            "noise_mode": "const",
        });
        let ctx = BuildContext { device: Device::Cpu, teacher: None, base_dir: file.parent().unwrap() };
        let generator = registry.build_generator("stylegan2", &params, &ctx).unwrap();
        let image = tch::no_grad(|| generator.generate(&tensors["z"], tensors.get("c"))).unwrap();
        let error = relative_l2(&image, &tensors["expected_img"]).unwrap();
        assert!(error <= BOUND, "{}: plugin image rel L2 {error}", name(&file));
        let shape = generator.sample_shape();
        assert_eq!(image.size()[1..], shape[..], "{}", name(&file));
        assert_eq!(generator.latent_shape(), vec![tensors["z"].size()[1]]);
    }
}

#[test]
fn random_noise_differs_per_call_and_none_removes_it() {
    let file = &fixtures().into_iter().find(|f| name(f) == "sg2-uncond-16.safetensors").unwrap();
    let registry = Registry::with_builtins().unwrap();
    let ctx = BuildContext { device: Device::Cpu, teacher: None, base_dir: file.parent().unwrap() };
    let build = |noise_mode: &str| {
        let params = serde_json::json!({"checkpoint": name(file), "noise_mode": noise_mode});
        registry.build_generator("stylegan2", &params, &ctx).unwrap()
    };
    let tensors = weights::load(file).unwrap().into_map();
    let labels = tensors.get("c");
    let random = build("random");
    let (a, b) = tch::no_grad(|| {
        (random.generate(&tensors["z"], labels).unwrap(), random.generate(&tensors["z"], labels).unwrap())
    });
    assert!(relative_l2(&a, &b).unwrap() > 1e-6, "random noise gave equal images");
    let none = build("none");
    let image = tch::no_grad(|| none.generate(&tensors["z"], labels)).unwrap();
    // This file's outputs are untruncated (truncation_psi 1), the plugin's default.
    assert!(relative_l2(&image, &tensors["expected_img_nonoise"]).unwrap() <= BOUND);
}

#[test]
fn the_generator_is_differentiable_in_its_weights() {
    let file = &fixtures()[0];
    let registry = Registry::with_builtins().unwrap();
    let ctx = BuildContext { device: Device::Cpu, teacher: None, base_dir: file.parent().unwrap() };
    let params = serde_json::json!({"checkpoint": name(file)});
    let generator = registry.build_generator("stylegan2", &params, &ctx).unwrap();
    let z = Tensor::randn([2, generator.latent_shape()[0]], (Kind::Float, Device::Cpu));
    let labels = (generator.label_dim() > 0)
        .then(|| Tensor::eye(generator.label_dim(), (Kind::Float, Device::Cpu)).narrow(0, 0, 2));
    let loss = generator.generate(&z, labels.as_ref()).unwrap().square().mean(Kind::Float);
    loss.backward();
    let variables = generator.var_store().trainable_variables();
    let with_gradient = variables
        .iter()
        .filter(|v| v.grad().defined() && v.grad().abs().sum(Kind::Float).double_value(&[]) > 0.0)
        .count();
    // Every trainable tensor reaches the image (noise strengths through random noise).
    assert_eq!(with_gradient, variables.len());
}

#[test]
fn a_file_with_a_misnamed_tensor_is_refused() {
    let file = &fixtures()[0];
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("stylegan2-missing");
    std::fs::create_dir_all(&dir).unwrap();
    let mut tensors: Vec<(String, Tensor)> = weights::load(file).unwrap().into_map().into_iter().collect();
    // Renamed, so the values are all there and the names decide.
    for (key, _) in tensors.iter_mut().filter(|(k, _)| k == "synthesis.b8.conv0.noise_const") {
        *key = "synthesis.b8.conv0.noise".to_string();
    }
    let metadata = weights::read_metadata(file).unwrap();
    let broken = dir.join("broken.safetensors");
    weights::save(&broken, &tensors, &metadata).unwrap();
    let error = verify(&broken, Device::Cpu).expect_err("a misnamed tensor is refused").to_string();
    assert!(error.contains("noise_const"), "{error}");
}

#[test]
fn the_counted_values_are_those_of_the_built_generator() {
    use difi_zoo::stylegan2::architecture_in_metadata;
    use difi_zoo::stylegan2::network::{Sampling, StyleGan2Generator};
    for file in fixtures() {
        let config = architecture_in_metadata(&file).unwrap().unwrap().resolve().unwrap();
        let generator = StyleGan2Generator::new(&config, Sampling::default(), Device::Cpu).unwrap();
        let built: i64 = generator.var_store().variables().values().map(|t| t.numel() as i64).sum();
        assert_eq!(config.value_count(), built as u128, "{}", name(&file));
    }
}

#[test]
fn presets_have_the_reference_parameter_counts() {
    use difi_zoo::stylegan2::config::GeneratorConfig;
    use difi_zoo::stylegan2::network::{Sampling, StyleGan2Generator};
    // sum(p.numel() for p in G.parameters()) and of G.state_dict() of the
    // reference Generator built with train.py's arguments for each config.
    for (preset, parameters, values) in
        [("cifar-32x32-cond", 20_215_315, 20_218_707u128), ("paper256-256x256", 24_767_458, 24_943_026)]
    {
        let config = GeneratorConfig::preset(preset).unwrap();
        assert_eq!(config.value_count(), values, "{preset}");
        let generator = StyleGan2Generator::new(&config, Sampling::default(), Device::Cpu).unwrap();
        assert_eq!(generator.parameter_count(), parameters, "{preset}");
    }
}

#[test]
fn tracking_moves_w_avg_towards_the_batch_mean_and_cutoff_limits_truncation() {
    use difi_zoo::stylegan2::architecture_in_metadata;
    use difi_zoo::stylegan2::mapping::Truncation;
    use difi_zoo::stylegan2::network::{Sampling, StyleGan2Generator};
    let file = &fixtures()[0];
    let config = architecture_in_metadata(file).unwrap().unwrap().resolve().unwrap();
    let generator = StyleGan2Generator::new(&config, Sampling::default(), Device::Cpu).unwrap();
    let w_avg = || generator.var_store().variables()["mapping.w_avg"].copy();
    let before = w_avg();
    let w = Tensor::randn([5, config.w_dim], (Kind::Float, Device::Cpu));
    generator.mapping().track_w_avg(&w).unwrap();
    let mean = w.mean_dim(0i64, false, Kind::Float);
    let expected = &mean + (before - &mean) * config.mapping.w_avg_beta.unwrap();
    assert!(relative_l2(&w_avg(), &expected).unwrap() < 1e-6);

    // A cutoff of 2 truncates the first two W vectors only.
    let z = Tensor::randn([2, config.z_dim], (Kind::Float, Device::Cpu));
    let c = (config.c_dim > 0).then(|| Tensor::eye(config.c_dim, (Kind::Float, Device::Cpu)).narrow(0, 0, 2));
    let plain = generator.map(&z, c.as_ref(), Truncation::default()).unwrap();
    let cut = generator.map(&z, c.as_ref(), Truncation { psi: 0.5, cutoff: Some(2) }).unwrap();
    let n = config.num_ws();
    assert!(plain.narrow(1, 2, n - 2).equal(&cut.narrow(1, 2, n - 2)));
    let pulled = w_avg() + (plain.narrow(1, 0, 2) - w_avg()) * 0.5;
    assert!(relative_l2(&cut.narrow(1, 0, 2), &pulled).unwrap() < 1e-6);
}
