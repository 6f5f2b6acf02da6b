//! The reference runs the teacher and the fake score in train mode in the
//! generator loss and gives both the same dropout masks. With both the same
//! network, the IKL direction `D_f − D_r` is then exactly zero, though each
//! call alone is random.

use difi_core::registry::Registry;
use difi_core::traits::ScoreModel;
use difi_divergences::noisy::{NoiseLevels, SigmaScale, evaluate_noisy};
use difi_zoo::edm::config::EdmNetworkArgs;
use difi_zoo::edm::network::{EdmNetwork, Precision};
use tch::{Device, Kind, Tensor};

/// The same small EDM network every call (dropout 0.5, weights perturbed).
fn network() -> EdmNetwork {
    let args: EdmNetworkArgs = serde_json::from_value(serde_json::json!({
        "precond": "EDMPrecond", "img_resolution": 8, "img_channels": 1, "model_type": "SongUNet",
        "model_channels": 16, "channel_mult": [1, 2], "num_blocks": 1, "attn_resolutions": [], "dropout": 0.5,
    }))
    .unwrap();
    let _ = Registry::empty();
    tch::manual_seed(3);
    let mut network = EdmNetwork::new(&args.resolve().unwrap(), Precision::Fp32, Device::Cpu).unwrap();
    // EDM initialises the convolution after each dropout to zero, which
    // would hide the masks; perturb every weight as the reference fixtures do.
    let mut variables: Vec<_> = network.var_store().unwrap().variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    tch::no_grad(|| {
        for (_, mut variable) in variables {
            let _ = variable.g_add_(&(variable.randn_like() * 0.05));
        }
    });
    network.set_train(true);
    network
}

#[test]
fn teacher_and_fake_score_see_the_same_dropout_masks() {
    let teacher = network();
    let fake = network();
    let x = Tensor::randn([4, 1, 8, 8], (Kind::Float, Device::Cpu));
    let sigma = Tensor::full([4], 0.7, (Kind::Float, Device::Cpu));
    // Dropout is active: two calls of one network differ.
    let a = teacher.denoise(&x, &sigma, None).unwrap();
    let b = teacher.denoise(&x, &sigma, None).unwrap();
    assert!((&a - &b).abs().max().double_value(&[]) > 1e-4);

    let noise = NoiseLevels::LogNormal { p_mean: -1.2, p_std: 1.2 };
    let evaluation = tch::no_grad(|| evaluate_noisy(&x, None, &teacher, &fake, &noise, SigmaScale::Teacher)).unwrap();
    let difference = (evaluation.d_fake - evaluation.d_real).abs().max().double_value(&[]);
    assert_eq!(difference, 0.0);
}
