//! Every preset builds and has EDM's parameter count: exactly 55,733,891 for
//! CIFAR-10 unconditional DDPM++ (with augment_dim 9), and the sizes EDM's
//! paper reports for the others (55.7M, 56.4M, 61.8M, 62.8M, 295.9M).

use difi_zoo::edm::config::{EdmNetworkConfig, PRESETS};
use difi_zoo::edm::network::{EdmNetwork, Precision};
use tch::Device;

fn parameters(name: &str) -> i64 {
    let config = EdmNetworkConfig::preset(name).unwrap();
    EdmNetwork::new(&config, Precision::Fp32, Device::Cpu).unwrap().parameter_count()
}

#[test]
fn presets_have_edms_parameter_counts() {
    assert_eq!(parameters("cifar10-32x32-uncond-vp"), 55_733_891);
    let millions = [
        ("cifar10-32x32-cond-vp", 55.7),
        ("cifar10-32x32-cond-ve", 56.4),
        ("cifar10-32x32-uncond-ve", 56.4),
        ("ffhq-64x64-uncond-vp", 61.8),
        ("ffhq-64x64-uncond-ve", 62.8),
        ("afhqv2-64x64-uncond-vp", 61.8),
        ("afhqv2-64x64-uncond-ve", 62.8),
        ("imagenet-64x64-cond-adm", 295.9),
    ];
    assert_eq!(millions.len() + 1, PRESETS.len());
    for (name, expected) in millions {
        let count = parameters(name);
        eprintln!("{name}: {count} parameters");
        assert!((count as f64 / 1e6 - expected).abs() < 0.05, "{name}: {count} parameters, EDM reports {expected}M");
    }
}

#[test]
fn the_parameter_lower_bound_holds_and_is_tight_for_every_preset() {
    for name in PRESETS {
        let config = EdmNetworkConfig::preset(name).unwrap();
        let (bound, count) = (config.parameter_lower_bound() as f64, parameters(name) as f64);
        assert!(bound <= count && bound >= 0.4 * count, "{name}: bound {bound}, {count} parameters");
    }
}

#[test]
fn unknown_presets_and_bad_architectures_are_named() {
    let err = EdmNetworkConfig::preset("cifar100").unwrap_err().to_string();
    assert!(err.contains("cifar100") && err.contains("cifar10-32x32-cond-vp"), "{err}");
    let mut args = EdmNetworkConfig::preset("cifar10-32x32-uncond-vp").unwrap().to_args();
    args.img_resolution = Some(30);
    let err = args.resolve().unwrap_err().to_string();
    assert!(err.contains("img_resolution"), "{err}");
}
