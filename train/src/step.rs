//! What an algorithm gives the runner: its networks as named [`Part`]s and a
//! [`Step`] that runs one iteration. The runner knows nothing of the
//! algorithm; the algorithm knows nothing of ticks, snapshots or resuming
//! (as EDM's `training_loop(loss_fn=…)` and burn's `TrainStep`).

use std::collections::BTreeMap;

use difi_core::error::{Error, Result, TorchContext};
use difi_core::traits::Generator;
use tch::nn::VarStore;
use tch::{Device, Tensor};

use difi_torch_ext::autocast::AutocastGuard;

use crate::distributed::Distributed;
use crate::optim::{Adam, NonFinite};

/// What the runner does with a part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PartRole {
    /// Not trained and not saved (the teacher: it comes from the config).
    Frozen,
    /// Trained by an optimiser configured as `optim.<name>`; saved in every
    /// snapshot with its optimiser state.
    Trained,
    /// An exponential moving average of the trained part named here,
    /// updated by the runner after every iteration; saved in every snapshot.
    EmaOf(&'static str),
}

/// One network of an algorithm, lent to the runner at setup.
pub struct Part<'a> {
    /// Its name: the `optim.<name>` key and the snapshot file `<name>.safetensors`.
    pub name: &'static str,
    /// Its variables.
    pub vars: &'a mut VarStore,
    /// What the runner does with it.
    pub role: PartRole,
}

