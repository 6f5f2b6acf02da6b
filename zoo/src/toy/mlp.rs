//! A multilayer perceptron with SiLU activations, the backbone of the vector
//! models of the zoo.

use difi_core::error::{Error, Result};
use tch::Tensor;
use tch::nn::{self, Module};

/// Most parameters an MLP of the zoo may have (1 GiB of float32): a typo in
/// `hidden` is refused instead of allocating until libtorch aborts.
pub const MAX_MLP_PARAMETERS: u64 = 1 << 28;

/// Linear layers `net.0`, `net.1`, … with SiLU between them.
#[derive(Debug)]
pub struct Mlp {
    layers: Vec<nn::Linear>,
}

impl Mlp {
    /// An MLP `input → hidden… → output` under `path`. With `zero_output`
    /// the last layer starts at zero, so the network first outputs 0. Every
    /// width must be at least 1 and the whole at most [`MAX_MLP_PARAMETERS`]
    /// (errors at `hidden`).
    pub fn new(path: &nn::Path, input: i64, hidden: &[i64], output: i64, zero_output: bool) -> Result<Self> {
        let net = path / "net";
        let mut widths = vec![input];
        widths.extend_from_slice(hidden);
        widths.push(output);
        if widths.iter().any(|&w| w < 1) {
            return Err(Error::config("hidden", format!("every width must be at least 1, got {widths:?}")));
        }
        let parameters = widths
            .windows(2)
            .try_fold(0u64, |sum, pair| (pair[0] as u64).checked_add(1)?.checked_mul(pair[1] as u64)?.checked_add(sum));
        if parameters.is_none_or(|count| count > MAX_MLP_PARAMETERS) {
            return Err(Error::config(
                "hidden",
                format!("widths {widths:?} make more than {MAX_MLP_PARAMETERS} parameters (the zoo's MLPs are small)"),
            ));
        }
        widths.pop();
        let mut layers = Vec::with_capacity(widths.len());
        for (i, pair) in widths.windows(2).enumerate() {
            layers.push(nn::linear(&net / i, pair[0], pair[1], Default::default()));
        }
        let last_config = if zero_output {
            nn::LinearConfig { ws_init: nn::Init::Const(0.0), bs_init: Some(nn::Init::Const(0.0)), bias: true }
        } else {
            Default::default()
        };
        layers.push(nn::linear(&net / hidden.len(), *widths.last().unwrap_or(&input), output, last_config));
        Ok(Mlp { layers })
    }

    /// `x` `[N, input]` → `[N, output]`.
    pub fn forward(&self, x: &Tensor) -> Tensor {
        let mut h = x.shallow_clone();
        let last = self.layers.len() - 1;
        for (i, layer) in self.layers.iter().enumerate() {
            h = layer.forward(&h);
            if i < last {
                h = h.silu();
            }
        }
        h
    }
}
