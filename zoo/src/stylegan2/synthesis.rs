//! `SynthesisNetwork`: W vectors → image, block by block from a learned
//! 4×4 constant to `img_resolution`, in the `orig`, `skip` or `resnet`
//! architecture.

use difi_core::error::{Error, Result, TorchContext};
use tch::nn::Path;
use tch::{Kind, Tensor};

use super::config::{Architecture, GeneratorConfig, NoiseMode};
use super::layers::{LayerOptions, ResnetSkip, SynthesisLayer, ToRgb, resample_filter};
use crate::nn::parameter;
use crate::nn::resample::upsample2d;

/// `SynthesisBlock` at one resolution (`synthesis.b{res}`).
pub struct SynthesisBlock {
    /// The 4×4 block's learned input `[C, 4, 4]`.
    constant: Option<Tensor>,
    conv0: Option<SynthesisLayer>,
    conv1: SynthesisLayer,
    torgb: Option<ToRgb>,
    skip: Option<ResnetSkip>,
    /// Upsamples the image of the previous blocks.
    resample_filter: Tensor,
    /// Index of this block's first W vector.
    first_w: i64,
}

impl SynthesisBlock {
    fn new(path: &Path, config: &GeneratorConfig, resolution: i64, in_channels: i64, first_w: i64) -> Result<Self> {
        let s = &config.synthesis;
        let out_channels = config.channels(resolution);
        let resample_filter = resample_filter(path, &s.resample_filter)?;
        let layer = |up: bool| LayerOptions {
            w_dim: config.w_dim,
            resolution,
            kernel_size: s.kernel_size,
            up,
            use_noise: s.use_noise,
            activation: s.activation,
            resample_filter: s.resample_filter.clone(),
            conv_clamp: s.conv_clamp,
        };
        let (constant, conv0, skip) = if in_channels == 0 {
            let options = (Kind::Float, path.device());
            let constant = Tensor::f_randn([out_channels, resolution, resolution], options).ctx("const")?;
            (Some(parameter(path, "const", constant)?), None, None)
        } else {
            let conv0 = SynthesisLayer::new(&(path / "conv0"), in_channels, out_channels, &layer(true))?;
            let skip = if s.architecture == Architecture::Resnet {
                Some(ResnetSkip::new(&(path / "skip"), in_channels, out_channels, &s.resample_filter)?)
            } else {
                None
            };
            (None, Some(conv0), skip)
        };
        let conv1 = SynthesisLayer::new(&(path / "conv1"), out_channels, out_channels, &layer(false))?;
        let torgb = if config.has_torgb(resolution) {
            Some(ToRgb::new(&(path / "torgb"), out_channels, config.img_channels, config.w_dim, s.conv_clamp)?)
        } else {
            None
        };
        Ok(SynthesisBlock { constant, conv0, conv1, torgb, skip, resample_filter, first_w })
    }

    /// W vectors a block consumes before the next block's first: one per convolution.
    fn convolutions(&self) -> i64 {
        if self.conv0.is_some() { 2 } else { 1 }
    }

    /// `(x, img)` of the previous block (`None` before the first) → this
    /// block's features `[N, C, R, R]` and image `[N, img_channels, R, R]`
    /// (`None` until a block has a ToRGB layer). `ws` `[N, num_ws, w_dim]`.
    fn forward(
        &self,
        x: Option<&Tensor>,
        img: Option<&Tensor>,
        ws: &Tensor,
        noise_mode: NoiseMode,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let w = |offset: i64| ws.f_select(1, self.first_w + offset).ctx("ws");
        let x = match (&self.constant, &self.conv0, x) {
            (Some(constant), _, _) => {
                let n = ws.size()[0];
                let input = constant.f_unsqueeze(0).ctx("const")?.f_repeat([n, 1, 1, 1]).ctx("const")?;
                self.conv1.forward(&input, &w(0)?, noise_mode, 1.0)?
            }
            (None, Some(conv0), Some(x)) => match &self.skip {
                Some(skip) => {
                    let shortcut = skip.forward(x)?;
                    let y = conv0.forward(x, &w(0)?, noise_mode, 1.0)?;
                    let y = self.conv1.forward(&y, &w(1)?, noise_mode, std::f64::consts::FRAC_1_SQRT_2)?;
                    shortcut + y
                }
                None => {
                    let y = conv0.forward(x, &w(0)?, noise_mode, 1.0)?;
                    self.conv1.forward(&y, &w(1)?, noise_mode, 1.0)?
                }
            },
            _ => return Err(Error::config("synthesis", "a block after the first needs the previous block's features")),
        };
        let img = match img {
            Some(img) => Some(upsample2d(img, &self.resample_filter)?),
            None => None,
        };
        let img = match &self.torgb {
            Some(torgb) => {
                let y = torgb.forward(&x, &w(self.convolutions())?)?;
                Some(match img {
                    Some(img) => img + y,
                    None => y,
                })
            }
            None => img,
        };
        Ok((x, img))
    }
}

/// The synthesis network, under `synthesis.` of the generator.
pub struct SynthesisNetwork {
    blocks: Vec<SynthesisBlock>,
    num_ws: i64,
    w_dim: i64,
}

impl SynthesisNetwork {
    pub fn new(path: &Path, config: &GeneratorConfig) -> Result<Self> {
        let mut blocks = Vec::new();
        let (mut in_channels, mut first_w) = (0, 0);
        for resolution in config.block_resolutions() {
            let block =
                SynthesisBlock::new(&(path / format!("b{resolution}")), config, resolution, in_channels, first_w)?;
            first_w += block.convolutions();
            in_channels = config.channels(resolution);
            blocks.push(block);
        }
        Ok(SynthesisNetwork { blocks, num_ws: config.num_ws(), w_dim: config.w_dim })
    }

    /// `ws` `[N, num_ws, w_dim]` → image `[N, img_channels, R, R]`, float32.
    pub fn forward(&self, ws: &Tensor, noise_mode: NoiseMode) -> Result<Tensor> {
        let size = ws.size();
        if size.len() != 3 || size[1] != self.num_ws || size[2] != self.w_dim {
            return Err(Error::Shape {
                what: "synthesis ws".into(),
                expected: vec![-1, self.num_ws, self.w_dim],
                actual: size,
            });
        }
        let ws = ws.f_to_kind(Kind::Float).ctx("ws")?;
        let (mut x, mut img): (Option<Tensor>, Option<Tensor>) = (None, None);
        for block in &self.blocks {
            let (features, image) = block.forward(x.as_ref(), img.as_ref(), &ws, noise_mode)?;
            x = Some(features);
            img = image;
        }
        img.ok_or_else(|| Error::config("synthesis", "the last block has no ToRGB layer"))
    }
}