/// Named losses of one iteration, in the step's order (`fake_score`,
/// `generator`): detached scalars on the step's device, which the runner
/// reads at ticks rather than after every update (a read waits for the
/// device). `stats.jsonl` reports each as `loss_<name>`. Name a loss after
/// the part it trains, so messages can point at `optim.<name>`.
#[derive(Debug, Default)]
pub struct Losses(pub Vec<(&'static str, Tensor)>);

impl Losses {
    /// The values on the host: one read for all of them.
    pub fn values(&self) -> Result<LossValues> {
        let values = read_scalars(self.0.iter().map(|(_, t)| t))?;
        Ok(LossValues(self.0.iter().map(|(name, _)| *name).zip(values).collect()))
    }
}

/// Reads scalar tensors (any device, any floating dtype) into float64 on
/// the host: those on an accelerator in one transfer (one wait for the
/// device however many there are), those on the CPU one by one (no copies).
pub fn read_scalars<'t>(scalars: impl IntoIterator<Item = &'t Tensor>) -> Result<Vec<f64>> {
    let scalars: Vec<&Tensor> = scalars.into_iter().collect();
    if scalars.iter().all(|t| t.device() == Device::Cpu) {
        return scalars.iter().map(|t| t.f_double_value(&[]).ctx("read loss")).collect();
    }
    let flat = scalars
        .iter()
        .map(|t| t.f_reshape([1]).and_then(|t| t.f_to_kind(tch::Kind::Double)).and_then(|t| t.f_to_device(Device::Cpu)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .ctx("read losses")?;
    let all = Tensor::f_cat(&flat, 0).ctx("read losses")?;
    Vec::<f64>::try_from(&all)
        .map_err(|e| Error::Plugin { plugin: "training step".into(), message: format!("read losses: {e}") })
}

/// Named loss values of one iteration, read from the device ([`Losses::values`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LossValues(pub Vec<(&'static str, f64)>);

impl LossValues {
    /// The first non-finite loss, if any.
    pub fn first_non_finite(&self) -> Option<&'static str> {
        self.0.iter().find(|(_, value)| !value.is_finite()).map(|(name, _)| *name)
    }

    /// The value of loss `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.0.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
    }
}

/// An algorithm's iteration. Random draws come from libtorch's global
/// generator, which the runner reseeds before every call.
pub trait Step {
    /// The algorithm's networks, each named once. Called once, before training.
    fn parts(&mut self) -> Vec<Part<'_>>;

    /// Updates to run once before the first iteration (Diff-Instruct's
    /// fake-score warm-up); 0 for none.
    fn warmup_iterations(&self) -> u64 {
        0
    }

    /// One warm-up update.
    fn warmup(&mut self, _ctx: &mut StepContext<'_>) -> Result<Losses> {
        Ok(Losses::default())
    }

    /// One iteration over `ctx.batch_size` samples: forward, losses, and
    /// optimiser updates through [`StepContext::update`].
    fn iteration(&mut self, ctx: &mut StepContext<'_>) -> Result<Losses>;

    /// The generator that metrics and sampling evaluate (an EMA, usually),
    /// if the algorithm has one.
    fn evaluated_generator(&self) -> Option<&dyn Generator> {
        None
    }

    /// Whether [`iteration`](Self::iteration) can be captured in a CUDA
    /// graph as configured (`cuda_graph: true`), or why not. Capturable
    /// means: every call queues the same device work on tensors of the same
    /// shapes and addresses, reads nothing back, copies nothing from the
    /// host, and draws only from libtorch's CUDA generator without
    /// reseeding it; the host-side effects of a call are only the
    /// optimisers' update counts. A capture that breaks this by a host read
    /// fails (an error that names `cuda_graph`), but a host-chosen value
    /// would be replayed silently, hence the step's own word. The default:
    /// not checked, so the run is eager.
    fn capturable(&mut self) -> std::result::Result<(), String> {
        Err("this algorithm's iteration has not been checked for CUDA graph capture".into())
    }
}

/// What a step may use during an iteration.
pub struct StepContext<'a> {
    /// Where the networks live.
    pub device: Device,
    /// Samples this process computes per iteration: the whole batch, or this
    /// rank's share of it when data-parallel.
    pub batch_size: i64,
    /// Iterations done before this one.
    pub iteration: u64,
    optimizers: &'a mut BTreeMap<String, Adam>,
    /// Samples per iteration over all ranks (learning-rate ramps count these).
    global_batch_size: i64,
    /// The group whose gradients each update averages, when data-parallel.
    group: Option<&'a Distributed>,
    /// Peak CUDA memory (MiB) of each part's update, when measured.
    part_peaks: Option<&'a mut BTreeMap<String, f64>>,
}

impl<'a> StepContext<'a> {
    /// A context lending `optimizers` (by part name) for one call.
    pub fn new(device: Device, batch_size: i64, iteration: u64, optimizers: &'a mut BTreeMap<String, Adam>) -> Self {
        StepContext {
            device,
            batch_size,
            iteration,
            optimizers,
            global_batch_size: batch_size,
            group: None,
            part_peaks: None,
        }
    }

    /// The same context recording in `peaks`, for each part, the most CUDA
    /// memory tensors held between the end of the previous update (or the
    /// start of the call) and the end of the part's own: its forward,
    /// backward and optimiser step. No-op off CUDA.
    pub fn measuring_part_peaks(mut self, peaks: &'a mut BTreeMap<String, f64>) -> Self {
        if let Device::Cuda(index) = self.device {
            let _ = difi_torch_ext::device_memory::reset_cuda_peak(index);
            self.part_peaks = Some(peaks);
        }
        self
    }

    /// Folds the peak since the last reset into `part`'s, then resets it.
    fn record_peak(&mut self, part: &str) {
        let (Some(peaks), Device::Cuda(index)) = (self.part_peaks.as_deref_mut(), self.device) else {
            return;
        };
        // Statistics are a report: a failed read leaves the figure out rather than the run.
        if let Ok(memory) = difi_torch_ext::device_memory::cuda_memory(index) {
            let mib = memory.peak_allocated as f64 / (1024.0 * 1024.0);
            let entry = peaks.entry(part.to_string()).or_insert(0.0);
            *entry = entry.max(mib);
            let _ = difi_torch_ext::device_memory::reset_cuda_peak(index);
        }
    }

    /// The same context for one rank of `group`: the step computes
    /// `batch_size / world_size` samples and every update averages gradients
    /// and loss values over the ranks before applying them.
    pub fn data_parallel(mut self, group: &'a Distributed) -> Self {
        self.group = Some(group);
        self.batch_size = self.global_batch_size / group.launch().world_size as i64;
        self
    }

    /// Backpropagates the scalar `loss` into part `part`'s trainable
    /// variables and applies one optimiser update at its scheduled learning
    /// rate; a non-finite loss skips the update unless the part's optimiser
    /// says `nonfinite: "clamp"`. Returns the loss, detached, on the device:
    /// nothing is read back unless the optimiser must decide a skip on the
    /// host (see [`Adam::step`]) or the update is data-parallel.
    pub fn update(&mut self, part: &str, loss: &Tensor) -> Result<Tensor> {
        let (batch, device, group) = (self.global_batch_size, self.device, self.group);
        let optimizer = self.optimizer(part)?;
        let backward_outside_autocast = suspend_autocast(device)?;
        let value = match group {
            None => {
                optimizer.update(loss, batch)?;
                loss.f_detach().ctx("loss")?
            }
            Some(group) => {
                // Every rank must join the collective, so each backpropagates its
                // share before anyone knows whether the global loss is finite.
                optimizer.zero_grad();
                optimizer.backward(loss)?;
                let mut values = [loss.f_double_value(&[]).ctx("read loss")?];
                group.average(&optimizer.gradients()?, &mut values)?;
                apply_or_skip(optimizer, values[0], batch)?;
                host_scalar(values[0], device)?
            }
        };
        if backward_outside_autocast.is_some() {
            forget_cached_casts()?;
        }
        self.record_peak(part);
        Ok(value)
    }

    /// One update of part `part` from several losses whose gradients add up
    /// (a batch in rounds, as EDM's `batch_gpu`): `round(i)` gives the loss
    /// of round `i`, already divided by the number of rounds; each is
    /// backpropagated before the next is computed, so only one round's
    /// activations are alive at a time. A non-finite round skips the update
    /// unless the optimiser says `nonfinite: "clamp"`. Returns the summed
    /// loss, detached, on the device.
    pub fn update_in_rounds(
        &mut self,
        part: &str,
        rounds: usize,
        mut round: impl FnMut(usize) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let (batch, device, group) = (self.global_batch_size, self.device, self.group);
        let in_autocast = autocast_enabled(device)?;
        let optimizer = self.optimizer(part)?;
        optimizer.zero_grad();
        let mut total: Option<Tensor> = None;
        for i in 0..rounds {
            let loss = round(i)?;
            // Summed in float64, as the values were on the host.
            let detached = loss.f_detach().and_then(|l| l.f_to_kind(tch::Kind::Double)).ctx("loss")?;
            total = Some(match total {
                None => detached,
                Some(sum) => sum.f_add(&detached).ctx("sum losses")?,
            });
            // A non-finite round's gradients are zeroed and the update skipped
            // (or, clamped, applied), so every round is backpropagated.
            let _backward_outside_autocast = suspend_autocast(device)?;
            optimizer.backward(&loss)?;
        }
        let total = match total {
            Some(total) => total,
            None => Tensor::f_zeros([], (tch::Kind::Double, device)).ctx("loss")?,
        };
        let _step_outside_autocast = suspend_autocast(device)?;
        let total = match group {
            None => {
                optimizer.step(&total, batch)?;
                total
            }
            Some(group) => {
                let mut values = [total.f_double_value(&[]).ctx("read loss")?];
                group.average(&optimizer.gradients()?, &mut values)?;
                apply_or_skip(optimizer, values[0], batch)?;
                host_scalar(values[0], device)?
            }
        };
        if in_autocast {
            forget_cached_casts()?;
        }
        self.record_peak(part);
        Ok(total)
    }

    /// The optimiser of part `part`, which the step must have declared trained.
    fn optimizer(&mut self, part: &str) -> Result<&mut Adam> {
        self.optimizers.get_mut(part).ok_or_else(|| Error::Plugin {
            plugin: "training step".into(),
            message: format!("updates part `{part}`, which it did not declare as trained"),
        })
    }
}

/// `value` as a scalar tensor on `device`.
fn host_scalar(value: f64, device: Device) -> Result<Tensor> {
    Tensor::from(value).f_to_device(device).ctx("loss")
}

fn autocast_error(e: difi_torch_ext::Error) -> Error {
    Error::Plugin { plugin: "autocast".into(), message: e.to_string() }
}

/// Whether an autocast region is on for `device`'s type.
fn autocast_enabled(device: Device) -> Result<bool> {
    Ok(difi_torch_ext::autocast::state(device).map_err(autocast_error)?.0)
}

/// Autocast off until dropped, when a region is on: PyTorch advises running
/// backward passes outside autocast (they take the forward ops' dtypes anyway).
fn suspend_autocast(device: Device) -> Result<Option<AutocastGuard>> {
    if !autocast_enabled(device)? {
        return Ok(None);
    }
    AutocastGuard::suspend(device).map(Some).map_err(autocast_error)
}

/// After an update inside an autocast region: the region's cached
/// lower-precision copies of weights are of the weights before the step,
/// and the step's next forward pass (a second fake-score update, the GAN's
/// R1 pass) must not run on them.
fn forget_cached_casts() -> Result<()> {
    difi_torch_ext::autocast::clear_cache().map_err(autocast_error)
}

/// Applies the accumulated gradients at the scheduled learning rate unless
/// the loss `value` (known on the host) is not finite and the optimiser
/// skips such updates.
fn apply_or_skip(optimizer: &mut Adam, value: f64, batch: i64) -> Result<()> {
    if value.is_finite() || optimizer.config().nonfinite == NonFinite::Clamp {
        optimizer.settle()?;
        let lr = optimizer.config().learning_rate(optimizer.steps(), batch);
        optimizer.apply(lr)
    } else {
        optimizer.skip();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tch::nn::VarStore;
    use tch::{Kind, Tensor};

    use super::*;
    use crate::optim::AdamConfig;

    #[test]
    fn the_forward_after_an_update_in_an_autocast_region_uses_the_new_weights() {
        let _rng = crate::lock_test_rng();
        tch::manual_seed(5);
        let vs = VarStore::new(Device::Cpu);
        let w = vs.root().var("w", &[8, 3], tch::nn::Init::Randn { mean: 0.0, stdev: 1.0 });
        let variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        let config = AdamConfig { lr: 0.5, betas: (0.9, 0.99), ..Default::default() };
        let mut optimizers = BTreeMap::from([("p".to_string(), Adam::new(&variables, config).unwrap())]);
        let x = Tensor::randn([4, 8], (Kind::Float, Device::Cpu));
        let _autocast = AutocastGuard::enable(Device::Cpu, Kind::BFloat16).unwrap();
        let mut ctx = StepContext::new(Device::Cpu, 4, 0, &mut optimizers);
        let before = x.matmul(&w);
        assert_eq!(before.kind(), Kind::BFloat16);
        let _loss = ctx.update("p", &before.to_kind(Kind::Float).square().mean(Kind::Float)).unwrap();
        // Two fake-score updates in one iteration run two forward passes in one region.
        let after = x.matmul(&w);
        let expected = x.to_kind(Kind::BFloat16).matmul(&w.detach().to_kind(Kind::BFloat16));
        assert!(!after.equal(&before), "the update moved the weights");
        assert!(after.equal(&expected), "the forward ran on the weights before the update");
    }
}
