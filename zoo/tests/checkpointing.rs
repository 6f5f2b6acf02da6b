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
/// the same draws for dropout, on `device`, under autocast to `autocast`.
fn output_and_gradients(
    config: &EdmNetworkConfig,
    checkpoint: bool,
    device: Device,
    autocast: Option<Kind>,
) -> (Tensor, Vec<(String, Tensor)>) {
    tch::manual_seed(0);
    let mut net = EdmNetwork::new(config, Precision::Fp32, device).unwrap();
    assert!(net.set_activation_checkpointing(checkpoint));
    net.set_train(true);
    let o = (Kind::Float, device);
    tch::manual_seed(1);
    let x = Tensor::randn([3, 3, 8, 8], o);
    let sigma = Tensor::from_slice(&[0.3f32, 2.0, 11.0]).to_device(device);
    let labels = Tensor::eye(4, o).narrow(0, 0, 3);
    let weights = Tensor::randn([3, 3, 8, 8], o);
    tch::manual_seed(2);
    let out = {
        let _autocast = autocast.map(|kind| difi_torch_ext::autocast::AutocastGuard::enable(device, kind).unwrap());
        net.denoise(&x, &sigma, Some(&labels)).unwrap()
    };
    (&out * weights).sum(Kind::Float).backward();
    let vs = net.var_store().unwrap();
    let mut grads: Vec<(String, Tensor)> = vs.variables().into_iter().map(|(name, t)| (name, t.grad())).collect();
    grads.sort_by(|a, b| a.0.cmp(&b.0));
    (out.detach(), grads)
}

/// libtorch's generator is global and tests run in parallel threads.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Checkpointed against plain on `device`: outputs within `tolerance` of
/// their largest magnitude (exact on the CPU), every gradient within
/// `tolerance` relative.
fn assert_same(model_type: ModelType, device: Device, autocast: Option<Kind>, tolerance: f64) {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let config = tiny(model_type);
    let (out, plain) = output_and_gradients(&config, false, device, autocast);
    let (out_ckpt, ckpt) = output_and_gradients(&config, true, device, autocast);
    let scale = out.abs().max().double_value(&[]);
    let difference = (&out - out_ckpt).abs().max().double_value(&[]);
    assert!(difference <= tolerance * scale, "{model_type:?} on {device:?}: outputs differ by {difference}");
    assert_eq!(plain.len(), ckpt.len());
    let mut compared = 0;
    for ((name, g), (_, g_ckpt)) in plain.iter().zip(&ckpt) {
        assert_eq!(g.defined(), g_ckpt.defined(), "{model_type:?} {name}: a gradient is missing");
        if !g.defined() {
            continue;
        }
        let scale = g.abs().max().double_value(&[]).max(1e-12);
        let error = (g - g_ckpt).abs().max().double_value(&[]) / scale;
        assert!(
            error < tolerance.max(1e-5),
            "{model_type:?} on {device:?} {name}: relative gradient difference {error}"
        );
        compared += 1;
    }
    assert!(compared > 20, "{model_type:?}: only {compared} gradients");
}

#[test]
fn song_unet_gives_the_same_outputs_and_gradients_checkpointed() {
    assert_same(ModelType::SongUNet, Device::Cpu, None, 0.0);
}

#[test]
fn dhariwal_unet_gives_the_same_outputs_and_gradients_checkpointed() {
    assert_same(ModelType::DhariwalUNet, Device::Cpu, None, 0.0);
}

/// The recomputation runs under the forward's autocast state (backward runs
/// outside any region here), so bf16 results match as exactly as float32's.
#[test]
fn autocast_is_replayed_in_the_recomputation() {
    for model_type in [ModelType::SongUNet, ModelType::DhariwalUNet] {
        assert_same(model_type, Device::Cpu, Some(Kind::BFloat16), 1e-5);
    }
}

/// On CUDA the recomputation runs on libtorch's autograd worker thread and
/// must replay the CUDA generator and the autocast state; cuDNN's backward
/// kernels may sum in another order, hence the tolerances.
#[test]
fn the_same_holds_on_cuda_in_float32_and_bf16_when_a_gpu_is_present() {
    if !tch::Cuda::is_available() {
        eprintln!("no CUDA device: skipped");
        return;
    }
    for model_type in [ModelType::SongUNet, ModelType::DhariwalUNet] {
        assert_same(model_type, Device::Cuda(0), None, 1e-4);
        assert_same(model_type, Device::Cuda(0), Some(Kind::BFloat16), 2e-2);
    }
}
