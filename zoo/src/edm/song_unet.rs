//! `SongUNet`: the DDPM++ and NCSN++ backbones (Song et al. 2021) as EDM
//! reimplements them, with standard, skip or residual encoders and standard
//! or skip decoders.

use std::rc::Rc;

use difi_core::error::{Result, TorchContext};
use tch::nn::Path;
use tch::{Kind, Tensor};

use super::config::{DecoderType, EdmNetworkConfig, EmbeddingType, EncoderType};
use super::layers::{
    BlockOptions, Conv2d, ConvOptions, FourierEmbedding, GroupNorm, Init, InitMode, Linear, PositionalEmbedding,
    UNetBlock, run_block,
};

enum NoiseEmbedding {
    Positional(PositionalEmbedding),
    Fourier(FourierEmbedding),
}

/// Encoder modules in EDM's order (`model.enc.<name>`).
enum Encoder {
    Conv(Conv2d),
    Block(Rc<UNetBlock>),
    AuxDown(Conv2d),
    AuxSkip(Conv2d),
    AuxResidual(Conv2d),
}

/// Decoder modules in EDM's order (`model.dec.<name>`).
enum Decoder {
    Block(Rc<UNetBlock>),
    AuxUp(Conv2d),
    AuxNorm(GroupNorm),
    AuxConv(Conv2d),
}

/// The DDPM++/NCSN++ U-Net.
pub struct SongUNet {
    map_noise: NoiseEmbedding,
    map_label: Option<Linear>,
    map_augment: Option<Linear>,
    map_layer0: Linear,
    map_layer1: Linear,
    enc: Vec<Encoder>,
    dec: Vec<Decoder>,
    label_dropout: f64,
    /// Recompute each U-Net block's activations in backward.
    checkpoint_blocks: bool,
}

