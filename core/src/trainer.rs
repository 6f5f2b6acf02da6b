//! The Diff-Instruct training loop: alternating fake-score and generator
//! updates, the generator's EMA, ticks, snapshots and exact resumption.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::checkpoint;
use crate::config::{self, Config};
use crate::denoising_loss::edm_denoising_loss;
use crate::device::{Stream, reseed};
use crate::error::{Error, Result, TorchContext};
use crate::metrics::schedule::MetricsRunner;
use crate::optim::Adam;
use crate::run_dir::{RunDir, resident_memory_mib, write_atomically};
use crate::traits::{Divergence, Generator, ScoreModel};

/// The networks and divergence of one run.
pub struct Networks<G, T, F, D> {
    /// Frozen pre-trained model.
    pub teacher: T,
    /// The one-step generator being trained.
    pub generator: G,
    /// Exponential moving average of the generator's weights (what is sampled).
    pub generator_ema: G,
    /// Score model of the generator's distribution, trained alongside.
    pub fake_score: F,
    /// Gives the generator loss.
    pub divergence: D,
}

/// Where a run stands; saved in every snapshot as `state.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Generator updates done.
    pub iteration: u64,
    /// Generator samples used by generator updates so far.
    pub nimg: u64,
    /// Fake-score warm-up updates done.
    pub fake_warmup_done: u64,
    /// Updates applied by each optimiser (drives bias correction and warm-up).
    pub generator_steps: u64,
    pub fake_score_steps: u64,
    /// Ticks completed, and the sample count at which the current tick began.
    pub tick: u64,
    pub tick_start_nimg: u64,
    /// Consecutive iterations whose loss was not finite.
    pub nonfinite_streak: u64,
    /// Wall-clock seconds spent training, over all sessions of the run.
    pub elapsed_s: f64,
}

/// Losses of one iteration.
#[derive(Clone, Copy, Debug)]
pub struct IterationLosses {
    /// Mean fake-score loss over this iteration's fake updates.
    pub fake_score: f64,
    /// Generator loss.
    pub generator: f64,
}

/// How a call to [`Trainer::run`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `total_kimg` reached; the final snapshot is written.
    Finished,
    /// Stopped on request; a snapshot of the current iteration is written.
    Stopped,
}

/// Trains a generator by Diff-Instruct.
pub struct Trainer<G, T, F, D> {
    nets: Networks<G, T, F, D>,
    config: Config,
    device: Device,
    state: TrainState,
    opt_generator: Adam,
    opt_fake: Adam,
    ema_pairs: Vec<(Tensor, Tensor)>,
    label_dim: i64,
    metrics: Option<MetricsRunner>,
}

impl<G: Generator, T: ScoreModel, F: ScoreModel, D: Divergence> Trainer<G, T, F, D> {
    /// A trainer at iteration 0. `config` is the resolved config.
    pub fn new(mut nets: Networks<G, T, F, D>, config: Config, device: Device) -> Result<Self> {
        let shape = nets.teacher.sample_shape();
        for (role, got) in
            [("generator", nets.generator.sample_shape()), ("fake score", nets.fake_score.sample_shape())]
        {
            if got != shape {
                return Err(Error::Shape {
                    what: format!("{role} samples (the teacher's shape)"),
                    expected: shape,
                    actual: got,
                });
            }
        }
        let label_dim = nets.teacher.label_dim();
        for (role, got) in [("generator", nets.generator.label_dim()), ("fake score", nets.fake_score.label_dim())] {
            if got != label_dim {
                return Err(Error::config(
                    role.replace(' ', "_"),
                    format!("has {got} classes but the teacher has {label_dim}"),
                ));
            }
        }
        if let Some(vs) = nets.teacher.var_store_mut() {
            vs.freeze();
        }
        nets.teacher.set_train(false);
        let fake_vs = nets
            .fake_score
            .var_store()
            .ok_or_else(|| Error::config("fake_score", "the fake score must have trainable weights"))?;
        let opt_fake = Adam::new(fake_vs, config.optim.fake_score.clone())?;
        let opt_generator = Adam::new(nets.generator.var_store(), config.optim.generator.clone())?;
        nets.generator_ema.var_store_mut().freeze();
        nets.generator_ema.var_store_mut().copy(nets.generator.var_store()).ctx("initialise the EMA")?;
        let ema_pairs = pair_variables(nets.generator_ema.var_store(), nets.generator.var_store())?;
        Ok(Trainer {
            nets,
            config,
            device,
            state: TrainState::default(),
            opt_generator,
            opt_fake,
            ema_pairs,
            label_dim,
            metrics: None,
        })
    }

