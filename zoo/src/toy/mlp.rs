//! A multilayer perceptron with SiLU activations, the backbone of the vector
//! models of the zoo.

use tch::Tensor;
use tch::nn::{self, Module};

/// Linear layers `net.0`, `net.1`, … with SiLU between them.
#[derive(Debug)]
pub struct Mlp {
    layers: Vec<nn::Linear>,
}

impl Mlp {
    /// An MLP `input → hidden… → output` under `path`. With `zero_output`
    /// the last layer starts at zero, so the network first outputs 0.
    pub fn new(path: &nn::Path, input: i64, hidden: &[i64], output: i64, zero_output: bool) -> Self {
        let net = path / "net";
        let mut widths = vec![input];
        widths.extend_from_slice(hidden);
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
        Mlp { layers }
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