impl SongUNet {
    /// Builds the backbone under `path` (EDM names it `model`).
    pub fn new(path: &Path, c: &EdmNetworkConfig) -> Result<Self> {
        let (in_channels, out_channels) = (c.img_channels, c.img_channels);
        let emb_channels = c.model_channels * c.channel_mult_emb;
        let noise_channels = c.model_channels * c.channel_mult_noise;
        let init = Init::mode(InitMode::XavierUniform);
        let init_zero = Init { weight: 1e-5, ..init };
        let init_attn = Init { weight: 0.2f64.sqrt(), ..init };
        let block = BlockOptions {
            emb_channels,
            num_heads: Some(1),
            channels_per_head: 64,
            dropout: c.dropout,
            skip_scale: 0.5f64.sqrt(),
            eps: 1e-6,
            resample_filter: c.resample_filter.clone(),
            resample_proj: true,
            adaptive_scale: false,
            init,
            init_zero,
            init_attn: Some(init_attn),
        };

        let map_noise = if c.embedding_type == EmbeddingType::Positional {
            NoiseEmbedding::Positional(PositionalEmbedding::new(noise_channels, true))
        } else {
            NoiseEmbedding::Fourier(FourierEmbedding::new(&(path / "map_noise"), noise_channels, 16.0)?)
        };
        let map_label = if c.label_dim > 0 {
            Some(Linear::new(&(path / "map_label"), c.label_dim, noise_channels, true, init)?)
        } else {
            None
        };
        let map_augment = if c.augment_dim > 0 {
            Some(Linear::new(&(path / "map_augment"), c.augment_dim, noise_channels, false, init)?)
        } else {
            None
        };
        let map_layer0 = Linear::new(&(path / "map_layer0"), noise_channels, emb_channels, true, init)?;
        let map_layer1 = Linear::new(&(path / "map_layer1"), emb_channels, emb_channels, true, init)?;

        let enc_path = path / "enc";
        let mut enc = Vec::new();
        let mut skips = Vec::new();
        let (mut cout, mut caux) = (in_channels, in_channels);
        for (level, mult) in c.channel_mult.iter().enumerate() {
            let res = c.img_resolution >> level;
            let name = |suffix: &str| format!("{res}x{res}_{suffix}");
            if level == 0 {
                let cin = cout;
                cout = c.model_channels;
                enc.push(Encoder::Conv(Conv2d::new(
                    &(&enc_path / name("conv")),
                    cin,
                    cout,
                    3,
                    &ConvOptions::new(init),
                )?));
                skips.push(cout);
            } else {
                enc.push(Encoder::Block(Rc::new(UNetBlock::new(
                    &(&enc_path / name("down")),
                    cout,
                    cout,
                    false,
                    true,
                    false,
                    &block,
                )?)));
                skips.push(cout);
                let resample =
                    ConvOptions { down: true, resample_filter: c.resample_filter.clone(), ..ConvOptions::new(init) };
                if c.encoder_type == EncoderType::Skip {
                    enc.push(Encoder::AuxDown(Conv2d::new(&(&enc_path / name("aux_down")), caux, caux, 0, &resample)?));
                    enc.push(Encoder::AuxSkip(Conv2d::new(
                        &(&enc_path / name("aux_skip")),
                        caux,
                        cout,
                        1,
                        &ConvOptions::new(init),
                    )?));
                }
                if c.encoder_type == EncoderType::Residual {
                    let fused = ConvOptions { fused_resample: true, ..resample };
                    enc.push(Encoder::AuxResidual(Conv2d::new(
                        &(&enc_path / name("aux_residual")),
                        caux,
                        cout,
                        3,
                        &fused,
                    )?));
                    caux = cout;
                }
            }
            for idx in 0..c.num_blocks {
                let cin = cout;
                cout = c.model_channels * mult;
                let attention = c.attn_resolutions.contains(&res);
                let path = &enc_path / name(&format!("block{idx}"));
                enc.push(Encoder::Block(Rc::new(UNetBlock::new(&path, cin, cout, false, false, attention, &block)?)));
                skips.push(cout);
            }
        }

        let dec_path = path / "dec";
        let mut dec = Vec::new();
        let levels = c.channel_mult.len();
        for (level, mult) in c.channel_mult.iter().enumerate().rev() {
            let res = c.img_resolution >> level;
            let name = |suffix: &str| format!("{res}x{res}_{suffix}");
            if level == levels - 1 {
                dec.push(Decoder::Block(Rc::new(UNetBlock::new(
                    &(&dec_path / name("in0")),
                    cout,
                    cout,
                    false,
                    false,
                    true,
                    &block,
                )?)));
                dec.push(Decoder::Block(Rc::new(UNetBlock::new(
                    &(&dec_path / name("in1")),
                    cout,
                    cout,
                    false,
                    false,
                    false,
                    &block,
                )?)));
            } else {
                dec.push(Decoder::Block(Rc::new(UNetBlock::new(
                    &(&dec_path / name("up")),
                    cout,
                    cout,
                    true,
                    false,
                    false,
                    &block,
                )?)));
            }
            for idx in 0..=c.num_blocks {
                let cin = cout + skips.pop().expect("one skip per encoder block");
                cout = c.model_channels * mult;
                let attention = idx == c.num_blocks && c.attn_resolutions.contains(&res);
                let path = &dec_path / name(&format!("block{idx}"));
                dec.push(Decoder::Block(Rc::new(UNetBlock::new(&path, cin, cout, false, false, attention, &block)?)));
            }
            if c.decoder_type == DecoderType::Skip || level == 0 {
                if c.decoder_type == DecoderType::Skip && level < levels - 1 {
                    let up =
                        ConvOptions { up: true, resample_filter: c.resample_filter.clone(), ..ConvOptions::new(init) };
                    dec.push(Decoder::AuxUp(Conv2d::new(
                        &(&dec_path / name("aux_up")),
                        out_channels,
                        out_channels,
                        0,
                        &up,
                    )?));
                }
                dec.push(Decoder::AuxNorm(GroupNorm::new(&(&dec_path / name("aux_norm")), cout, 1e-6)?));
                let conv =
                    Conv2d::new(&(&dec_path / name("aux_conv")), cout, out_channels, 3, &ConvOptions::new(init_zero))?;
                dec.push(Decoder::AuxConv(conv));
            }
        }
        Ok(SongUNet {
            map_noise,
            map_label,
            map_augment,
            map_layer0,
            map_layer1,
            enc,
            dec,
            label_dropout: c.label_dropout,
            checkpoint_blocks: false,
        })
    }

    /// Whether each U-Net block's activations are recomputed in backward
    /// instead of kept (less memory, one more forward pass of each block).
    pub fn set_checkpoint_blocks(&mut self, on: bool) {
        self.checkpoint_blocks = on;
    }

