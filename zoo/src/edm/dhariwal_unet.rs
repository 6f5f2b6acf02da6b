//! `DhariwalUNet`: the ADM backbone (Dhariwal & Nichol 2021) as EDM
//! reimplements it.

use std::rc::Rc;

use difi_core::error::{Result, TorchContext};
use tch::Tensor;
use tch::nn::Path;

use super::config::EdmNetworkConfig;
use super::layers::{
    BlockOptions, Conv2d, ConvOptions, GroupNorm, Init, InitMode, Linear, PositionalEmbedding, UNetBlock, run_block,
};
use super::song_unet::label_dropout;

enum Encoder {
    Conv(Conv2d),
    Block(Rc<UNetBlock>),
}

/// The ADM U-Net.
pub struct DhariwalUNet {
    map_noise: PositionalEmbedding,
    map_augment: Option<Linear>,
    map_layer0: Linear,
    map_layer1: Linear,
    map_label: Option<Linear>,
    enc: Vec<Encoder>,
    dec: Vec<Rc<UNetBlock>>,
    out_norm: GroupNorm,
    out_conv: Conv2d,
    label_dropout: f64,
    /// Recompute each U-Net block's activations in backward.
    checkpoint_blocks: bool,
}

impl DhariwalUNet {
    /// Builds the backbone under `path` (EDM names it `model`).
    pub fn new(path: &Path, c: &EdmNetworkConfig) -> Result<Self> {
        let emb_channels = c.model_channels * c.channel_mult_emb;
        let third = (1.0f64 / 3.0).sqrt();
        let init = Init { mode: InitMode::KaimingUniform, weight: third, bias: third };
        let init_zero = Init { mode: InitMode::KaimingUniform, weight: 0.0, bias: 0.0 };
        let block = BlockOptions {
            emb_channels,
            num_heads: None,
            channels_per_head: 64,
            dropout: c.dropout,
            skip_scale: 1.0,
            eps: 1e-5,
            resample_filter: vec![1.0, 1.0],
            resample_proj: false,
            adaptive_scale: true,
            init,
            init_zero,
            init_attn: None,
        };
        let map_noise = PositionalEmbedding::new(c.model_channels, false);
        let map_augment = if c.augment_dim > 0 {
            Some(Linear::new(&(path / "map_augment"), c.augment_dim, c.model_channels, false, init_zero)?)
        } else {
            None
        };
        let map_layer0 = Linear::new(&(path / "map_layer0"), c.model_channels, emb_channels, true, init)?;
        let map_layer1 = Linear::new(&(path / "map_layer1"), emb_channels, emb_channels, true, init)?;
        let map_label = if c.label_dim > 0 {
            let label_init = Init { mode: InitMode::KaimingNormal, weight: (c.label_dim as f64).sqrt(), bias: 0.0 };
            Some(Linear::new(&(path / "map_label"), c.label_dim, emb_channels, false, label_init)?)
        } else {
            None
        };

        let enc_path = path / "enc";
        let mut enc = Vec::new();
        let mut skips = Vec::new();
        let mut cout = c.img_channels;
        for (level, mult) in c.channel_mult.iter().enumerate() {
            let res = c.img_resolution >> level;
            let name = |suffix: &str| format!("{res}x{res}_{suffix}");
            if level == 0 {
                let cin = cout;
                cout = c.model_channels * mult;
                enc.push(Encoder::Conv(Conv2d::new(
                    &(&enc_path / name("conv")),
                    cin,
                    cout,
                    3,
                    &ConvOptions::new(init),
                )?));
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
            }
            skips.push(cout);
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
                dec.push(Rc::new(UNetBlock::new(&(&dec_path / name("in0")), cout, cout, false, false, true, &block)?));
                dec.push(Rc::new(UNetBlock::new(&(&dec_path / name("in1")), cout, cout, false, false, false, &block)?));
            } else {
                dec.push(Rc::new(UNetBlock::new(&(&dec_path / name("up")), cout, cout, true, false, false, &block)?));
            }
            for idx in 0..=c.num_blocks {
                let cin = cout + skips.pop().expect("one skip per encoder module");
                cout = c.model_channels * mult;
                let attention = c.attn_resolutions.contains(&res);
                dec.push(Rc::new(UNetBlock::new(
                    &(&dec_path / name(&format!("block{idx}"))),
                    cin,
                    cout,
                    false,
                    false,
                    attention,
                    &block,
                )?));
            }
        }
        let out_norm = GroupNorm::new(&(path / "out_norm"), cout, 1e-5)?;
        let out_conv = Conv2d::new(&(path / "out_conv"), cout, c.img_channels, 3, &ConvOptions::new(init_zero))?;
        Ok(DhariwalUNet {
            map_noise,
            map_augment,
            map_layer0,
            map_layer1,
            map_label,
            enc,
            dec,
            out_norm,
            out_conv,
            label_dropout: c.label_dropout,
            checkpoint_blocks: false,
        })
    }

    /// Whether each U-Net block's activations are recomputed in backward
    /// instead of kept (less memory, one more forward pass of each block).
    pub fn set_checkpoint_blocks(&mut self, on: bool) {
        self.checkpoint_blocks = on;
    }

    /// `F(x; noise_labels)`, shapes as [`SongUNet::forward`](super::song_unet::SongUNet::forward).
    pub fn forward(
        &self,
        x: &Tensor,
        noise_labels: &Tensor,
        class_labels: Option<&Tensor>,
        augment_labels: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        let n = x.size()[0];
        let mut emb = self.map_noise.forward(noise_labels)?;
        if let (Some(map_augment), Some(augment)) = (&self.map_augment, augment_labels) {
            emb = emb + map_augment.forward(augment)?;
        }
        let emb = self.map_layer0.forward(&emb)?.f_silu().ctx("silu")?;
        let mut emb = self.map_layer1.forward(&emb)?;
        if let (Some(map_label), Some(labels)) = (&self.map_label, class_labels) {
            emb = emb + map_label.forward(&label_dropout(labels, self.label_dropout, n, train)?)?;
        }
        let emb = emb.f_silu().ctx("silu")?;

        let mut skips = Vec::new();
        let mut x = x.shallow_clone();
        for module in &self.enc {
            x = match module {
                Encoder::Conv(conv) => conv.forward(&x)?,
                Encoder::Block(block) => run_block(block, &x, &emb, train, self.checkpoint_blocks)?,
            };
            skips.push(x.shallow_clone());
        }
        for block in &self.dec {
            if x.size()[1] != block.in_channels {
                let skip = skips.pop().expect("a skip for every decoder block");
                x = Tensor::f_cat(&[&x, &skip], 1).ctx("skip connection")?;
            }
            x = run_block(block, &x, &emb, train, self.checkpoint_blocks)?;
        }
        self.out_conv.forward(&self.out_norm.forward(&x)?.f_silu().ctx("silu")?)
    }
}
