//! What an algorithm gives the runner: its networks as named [`Part`]s and a
//! [`Step`] that runs one iteration. The runner knows nothing of the
//! algorithm; the algorithm knows nothing of ticks, snapshots or resuming
//! (as EDM's `training_loop(loss_fn=…)` and burn's `TrainStep`).

use std::collections::BTreeMap;

use difi_core::error::{Error, Result, TorchContext};
use difi_core::traits::Generator;
use tch::nn::VarStore;
use tch::{Device, Tensor};

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

/// Named loss values of one iteration, in the step's order (`fake_score`,
/// `generator`); `stats.jsonl` reports each as `loss_<name>`. Name a loss
/// after the part it trains, so messages can point at `optim.<name>`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Losses(pub Vec<(&'static str, f64)>);

impl Losses {
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
}

/// What a step may use during an iteration.
pub struct StepContext<'a> {
    /// Where the networks live.
    pub device: Device,
    /// Samples per iteration.
    pub batch_size: i64,
    /// Iterations done before this one.
    pub iteration: u64,
    optimizers: &'a mut BTreeMap<String, Adam>,
}

impl<'a> StepContext<'a> {
    /// A context lending `optimizers` (by part name) for one call.
    pub fn new(device: Device, batch_size: i64, iteration: u64, optimizers: &'a mut BTreeMap<String, Adam>) -> Self {
        StepContext { device, batch_size, iteration, optimizers }
    }

    /// Backpropagates the scalar `loss` into part `part`'s trainable
    /// variables and applies one optimiser update at its scheduled learning
    /// rate; a non-finite loss skips the update unless the part's optimiser
    /// says `nonfinite: "clamp"`. Returns the loss value.
    pub fn update(&mut self, part: &str, loss: &Tensor) -> Result<f64> {
        let optimizer = self.optimizers.get_mut(part).ok_or_else(|| Error::Plugin {
            plugin: "training step".into(),
            message: format!("updates part `{part}`, which it did not declare as trained"),
        })?;
        let value = loss.f_double_value(&[]).ctx("read loss")?;
        let lr = optimizer.config().learning_rate(optimizer.steps(), self.batch_size);
        optimizer.update(loss, value, lr)?;
        Ok(value)
    }

    /// One update of part `part` from several losses whose gradients add up
    /// (a batch in rounds, as EDM's `batch_gpu`): `round(i)` gives the loss
    /// of round `i`, already divided by the number of rounds; each is
    /// backpropagated before the next is computed, so only one round's
    /// activations are alive at a time. A non-finite round skips the update
    /// unless the optimiser says `nonfinite: "clamp"`. Returns the summed loss.
    pub fn update_in_rounds(
        &mut self,
        part: &str,
        rounds: usize,
        mut round: impl FnMut(usize) -> Result<Tensor>,
    ) -> Result<f64> {
        let optimizer = self.optimizers.get_mut(part).ok_or_else(|| Error::Plugin {
            plugin: "training step".into(),
            message: format!("updates part `{part}`, which it did not declare as trained"),
        })?;
        optimizer.zero_grad();
        let mut total = 0.0;
        for i in 0..rounds {
            let loss = round(i)?;
            let value = loss.f_double_value(&[]).ctx("read loss")?;
            total += value;
            if value.is_finite() || optimizer.config().nonfinite == NonFinite::Clamp {
                optimizer.backward(&loss)?;
            }
        }
        if total.is_finite() || optimizer.config().nonfinite == NonFinite::Clamp {
            let lr = optimizer.config().learning_rate(optimizer.steps(), self.batch_size);
            optimizer.apply(lr)?;
        } else {
            optimizer.skip();
        }
        Ok(total)
    }
}