    /// `F(x; noise_labels)`: `x` `[N, C, H, W]` (already scaled by c_in),
    /// `noise_labels` `[N]`, one-hot `class_labels` `[N or 1, label_dim]`,
    /// `augment_labels` `[N, augment_dim]`.
    pub fn forward(
        &self,
        x: &Tensor,
        noise_labels: &Tensor,
        class_labels: Option<&Tensor>,
        augment_labels: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let n = x.size()[0];
        let emb = match &self.map_noise {
            NoiseEmbedding::Positional(e) => e.forward(noise_labels)?,
            NoiseEmbedding::Fourier(e) => e.forward(noise_labels)?,
        };
        // Swap the cos and sin halves, as EDM does.
        let size = emb.size();
        let mut emb = emb
            .f_reshape([size[0], 2, -1])
            .ctx("embedding")?
            .f_flip([1])
            .ctx("embedding")?
            .f_reshape(&size)
            .ctx("embedding")?;
        if let (Some(map_label), Some(labels)) = (&self.map_label, class_labels) {
            let labels = label_dropout(labels, self.label_dropout, n, train)?;
            emb = emb + map_label.forward(&(labels * (map_label.in_features as f64).sqrt()))?;
        }
        if let (Some(map_augment), Some(augment)) = (&self.map_augment, augment_labels) {
            emb = emb + map_augment.forward(augment)?;
        }
        let emb = self.map_layer0.forward(&emb)?.f_silu().ctx("silu")?;
        let emb = self.map_layer1.forward(&emb)?.f_silu().ctx("silu")?;

        let mut skips: Vec<Tensor> = Vec::new();
        let mut x = x.shallow_clone();
        let mut aux = x.shallow_clone();
        for module in &self.enc {
            match module {
                Encoder::AuxDown(conv) => aux = conv.forward(&aux)?,
                Encoder::AuxSkip(conv) => {
                    x = x + conv.forward(&aux)?;
                    *skips.last_mut().expect("a skip before aux_skip") = x.shallow_clone();
                }
                Encoder::AuxResidual(conv) => {
                    x = (x + conv.forward(&aux)?) / 2f64.sqrt();
                    *skips.last_mut().expect("a skip before aux_residual") = x.shallow_clone();
                    aux = x.shallow_clone();
                }
                Encoder::Conv(conv) => {
                    x = conv.forward(&x)?;
                    skips.push(x.shallow_clone());
                }
                Encoder::Block(block) => {
                    x = run_block(block, &x, &emb, train, self.checkpoint_blocks)?;
                    skips.push(x.shallow_clone());
                }
            }
        }

        let mut aux: Option<Tensor> = None;
        let mut tmp: Option<Tensor> = None;
        for module in &self.dec {
            match module {
                Decoder::AuxUp(conv) => aux = Some(conv.forward(aux.as_ref().expect("aux before aux_up"))?),
                Decoder::AuxNorm(norm) => tmp = Some(norm.forward(&x)?),
                Decoder::AuxConv(conv) => {
                    let t = conv.forward(&tmp.take().expect("aux_norm before aux_conv").f_silu().ctx("silu")?)?;
                    aux = Some(match aux.take() {
                        None => t,
                        Some(a) => t + a,
                    });
                }
                Decoder::Block(block) => {
                    if x.size()[1] != block.in_channels {
                        let skip = skips.pop().expect("a skip for every decoder block");
                        x = Tensor::f_cat(&[&x, &skip], 1).ctx("skip connection")?;
                    }
                    x = run_block(block, &x, &emb, train, self.checkpoint_blocks)?;
                }
            }
        }
        Ok(aux.expect("the decoder ends with an output convolution"))
    }
}

/// Zeroes each sample's labels with probability `p` while training
/// (classifier-free guidance training).
pub fn label_dropout(labels: &Tensor, p: f64, n: i64, train: bool) -> Result<Tensor> {
    if !train || p == 0.0 {
        return Ok(labels.shallow_clone());
    }
    let keep = difi_core::shard::batch_draw(n, 0, |n| {
        Tensor::f_rand([n, 1], (Kind::Float, labels.device())).ctx("label dropout")
    })?
    .f_ge(p)
    .ctx("label dropout")?;
    Ok(labels * keep.f_to_kind(labels.kind()).ctx("label dropout")?)
}