    /// Computes `metrics` of the EMA generator after every scheduled snapshot.
    pub fn set_metrics(&mut self, metrics: MetricsRunner) {
        self.metrics = Some(metrics);
    }

    /// The networks.
    pub fn networks(&self) -> &Networks<G, T, F, D> {
        &self.nets
    }

    /// Where training stands.
    pub fn state(&self) -> &TrainState {
        &self.state
    }

    /// One Diff-Instruct iteration: fake-score update(s) on detached generator
    /// samples, one generator update through the divergence, then the EMA.
    pub fn iteration(&mut self) -> Result<IterationLosses> {
        let updates = self.config.schedule.fake_updates_per_iter;
        let mut fake_score = 0.0;
        for _ in 0..updates {
            fake_score += self.fake_score_update()? / updates as f64;
        }
        let generator = self.generator_update()?;
        self.update_ema()?;
        self.state.iteration += 1;
        self.state.nimg += self.config.schedule.batch_size as u64;
        Ok(IterationLosses { fake_score, generator })
    }

    /// Generator samples `[N, *shape]` and their one-hot labels, drawn from
    /// libtorch's global generator.
    fn generator_batch(&self) -> Result<(Tensor, Option<Tensor>)> {
        let n = self.config.schedule.batch_size;
        let z = self.nets.generator.sample_latents(n, self.device)?;
        let labels = random_labels(n, self.label_dim, self.device)?;
        let x = self.nets.generator.generate(&z, labels.as_ref())?;
        Ok((x, labels))
    }

    /// EDM denoising loss of the fake score on detached generator samples.
    fn fake_score_update(&mut self) -> Result<f64> {
        let (x_g, labels) = tch::no_grad(|| self.generator_batch())?;
        self.nets.fake_score.set_train(true);
        let loss = edm_denoising_loss(&self.nets.fake_score, &x_g, labels.as_ref(), &self.config.fake_loss)?;
        let value = loss.f_double_value(&[]).ctx("read fake-score loss")?;
        if value.is_finite() {
            let lr = learning_rate(self.opt_fake.config(), self.opt_fake.steps(), self.config.schedule.batch_size);
            self.opt_fake.backward_step(&loss, lr)?;
            self.state.fake_score_steps = self.opt_fake.steps();
        }
        Ok(value)
    }

    /// The divergence's generator loss, with the fake score frozen.
    fn generator_update(&mut self) -> Result<f64> {
        self.nets.generator.set_train(true);
        self.nets.fake_score.set_train(false);
        let (x_g, labels) = self.generator_batch()?;
        let fake_vs = self.nets.fake_score.var_store_mut().expect("checked in new");
        fake_vs.freeze();
        let loss =
            self.nets.divergence.generator_loss(&x_g, labels.as_ref(), &self.nets.teacher, &self.nets.fake_score);
        self.nets.fake_score.var_store_mut().expect("checked in new").unfreeze();
        let loss = loss?;
        let value = loss.f_double_value(&[]).ctx("read generator loss")?;
        if value.is_finite() {
            let lr =
                learning_rate(self.opt_generator.config(), self.opt_generator.steps(), self.config.schedule.batch_size);
            self.opt_generator.backward_step(&loss, lr)?;
            self.state.generator_steps = self.opt_generator.steps();
        }
        Ok(value)
    }

