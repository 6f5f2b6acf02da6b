//! Activation checkpointing changes memory, not results: with it on, EDM's
//! U-Nets (NCSN++ with its residual encoder and attention, and ADM) give the
//! same outputs and the same gradients, dropout included, as without.

use difi_core::traits::ScoreModel;
use difi_zoo::edm::config::{EdmNetworkConfig, EncoderType, ModelType};
use difi_zoo::edm::network::{EdmNetwork, Precision};
use tch::{Device, Kind, Tensor};

fn tiny(model_type: ModelType) -> EdmNetworkConfig {
    let preset = match model_type {
        ModelType::SongUNet => "cifar10-32x32-cond-ve",
        ModelType::DhariwalUNet => "imagenet-64x64-cond-adm",
    };
    let mut args = EdmNetworkConfig::preset(preset).unwrap().to_args();
    args.img_resolution = Some(8);
    args.label_dim = Some(4);
    args.img_channels = Some(3);
    args.model_channels = Some(16);
    args.channel_mult = Some(vec![1, 2]);
    args.num_blocks = Some(1);
    args.attn_resolutions = Some(vec![4]);
    args.dropout = Some(0.2);
    if model_type == ModelType::SongUNet {
        args.encoder_type = Some(EncoderType::Residual);
    }
    args.resolve().unwrap()
}

/// Output and every weight's gradient of `Σ D(x; σ)·w` in train mode, with
/// the same draws for dropout.
fn output_and_gradients(config: &EdmNetworkConfig, checkpoint: bool) -> (Tensor, Vec<(String, Tensor)>) {
    tch::manual_seed(0);
    let mut net = EdmNetwork::new(config, Precision::Fp32, Device::Cpu).unwrap();
    assert!(net.set_activation_checkpointing(checkpoint));
    net.set_train(true);
    let o = (Kind::Float, Device::Cpu);
    tch::manual_seed(1);
    let x = Tensor::randn([3, 3, 8, 8], o);
    let sigma = Tensor::from_slice(&[0.3f32, 2.0, 11.0]);
    let labels = Tensor::eye(4, o).narrow(0, 0, 3);
    let weights = Tensor::randn([3, 3, 8, 8], o);
    tch::manual_seed(2);
    let out = net.denoise(&x, &sigma, Some(&labels)).unwrap();
    (&out * weights).sum(Kind::Float).backward();
    let vs = net.var_store().unwrap();
    let mut grads: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(name, t)| (name, t.grad())).collect();
    grads.sort_by(|a, b| a.0.cmp(&b.0));
    (out.detach(), grads)
}

/// libtorch's generator is global and tests run in parallel threads.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn assert_same(model_type: ModelType) {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let config = tiny(model_type);
    let (out, plain) = output_and_gradients(&config, false);
    let (out_ckpt, ckpt) = output_and_gradients(&config, true);
    assert_eq!((&out - out_ckpt).abs().max().double_value(&[]), 0.0, "{model_type:?}: outputs differ");
    assert_eq!(plain.len(), ckpt.len());
    let mut compared = 0;
    for ((name, g), (_, g_ckpt)) in plain.iter().zip(&ckpt) {
        assert_eq!(g.defined(), g_ckpt.defined(), "{model_type:?} {name}: a gradient is missing");
        if !g.defined() {
            continue;
        }
        let scale = g.abs().max().double_value(&[]).max(1e-12);
        let error = (g - g_ckpt).abs().max().double_value(&[]) / scale;
        assert!(error < 1e-5, "{model_type:?} {name}: relative gradient difference {error}");
        compared += 1;
    }
    assert!(compared > 20, "{model_type:?}: only {compared} gradients");
}

#[test]
fn song_unet_gives_the_same_outputs_and_gradients_checkpointed() {
    assert_same(ModelType::SongUNet);
}

#[test]
fn dhariwal_unet_gives_the_same_outputs_and_gradients_checkpointed() {
    assert_same(ModelType::DhariwalUNet);
}
