//! `MappingNetwork`: z (and the class label) → W, broadcast to every
//! synthesis layer, with truncation towards the tracked mean `w_avg`.

use difi_core::error::{Error, Result, TorchContext};
use tch::nn::Path;
use tch::{Kind, Tensor};

use super::config::{Activation, GeneratorConfig, MappingConfig};
use super::layers::FullyConnected;
use crate::nn::buffer;

/// Added to the mean square before the inverse square root, as the reference.
const NORMALIZE_EPS: f64 = 1e-8;

/// `x / √(mean(x², dim 1) + ε)`: the reference's `normalize_2nd_moment`. `[N, F]`.
pub fn normalize_2nd_moment(x: &Tensor) -> Result<Tensor> {
    let mean_square = x.f_square().ctx("normalize")?.f_mean_dim(1i64, true, Kind::Float).ctx("normalize")?;
    Ok(x * (mean_square + NORMALIZE_EPS).f_rsqrt().ctx("normalize")?)
}

/// How far W is pulled towards its mean: `w_avg + psi (w − w_avg)` on the
/// first `cutoff` of the broadcast W vectors (all when `None`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Truncation {
    pub psi: f64,
    pub cutoff: Option<i64>,
}

impl Default for Truncation {
    /// No truncation (`psi = 1`).
    fn default() -> Self {
        Truncation { psi: 1.0, cutoff: None }
    }
}

/// Input and output sizes of a mapping network.
#[derive(Clone, Copy, Debug)]
pub struct MappingDims {
    /// Latent size (0: labels only).
    pub z_dim: i64,
    /// Classes (0: unconditional).
    pub c_dim: i64,
    /// Output size.
    pub w_dim: i64,
    /// W vectors [`MappingNetwork::forward`] broadcasts to.
    pub num_ws: i64,
}

/// The mapping network, under `mapping.` of the generator (and of a
/// conditional discriminator).
pub struct MappingNetwork {
    embed: Option<FullyConnected>,
    layers: Vec<FullyConnected>,
    w_avg: Option<Tensor>,
    w_avg_beta: Option<f64>,
    z_dim: i64,
    c_dim: i64,
    num_ws: i64,
}

impl MappingNetwork {
    pub fn new(path: &Path, config: &GeneratorConfig) -> Result<Self> {
        let dims =
            MappingDims { z_dim: config.z_dim, c_dim: config.c_dim, w_dim: config.w_dim, num_ws: config.num_ws() };
        Self::with_dims(path, dims, &config.mapping)
    }

    /// A mapping network of any dimensions: the generator's, or the
    /// discriminator's label embedding (`z_dim = 0`, `w_avg_beta = None`).
    pub fn with_dims(path: &Path, dims: MappingDims, m: &MappingConfig) -> Result<Self> {
        let MappingDims { z_dim, c_dim, w_dim, num_ws } = dims;
        let embed = if c_dim > 0 {
            Some(FullyConnected::new(&(path / "embed"), c_dim, m.embed_features, Activation::Linear, 1.0, 0.0)?)
        } else {
            None
        };
        let mut features = z_dim + if c_dim > 0 { m.embed_features } else { 0 };
        let mut layers = Vec::new();
        for index in 0..m.num_layers {
            let out = if index + 1 == m.num_layers { w_dim } else { m.layer_features };
            let layer_path = path / format!("fc{index}");
            layers.push(FullyConnected::new(&layer_path, features, out, m.activation, m.lr_multiplier, 0.0)?);
            features = out;
        }
        let w_avg = match m.w_avg_beta {
            Some(_) => {
                Some(buffer(path, "w_avg", Tensor::f_zeros([w_dim], (Kind::Float, path.device())).ctx("w_avg")?)?)
            }
            None => None,
        };
        Ok(MappingNetwork { embed, layers, w_avg, w_avg_beta: m.w_avg_beta, z_dim, c_dim, num_ws })
    }

    /// W before broadcasting: `z` `[N, z_dim]`, `c` `[N, c_dim]` (conditional
    /// networks) → `[N, w_dim]`.
    pub fn map(&self, z: &Tensor, c: Option<&Tensor>) -> Result<Tensor> {
        self.map_inputs(Some(z), c)
    }