    /// `ema ← β·ema + (1−β)·θ`, β from the half-life in kimg (with EDM's ramp-up).
    fn update_ema(&mut self) -> Result<()> {
        let schedule = &self.config.schedule;
        let mut halflife_nimg = schedule.ema_halflife_kimg * 1000.0;
        if let Some(ratio) = schedule.ema_rampup_ratio {
            halflife_nimg = halflife_nimg.min(self.state.nimg as f64 * ratio);
        }
        let beta = if halflife_nimg > 0.0 { 0.5f64.powf(schedule.batch_size as f64 / halflife_nimg) } else { 0.0 };
        let _guard = tch::no_grad_guard();
        for (ema, param) in self.ema_pairs.iter_mut() {
            let _ = ema.f_lerp_(param, 1.0 - beta).ctx("ema update")?;
        }
        Ok(())
    }

    /// Trains until `total_kimg`, writing stats every tick and snapshots as
    /// scheduled. When `stop` becomes true, writes a snapshot of the current
    /// iteration and returns [`Outcome::Stopped`].
    pub fn run(&mut self, run: &RunDir, stop: &AtomicBool) -> Result<Outcome> {
        let schedule = self.config.schedule.clone();
        let seed = self.config.seed;
        let started = Instant::now();
        let elapsed_before = self.state.elapsed_s;

        let warmup_bar = progress_bar(schedule.fake_warmup_iters, "fake-score warm-up");
        warmup_bar.set_position(self.state.fake_warmup_done);
        while self.state.fake_warmup_done < schedule.fake_warmup_iters {
            if stop.load(Ordering::SeqCst) {
                warmup_bar.abandon();
                self.state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
                self.snapshot(run)?;
                return Ok(Outcome::Stopped);
            }
            reseed(seed, Stream::FakeWarmup, self.state.fake_warmup_done);
            let loss = self.fake_score_update()?;
            if !loss.is_finite() {
                return Err(Error::NonFinite {
                    what: "fake-score loss".into(),
                    iteration: self.state.fake_warmup_done,
                    detail: "during the fake-score warm-up; lower optim.fake_score.lr".into(),
                });
            }
            self.state.fake_warmup_done += 1;
            warmup_bar.inc(1);
        }
        warmup_bar.finish_and_clear();

        let total_nimg = (schedule.total_kimg * 1000.0).round() as u64;
        let tick_nimg = ((schedule.tick_kimg * 1000.0).round() as u64).max(1);
        let bar = progress_bar(total_nimg, "kimg");
        bar.set_position(self.state.nimg.min(total_nimg));
        let mut tick = TickAccumulator::new(self.state.nimg);
        while self.state.nimg < total_nimg {
            if stop.load(Ordering::SeqCst) {
                bar.abandon();
                self.state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
                let path = self.snapshot(run)?;
                tracing::info!("stopped; snapshot written to {}", path.display());
                return Ok(Outcome::Stopped);
            }
            reseed(seed, Stream::Iteration, self.state.iteration);
            let losses = self.iteration()?;
            self.check_finite(&losses)?;
            tick.add(&losses);
            bar.set_position(self.state.nimg.min(total_nimg));

            let done = self.state.nimg >= total_nimg;
            if done || self.state.nimg >= self.state.tick_start_nimg + tick_nimg {
                self.state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
                if let Device::Cuda(index) = self.device {
                    tch::Cuda::synchronize(index as i64);
                }
                let line = tick.finish(&self.state, self.device);
                bar.set_message(format!(
                    "loss fake {:.4} gen {:.4}",
                    line["loss_fake_score"].as_f64().unwrap_or(f64::NAN),
                    line["loss_generator"].as_f64().unwrap_or(f64::NAN)
                ));
                tracing::info!(
                    tick = self.state.tick,
                    kimg = self.state.nimg as f64 / 1000.0,
                    loss_fake_score = line["loss_fake_score"].as_f64(),
                    loss_generator = line["loss_generator"].as_f64(),
                    "tick"
                );
                run.append_stats(&line)?;
                self.state.tick += 1;
                self.state.tick_start_nimg = self.state.nimg;
                tick = TickAccumulator::new(self.state.nimg);
                let snapshot_due =
                    schedule.snapshot_ticks > 0 && self.state.tick.is_multiple_of(schedule.snapshot_ticks);
                if done || snapshot_due {
                    let path = self.snapshot(run)?;
                    self.evaluate_metrics(run, &path)?;
                }
            }
        }
        bar.finish_and_clear();
        Ok(Outcome::Finished)
    }

