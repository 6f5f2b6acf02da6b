//! Adam over a VarStore's trainable variables, with its state exposed so a
//! snapshot can resume the exact trajectory (tch's optimiser keeps its moments
//! inside libtorch, out of reach).

use std::collections::HashMap;

use tch::Tensor;
use tch::nn::VarStore;

use crate::config;
use crate::error::{Error, Result, TorchContext};

/// Adam (Kingma & Ba) with bias correction, as `torch.optim.Adam`.
pub struct Adam {
    config: config::Adam,
    /// Trainable variables, sorted by name so updates run in a fixed order.
    params: Vec<(String, Tensor)>,
    exp_avg: Vec<Tensor>,
    exp_avg_sq: Vec<Tensor>,
    steps: u64,
}

impl Adam {
    /// An optimiser over the trainable variables of `vs`.
    pub fn new(vs: &VarStore, config: config::Adam) -> Result<Self> {
        let mut params: Vec<(String, Tensor)> = vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let zeros = |t: &Tensor| t.f_zeros_like().ctx("adam state");
        let exp_avg = params.iter().map(|(_, t)| zeros(t)).collect::<Result<_>>()?;
        let exp_avg_sq = params.iter().map(|(_, t)| zeros(t)).collect::<Result<_>>()?;
        Ok(Adam { config, params, exp_avg, exp_avg_sq, steps: 0 })
    }

    /// Number of updates applied so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The configured settings.
    pub fn config(&self) -> &config::Adam {
        &self.config
    }

    /// Backpropagates `loss × loss_scale` into the variables and applies one
    /// update at learning rate `lr`. Non-finite gradient entries count as zero.
    pub fn backward_step(&mut self, loss: &Tensor, lr: f64) -> Result<()> {
        for (_, p) in self.params.iter_mut() {
            p.zero_grad();
        }
        let scaled = loss.f_mul_scalar(self.config.loss_scale).ctx("scale loss")?;
        scaled.f_backward().ctx("backward")?;
        self.apply(lr)
    }

    fn apply(&mut self, lr: f64) -> Result<()> {
        let (beta1, beta2) = self.config.betas;
        self.steps += 1;
        let t = self.steps as i32;
        let bias1 = 1.0 - beta1.powi(t);
        let bias2_sqrt = (1.0 - beta2.powi(t)).sqrt();
        let _guard = tch::no_grad_guard();
        for (i, (_, param)) in self.params.iter_mut().enumerate() {
            let mut grad = param.f_grad().ctx("read gradient")?;
            if !grad.defined() {
                continue;
            }
            let _ = grad.f_nan_to_num_(0.0, 0.0, 0.0).ctx("zero non-finite gradients")?;
            let _ = self.exp_avg[i].f_lerp_(&grad, 1.0 - beta1).ctx("adam m")?;
            let grad_sq = grad.f_square().ctx("adam v")?;
            let _ = self.exp_avg_sq[i].f_lerp_(&grad_sq, 1.0 - beta2).ctx("adam v")?;
            let denom =
                (self.exp_avg_sq[i].f_sqrt().ctx("adam")? / bias2_sqrt + self.config.eps).f_reciprocal().ctx("adam")?;
            let update = (&self.exp_avg[i] * denom).f_mul_scalar(lr / bias1).ctx("adam")?;
            let _ = param.f_sub_(&update).ctx("adam update")?;
        }
        Ok(())
    }

    /// The moments as named tensors (`exp_avg.NAME`, `exp_avg_sq.NAME`).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.params.len());
        for (i, (name, _)) in self.params.iter().enumerate() {
            out.push((format!("exp_avg.{name}"), self.exp_avg[i].shallow_clone()));
            out.push((format!("exp_avg_sq.{name}"), self.exp_avg_sq[i].shallow_clone()));
        }
        out
    }

    /// Restores the moments written by [`Adam::state_tensors`] and the step count.
    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        steps: u64,
        source: &std::path::Path,
    ) -> Result<()> {
        let _guard = tch::no_grad_guard();
        for (i, (name, _)) in self.params.iter().enumerate() {
            for (prefix, dst) in [("exp_avg", &mut self.exp_avg[i]), ("exp_avg_sq", &mut self.exp_avg_sq[i])] {
                let key = format!("{prefix}.{name}");
                let src = tensors
                    .get(&key)
                    .ok_or_else(|| Error::checkpoint(source, format!("optimiser state lacks `{key}`")))?;
                if src.size() != dst.size() {
                    return Err(Error::checkpoint(
                        source,
                        format!("`{key}` has shape {:?}, the network needs {:?}", src.size(), dst.size()),
                    ));
                }
                dst.f_copy_(src).ctx("restore adam state")?;
            }
        }
        self.steps = steps;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn matches_the_adam_update_rule() {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var_copy("w", &Tensor::from_slice(&[1.0f32, -2.0]));
        let config = config::Adam { lr: 0.1, betas: (0.9, 0.999), eps: 1e-8, warmup_kimg: 0.0, loss_scale: 1.0 };
        let mut adam = Adam::new(&vs, config).unwrap();
        // loss = sum(w²): gradient 2w. After one step Adam moves each weight by lr·sign(g).
        let loss = (&w * &w).sum(Kind::Float);
        adam.backward_step(&loss, 0.1).unwrap();
        let got: Vec<f32> = Vec::try_from(&w).unwrap();
        assert!((got[0] - 0.9).abs() < 1e-5 && (got[1] + 1.9).abs() < 1e-5, "{got:?}");
    }

    #[test]
    fn non_finite_gradients_are_zeroed() {
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var_copy("w", &Tensor::from_slice(&[1.0f32, 1.0]));
        let mut adam = Adam::new(&vs, config::Adam { lr: 0.1, ..Default::default() }).unwrap();
        let scale = Tensor::from_slice(&[f32::NAN, 1.0]);
        let loss = (&w * scale).sum(Kind::Float);
        adam.backward_step(&loss, 0.1).unwrap();
        let got: Vec<f32> = Vec::try_from(&w).unwrap();
        assert_eq!(got[0], 1.0);
        assert!(got[1] < 1.0);
    }
}