    /// W of labels alone `c` `[N, c_dim]` → `[N, w_dim]`: the
    /// discriminator's label embedding (`z_dim = 0`).
    pub fn map_labels(&self, c: &Tensor) -> Result<Tensor> {
        self.map_inputs(None, Some(c))
    }

    fn map_inputs(&self, z: Option<&Tensor>, c: Option<&Tensor>) -> Result<Tensor> {
        let mut x = None;
        if self.z_dim > 0 {
            let z = z.ok_or_else(|| Error::config("latents", "this mapping network needs latents z"))?;
            check_shape(z, self.z_dim, "latents z")?;
            x = Some(normalize_2nd_moment(&z.f_to_kind(Kind::Float).ctx("z")?)?);
        }
        if let Some(embed) = &self.embed {
            let c = c.ok_or_else(|| Error::config("labels", "this network is conditional and needs labels"))?;
            check_shape(c, self.c_dim, "labels c")?;
            let y = normalize_2nd_moment(&embed.forward(&c.f_to_kind(Kind::Float).ctx("c")?)?)?;
            x = Some(match x {
                Some(x) => Tensor::f_cat(&[x, y], 1).ctx("mapping input")?,
                None => y,
            });
        }
        let mut x = x.ok_or_else(|| Error::config("mapping", "a mapping network needs latents or labels"))?;
        for layer in &self.layers {
            x = layer.forward(&x)?;
        }
        Ok(x)
    }

    /// The W vectors of every synthesis layer `[N, num_ws, w_dim]`, truncated.
    pub fn forward(&self, z: &Tensor, c: Option<&Tensor>, truncation: Truncation) -> Result<Tensor> {
        let w = self.map(z, c)?;
        let ws = w.f_unsqueeze(1).ctx("broadcast")?.f_repeat([1, self.num_ws, 1]).ctx("broadcast")?;
        self.truncate(&ws, truncation)
    }

    fn truncate(&self, ws: &Tensor, truncation: Truncation) -> Result<Tensor> {
        if truncation.psi == 1.0 {
            return Ok(ws.shallow_clone());
        }
        let w_avg = self.w_avg.as_ref().ok_or_else(|| {
            Error::config(
                "truncation_psi",
                "this generator tracks no average W (w_avg_beta is None) to truncate towards",
            )
        })?;
        let cutoff = truncation.cutoff.unwrap_or(self.num_ws).clamp(0, self.num_ws);
        let pulled = |part: &Tensor| -> Tensor { w_avg + (part - w_avg) * truncation.psi };
        if cutoff == self.num_ws {
            return Ok(pulled(ws));
        }
        let head = pulled(&ws.f_narrow(1, 0, cutoff).ctx("truncation")?);
        let tail = ws.f_narrow(1, cutoff, self.num_ws - cutoff).ctx("truncation")?;
        Tensor::f_cat(&[head, tail], 1).ctx("truncation")
    }

    /// Moves `w_avg` towards the batch mean of `w` `[N, w_dim]` as the
    /// reference does in training: `w_avg ← mean(w) + β (w_avg − mean(w))`.
    pub fn track_w_avg(&self, w: &Tensor) -> Result<()> {
        let (Some(w_avg), Some(beta)) = (&self.w_avg, self.w_avg_beta) else {
            return Ok(());
        };
        let _guard = tch::no_grad_guard();
        let mean = w.f_detach().ctx("w_avg")?.f_mean_dim(0i64, false, Kind::Float).ctx("w_avg")?;
        let updated = &mean + (w_avg - &mean) * beta;
        w_avg.shallow_clone().f_copy_(&updated).ctx("w_avg").map(|_| ())
    }
}

fn check_shape(x: &Tensor, dim: i64, what: &str) -> Result<()> {
    let size = x.size();
    if size.len() != 2 || size[1] != dim {
        return Err(Error::Shape { what: what.into(), expected: vec![-1, dim], actual: size });
    }
    Ok(())
}