    /// Evaluates the configured metrics of the EMA generator and appends them
    /// to `metrics.jsonl`, each tagged with the snapshot.
    fn evaluate_metrics(&self, run: &RunDir, snapshot: &Path) -> Result<()> {
        let Some(metrics) = &self.metrics else { return Ok(()) };
        for mut line in metrics.evaluate(&self.nets.generator_ema)? {
            line["snapshot"] = serde_json::json!(snapshot.file_name().map(|n| n.to_string_lossy().into_owned()));
            line["kimg"] = serde_json::json!(self.state.nimg as f64 / 1000.0);
            line["iteration"] = serde_json::json!(self.state.iteration);
            tracing::info!("{} {}", line["metric"], line["results"]);
            run.append_metrics(&line)?;
        }
        Ok(())
    }

    fn check_finite(&mut self, losses: &IterationLosses) -> Result<()> {
        if losses.generator.is_finite() && losses.fake_score.is_finite() {
            self.state.nonfinite_streak = 0;
            return Ok(());
        }
        self.state.nonfinite_streak += 1;
        tracing::warn!(iteration = self.state.iteration, ?losses, "non-finite loss; update skipped");
        if self.state.nonfinite_streak >= self.config.schedule.max_nonfinite_iters.max(1) {
            let what = if losses.generator.is_finite() { "fake-score loss" } else { "generator loss" };
            return Err(Error::NonFinite {
                what: what.into(),
                iteration: self.state.iteration,
                detail: format!(
                    "{} iterations in a row; the snapshots written so far are intact; \
                     lower the learning rates or raise schedule.max_nonfinite_iters",
                    self.state.nonfinite_streak
                ),
            });
        }
        Ok(())
    }

    /// Writes a snapshot of the current iteration into the run directory.
    pub fn snapshot(&self, run: &RunDir) -> Result<std::path::PathBuf> {
        let path = run.write_snapshot(self.state.iteration, |dir| self.save_into(dir))?;
        tracing::debug!("snapshot {}", path.display());
        Ok(path)
    }

    fn save_into(&self, dir: &Path) -> Result<()> {
        let meta = |role: &str| {
            HashMap::from([
                ("difi_role".to_string(), role.to_string()),
                ("iteration".to_string(), self.state.iteration.to_string()),
                ("kimg".to_string(), format!("{}", self.state.nimg as f64 / 1000.0)),
            ])
        };
        checkpoint::save_var_store(self.nets.generator.var_store(), &dir.join(GENERATOR), &meta("generator"))?;
        checkpoint::save_var_store(
            self.nets.generator_ema.var_store(),
            &dir.join(GENERATOR_EMA),
            &meta("generator_ema"),
        )?;
        let fake = self.nets.fake_score.var_store().expect("checked in new");
        checkpoint::save_var_store(fake, &dir.join(FAKE_SCORE), &meta("fake_score"))?;
        checkpoint::save(&dir.join(ADAM_GENERATOR), &self.opt_generator.state_tensors(), &meta("adam_generator"))?;
        checkpoint::save(&dir.join(ADAM_FAKE_SCORE), &self.opt_fake.state_tensors(), &meta("adam_fake_score"))?;
        let state = serde_json::to_string_pretty(&self.state).expect("state serialises");
        write_atomically(&dir.join(STATE), state.as_bytes())
    }

    /// Restores weights, optimiser moments and state from a snapshot directory.
    pub fn load_snapshot(&mut self, dir: &Path) -> Result<()> {
        let state_path = dir.join(STATE);
        let text = std::fs::read_to_string(&state_path).map_err(|e| Error::io(&state_path, e))?;
        let state: TrainState =
            serde_json::from_str(&text).map_err(|e| Error::checkpoint(&state_path, e.to_string()))?;
        checkpoint::load_into(self.nets.generator.var_store_mut(), &dir.join(GENERATOR))?;
        checkpoint::load_into(self.nets.generator_ema.var_store_mut(), &dir.join(GENERATOR_EMA))?;
        let fake = self.nets.fake_score.var_store_mut().expect("checked in new");
        checkpoint::load_into(fake, &dir.join(FAKE_SCORE))?;
        let path = dir.join(ADAM_GENERATOR);
        self.opt_generator.load_state(&checkpoint::load(&path)?.into_map(), state.generator_steps, &path)?;
        let path = dir.join(ADAM_FAKE_SCORE);
        self.opt_fake.load_state(&checkpoint::load(&path)?.into_map(), state.fake_score_steps, &path)?;
        self.state = state;
        Ok(())
    }
}

/// File names inside a snapshot directory.
pub const GENERATOR: &str = "generator.safetensors";
pub const GENERATOR_EMA: &str = "generator_ema.safetensors";
pub const FAKE_SCORE: &str = "fake_score.safetensors";
pub const ADAM_GENERATOR: &str = "adam_generator.safetensors";
pub const ADAM_FAKE_SCORE: &str = "adam_fake_score.safetensors";
pub const STATE: &str = "state.json";

/// Learning rate after `steps` updates of `batch` samples, with the linear warm-up.
fn learning_rate(adam: &config::Adam, steps: u64, batch: i64) -> f64 {
    if adam.warmup_kimg <= 0.0 {
        return adam.lr;
    }
    let kimg = (steps * batch as u64) as f64 / 1000.0;
    adam.lr * (kimg / adam.warmup_kimg).min(1.0)
}

/// Uniformly random one-hot labels `[n, label_dim]`, or `None` when unconditional.
pub fn random_labels(n: i64, label_dim: i64, device: Device) -> Result<Option<Tensor>> {
    if label_dim == 0 {
        return Ok(None);
    }
    let classes = Tensor::f_randint(label_dim, [n], (Kind::Int64, device)).ctx("sample labels")?;
    Ok(Some(classes.f_one_hot(label_dim).ctx("one-hot labels")?.f_to_kind(Kind::Float).ctx("labels")?))
}

fn pair_variables(ema: &tch::nn::VarStore, live: &tch::nn::VarStore) -> Result<Vec<(Tensor, Tensor)>> {
    let live = live.variables();
    let mut pairs = Vec::new();
    let mut ema_vars: Vec<(String, Tensor)> = ema.variables().into_iter().collect();
    ema_vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, ema_var) in ema_vars {
        let param = live
            .get(&name)
            .ok_or_else(|| Error::config("generator", format!("EMA copy has variable `{name}` the generator lacks")))?;
        pairs.push((ema_var, param.shallow_clone()));
    }
    Ok(pairs)
}

fn progress_bar(len: u64, unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    let template = format!("{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit} (eta {{eta}}) {{msg}}");
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}

/// Sums over one tick for its `stats.jsonl` line.
struct TickAccumulator {
    started: Instant,
    start_nimg: u64,
    fake_sum: f64,
    generator_sum: f64,
    count: u64,
}

impl TickAccumulator {
    fn new(start_nimg: u64) -> Self {
        TickAccumulator { started: Instant::now(), start_nimg, fake_sum: 0.0, generator_sum: 0.0, count: 0 }
    }

    fn add(&mut self, losses: &IterationLosses) {
        if losses.fake_score.is_finite() && losses.generator.is_finite() {
            self.fake_sum += losses.fake_score;
            self.generator_sum += losses.generator;
            self.count += 1;
        }
    }

    fn finish(&self, state: &TrainState, device: Device) -> serde_json::Value {
        let seconds = self.started.elapsed().as_secs_f64();
        let kimg_done = (state.nimg - self.start_nimg) as f64 / 1000.0;
        let mean = |sum: f64| if self.count > 0 { Some(sum / self.count as f64) } else { None };
        serde_json::json!({
            "tick": state.tick,
            "iteration": state.iteration,
            "kimg": state.nimg as f64 / 1000.0,
            "loss_fake_score": mean(self.fake_sum),
            "loss_generator": mean(self.generator_sum),
            "sec_per_tick": seconds,
            "sec_per_kimg": if kimg_done > 0.0 { seconds / kimg_done } else { 0.0 },
            "total_time_s": state.elapsed_s,
            "rss_mib": resident_memory_mib(),
            "gpu_mem_mib": match device {
                Device::Cuda(index) => crate::device::gpu_memory_used_mib(index),
                _ => None,
            },
        })
    }
}
