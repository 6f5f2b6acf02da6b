//! The training loop, the same for every algorithm: warm-up, iterations,
//! EMA, ticks (`stats.jsonl`), snapshots, metrics at snapshots, exact
//! resumption, stopping on request, progress. What an iteration does is the
//! [`Step`]'s business.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use difi_core::error::{Error, Result};
use difi_core::rng::{RngStream, reseed};
use difi_core::shard::ShardGuard;
use difi_formats::image::write_png;
use difi_torch_ext::autocast::AutocastGuard;
use difi_torch_ext::cuda_graph::CudaGraph;
use tch::{Device, Kind};

use crate::config::{RunSettings, Schedule};
use crate::distributed::Distributed;
use crate::ema::{Ema, ema_beta};
use crate::generate::sample_grid;
use crate::optim::{Adam, UpdateCounts};
use crate::run_dir::RunDir;
use crate::snapshot::{self, PartVariables, TrainState};
use crate::snapshot_metrics::SnapshotMetrics;
use crate::stats::TickStats;
use crate::step::{LossValues, Losses, PartRole, Step, StepContext, read_scalars};

/// How a call to [`Runner::run`] ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `total_kimg` reached; the final snapshot is written.
    Finished,
    /// Stopped on request; a snapshot of the current iteration is written.
    Stopped,
}

/// Drives a step: owns its optimisers, EMAs and the training state.
pub struct Runner {
    step: Box<dyn Step>,
    parts: Vec<PartVariables>,
    optimizers: BTreeMap<String, Adam>,
    emas: Vec<Ema>,
    state: TrainState,
    schedule: Schedule,
    seed: u64,
    device: Device,
    metrics: Option<SnapshotMetrics>,
    /// The group this process trains with, when data-parallel.
    group: Option<Rc<Distributed>>,
    /// The dtype of autocast around each step call, if any.
    autocast: Option<Kind>,
    /// Peak CUDA memory (MiB) of each part's update, when measured.
    part_peaks: Option<BTreeMap<String, f64>>,
    /// Whether loss values wait on the device until a tick, a snapshot or a
    /// stop reads them (on CUDA: a read after every iteration would stall
    /// the queue); otherwise each iteration's are read at once.
    defer_loss_reads: bool,
    /// Losses not read yet, with the iteration count after each.
    unread_losses: Vec<(u64, Losses)>,
    /// How many times losses were read back from the device (a measure of
    /// host synchronisation, for tests).
    loss_reads: u64,
    /// The iteration as a CUDA graph, when `cuda_graph` is on and the run
    /// can capture one.
    graph: Option<IterationGraph>,
}

/// A step's iteration captured in a CUDA graph: a few eager iterations on
/// the graph's side stream (cuDNN's autotuner, cuBLAS's workspaces and the
/// gradients' buffers settle there), one captured, then replays.
struct IterationGraph {
    graph: CudaGraph,
    /// Eager iterations still to run before the capture.
    warmup_left: u32,
    /// The captured iteration's losses, rewritten by every replay.
    losses: Losses,
    /// What the capture added to each optimiser's counts, by part.
    counts: Vec<(String, UpdateCounts)>,
}

/// Eager iterations before a capture (PyTorch's examples use 3).
pub const GRAPH_WARMUP_ITERATIONS: u32 = 3;

impl Runner {
    /// Takes the step's parts: freezes frozen and EMA parts, initialises each
    /// EMA from its source, and gives every trained part the optimiser
    /// `settings.optim.<name>` describes.
    pub fn new(mut step: Box<dyn Step>, settings: &RunSettings, device: Device) -> Result<Self> {
        let mut parts = Vec::new();
        let mut optimizers = BTreeMap::new();
        for part in step.parts() {
            if parts.iter().any(|p: &PartVariables| p.name == part.name) {
                return Err(step_error(format!("declares the part `{}` twice", part.name)));
            }
            if part.role != PartRole::Trained {
                part.vars.freeze();
            }
            let mut variables: Vec<_> = part.vars.variables().into_iter().collect();
            variables.sort_by(|a, b| a.0.cmp(&b.0));
            if part.role == PartRole::Trained {
                let config = settings.optim.get(part.name).cloned().ok_or_else(|| {
                    Error::config(format!("optim.{}", part.name), "missing for a trained part (resolve the config)")
                })?;
                optimizers.insert(part.name.to_string(), Adam::new(&variables, config)?);
            }
            parts.push(PartVariables { name: part.name, role: part.role, variables });
        }
        let mut emas = Vec::new();
        for part in &parts {
            if let PartRole::EmaOf(source) = part.role {
                let live = parts.iter().find(|p| p.name == source && p.role == PartRole::Trained).ok_or_else(|| {
                    step_error(format!("`{}` averages `{source}`, which is not a trained part", part.name))
                })?;
                emas.push(Ema::new(&part.variables, &live.variables, part.name)?);
            }
        }
        Ok(Runner {
            step,
            parts,
            optimizers,
            emas,
            state: TrainState::default(),
            schedule: settings.schedule.clone(),
            seed: settings.seed,
            device,
            metrics: None,
            group: None,
            autocast: settings.autocast.kind(),
            part_peaks: None,
            defer_loss_reads: device.is_cuda(),
            unread_losses: Vec::new(),
            loss_reads: 0,
            graph: None,
        })
        .and_then(|runner| runner.with_cuda_graph(settings.cuda_graph))
    }

    /// Prepares the CUDA graph of the iteration when `wanted` and the run
    /// can have one; says why not otherwise (the run is then eager).
    fn with_cuda_graph(mut self, wanted: bool) -> Result<Self> {
        if !wanted {
            return Ok(self);
        }
        let Device::Cuda(index) = self.device else {
            tracing::warn!("cuda_graph: the run is not on CUDA; iterations run eagerly");
            return Ok(self);
        };
        if !difi_torch_ext::cuda_graph::compiled() {
            tracing::warn!("cuda_graph: this build has no CUDA graphs; iterations run eagerly");
            return Ok(self);
        }
        if let Err(reason) = self.step.capturable() {
            tracing::warn!("cuda_graph: {reason}; iterations run eagerly");
            return Ok(self);
        }
        for (name, optimizer) in self.optimizers.iter_mut() {
            optimizer.set_graph_safe(true).map_err(|e| e.under(&format!("optim.{name}")))?;
        }
        let graph = CudaGraph::new(index).map_err(|e| step_error(format!("cuda_graph: {e}")))?;
        self.graph = Some(IterationGraph {
            graph,
            warmup_left: GRAPH_WARMUP_ITERATIONS,
            losses: Losses::default(),
            counts: Vec::new(),
        });
        Ok(self)
    }

    /// Whether iterations are replayed from a CUDA graph (or will be, after
    /// their warm-up).
    pub fn uses_cuda_graph(&self) -> bool {
        self.graph.is_some()
    }

    /// Whether the iteration is captured and iterations are replays.
    pub fn cuda_graph_captured(&self) -> bool {
        self.graph.as_ref().is_some_and(|g| g.graph.is_captured())
    }

    /// Whether loss values stay on the device until a tick, a snapshot or a
    /// stop (the default on CUDA) or are read after every iteration (the
    /// default elsewhere, where a read costs nothing). Either way every
    /// non-finite loss is found, at its own iteration, and the run fails at
    /// the same iteration count with the same message; deferred, the
    /// failure surfaces at the next read, and the iterations up to it are
    /// not saved.
    pub fn set_defer_loss_reads(&mut self, defer: bool) {
        self.defer_loss_reads = defer;
    }

    /// How many times this runner has read losses back from the device.
    pub fn loss_reads(&self) -> u64 {
        self.loss_reads
    }

    /// Trains as one rank of `group`: each iteration computes this rank's
    /// share of `schedule.batch_size` and averages gradients over the
    /// ranks; only rank 0 writes the run directory. Call
    /// [`sync_from_rank0`](Self::sync_from_rank0) before training.
    pub fn set_distributed(&mut self, group: Rc<Distributed>) -> Result<()> {
        if self.graph.is_some() {
            return Err(Error::config(
                "cuda_graph",
                "data-parallel runs cannot capture their iteration yet (the gradients' all-reduce reads the \
                 loss on the host); set cuda_graph: false",
            ));
        }
        let world = group.launch().world_size as i64;
        if self.schedule.batch_size % world != 0 {
            return Err(Error::config(
                "schedule.batch_size",
                format!(
                    "{} does not split evenly over {world} ranks; use a multiple of {world}",
                    self.schedule.batch_size
                ),
            ));
        }
        self.group = Some(group);
        Ok(())
    }

    /// Gives every rank rank 0's weights, optimiser state and training
    /// state (fresh or loaded from a snapshot), so all ranks start equal.
    pub fn sync_from_rank0(&mut self) -> Result<()> {
        let Some(group) = self.group.clone() else { return Ok(()) };
        let state = serde_json::to_vec(&self.state).map_err(|e| step_error(format!("training state: {e}")))?;
        let state = group.broadcast_bytes(&state)?;
        self.state = serde_json::from_slice(&state).map_err(|e| step_error(format!("rank 0's state: {e}")))?;
        for part in self.parts.iter().filter(|p| p.is_saved()) {
            let tensors: Vec<_> = part.variables.iter().map(|(_, t)| t.shallow_clone()).collect();
            group.broadcast_from_rank0(&tensors)?;
        }
        for (name, optimizer) in self.optimizers.iter_mut() {
            let tensors: Vec<_> = optimizer.state_tensors().into_iter().map(|(_, t)| t).collect();
            group.broadcast_from_rank0(&tensors)?;
            let steps = self.state.optimizer_steps.get(name).copied().unwrap_or(0);
            optimizer.set_steps(steps)?;
        }
        Ok(())
    }

    /// Whether this process writes the run directory (always, unless it is
    /// a rank other than 0 of a group).
    pub fn is_writer(&self) -> bool {
        self.group.as_ref().is_none_or(|g| g.is_writer())
    }

    /// A step context for one call, sharded when data-parallel, and the
    /// guards of its shard and autocast region.
    fn context<'a>(
        device: Device,
        batch: i64,
        iteration: u64,
        optimizers: &'a mut BTreeMap<String, Adam>,
        group: Option<&'a Distributed>,
        autocast: Option<Kind>,
    ) -> Result<(StepContext<'a>, StepGuards)> {
        let autocast = autocast
            .map(|kind| AutocastGuard::enable(device, kind))
            .transpose()
            .map_err(|e| step_error(format!("autocast: {e}")))?;
        let ctx = StepContext::new(device, batch, iteration, optimizers);
        Ok(match group {
            Some(group) => (
                ctx.data_parallel(group),
                StepGuards { _shard: Some(ShardGuard::enter(group.shard())), _autocast: autocast },
            ),
            None => (ctx, StepGuards { _shard: None, _autocast: autocast }),
        })
    }

    /// Computes `metrics` of the step's evaluated generator after every snapshot.
    pub fn set_metrics(&mut self, metrics: SnapshotMetrics) -> Result<()> {
        if self.step.evaluated_generator().is_none() {
            return Err(Error::config("metrics.list", "this algorithm has no generator to measure"));
        }
        self.metrics = Some(metrics);
        Ok(())
    }

    /// Where the networks live.
    pub fn device(&self) -> Device {
        self.device
    }

    /// How many processes share each batch (1 unless data-parallel).
    pub fn world_size(&self) -> u64 {
        self.group.as_ref().map_or(1, |g| g.launch().world_size as u64)
    }

    /// Where training stands.
    pub fn state(&self) -> &TrainState {
        &self.state
    }

    /// The step.
    pub fn step(&self) -> &dyn Step {
        self.step.as_ref()
    }

    /// The variables of part `name` sorted by name, as the runner keeps them
    /// (shallow clones: they follow training), or `None` if the step has no
    /// such part.
    pub fn part_variables(&self, name: &str) -> Option<&[(String, tch::Tensor)]> {
        self.parts.iter().find(|p| p.name == name).map(|p| p.variables.as_slice())
    }

    /// From now on, records the peak CUDA memory of each part's update in
    /// [`iterations`](Self::iteration) (`difi bench`); nothing off CUDA.
    pub fn measure_part_peaks(&mut self) {
        self.part_peaks = Some(BTreeMap::new());
    }

    /// The largest peak CUDA memory (MiB) of each part's update since
    /// [`measure_part_peaks`](Self::measure_part_peaks), by part name.
    pub fn part_peaks(&self) -> Option<&BTreeMap<String, f64>> {
        self.part_peaks.as_ref().filter(|peaks| !peaks.is_empty())
    }

    /// One iteration of the step, then the EMAs. Draws from libtorch's
    /// generator as it stands (the loop reseeds it before each call, with
    /// [`difi_core::rng::reseed`]). With a CUDA graph, the step's part is
    /// replayed from it once captured.
    pub fn iteration(&mut self) -> Result<Losses> {
        let batch = self.schedule.batch_size;
        let losses = match self.graph.take() {
            Some(graph) => self.graph_iteration(graph)?,
            None => self.step_iteration()?,
        };
        let beta = ema_beta(self.schedule.ema_halflife_kimg, self.schedule.ema_rampup_ratio, self.state.nimg, batch);
        for ema in &self.emas {
            ema.update(beta)?;
        }
        self.state.iteration += 1;
        self.state.nimg += batch as u64;
        Ok(losses)
    }

    /// The step's iteration through `graph`: eagerly on its side stream
    /// while warming up, then captured, then replayed. A failed capture is
    /// an error: the step declared itself capturable
    /// ([`Step::capturable`]), so the failure is a bug to report, and the
    /// iteration's host side has run without its device side.
    fn graph_iteration(&mut self, mut graph: IterationGraph) -> Result<Losses> {
        if graph.graph.is_captured() {
            let losses = replay(&graph)?;
            for (name, added) in &graph.counts {
                if let Some(optimizer) = self.optimizers.get_mut(name) {
                    optimizer.add_replayed(*added);
                }
            }
            self.graph = Some(graph);
            return Ok(losses);
        }
        if graph.warmup_left > 0 {
            graph.warmup_left -= 1;
            let losses = graph.graph.run_on_side_stream(|| self.step_iteration());
            self.graph = Some(graph);
            return losses.map_err(|e| step_error(format!("cuda_graph warm-up: {e}")))?;
        }
        let before: Vec<(String, UpdateCounts)> =
            self.optimizers.iter().map(|(name, optimizer)| (name.clone(), optimizer.counts())).collect();
        let why_not = match graph.graph.capture(|| self.step_iteration()) {
            Ok(Ok(losses)) => {
                graph.losses = losses;
                graph.counts = before
                    .iter()
                    .filter_map(|(name, then)| Some((name.clone(), self.optimizers.get(name)?.counts().since(*then))))
                    .collect();
                tracing::info!(iteration = self.state.iteration, "captured the iteration in a CUDA graph");
                // The capture ran nothing on the device: this replay is the iteration.
                let losses = replay(&graph)?;
                self.graph = Some(graph);
                return Ok(losses);
            }
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        Err(Error::config(
            "cuda_graph",
            format!(
                "capturing iteration {} failed ({why_not}); the snapshots so far are intact; \
                 set cuda_graph: false to train eagerly, and please report this",
                self.state.iteration
            ),
        ))
    }

    /// The step's own iteration, in its step context.
    fn step_iteration(&mut self) -> Result<Losses> {
        let batch = self.schedule.batch_size;
        let group = self.group.clone();
        let (mut ctx, guards) = Self::context(
            self.device,
            batch,
            self.state.iteration,
            &mut self.optimizers,
            group.as_deref(),
            self.autocast,
        )?;
        if let Some(peaks) = self.part_peaks.as_mut() {
            ctx = ctx.measuring_part_peaks(peaks);
        }
        let losses = self.step.iteration(&mut ctx)?;
        drop(guards);
        Ok(losses)
    }

    /// Trains until `total_kimg`, writing stats every tick and snapshots as
    /// scheduled. When `stop` becomes true, writes a snapshot of the current
    /// iteration and returns [`Outcome::Stopped`].
    pub fn run(&mut self, run: &RunDir, stop: &AtomicBool) -> Result<Outcome> {
        let started = Instant::now();
        let elapsed_before = self.state.elapsed_s;
        let elapsed = |started: &Instant| elapsed_before + started.elapsed().as_secs_f64();

        let warmup_total = self.step.warmup_iterations();
        let warmup_bar = progress_bar(warmup_total, "warm-up", self.is_writer());
        warmup_bar.set_position(self.state.warmup_done);
        let group = self.group.clone();
        while self.state.warmup_done < warmup_total {
            if self.stop_requested(stop)? {
                warmup_bar.abandon();
                self.state.elapsed_s = elapsed(&started);
                self.snapshot(run)?;
                return Ok(Outcome::Stopped);
            }
            reseed(self.seed, RngStream::Warmup, self.state.warmup_done);
            let (mut ctx, guards) = Self::context(
                self.device,
                self.schedule.batch_size,
                self.state.iteration,
                &mut self.optimizers,
                group.as_deref(),
                self.autocast,
            )?;
            let losses = self.step.warmup(&mut ctx)?;
            drop(guards);
            // Warm-up updates are few: each is checked as it happens.
            if let Some(name) = losses.values()?.first_non_finite() {
                return Err(Error::NonFinite {
                    what: loss_label(name),
                    iteration: self.state.warmup_done,
                    detail: format!("during the warm-up; lower optim.{name}.lr"),
                });
            }
            self.state.warmup_done += 1;
            warmup_bar.inc(1);
        }
        warmup_bar.finish_and_clear();

        let total_nimg = (self.schedule.total_kimg * 1000.0).round() as u64;
        let tick_nimg = ((self.schedule.tick_kimg * 1000.0).round() as u64).max(1);
        let bar = progress_bar(total_nimg, "kimg", self.is_writer());
        bar.set_position(self.state.nimg.min(total_nimg));
        let mut tick = TickStats::new(self.state.nimg);
        let mut skipped_before_tick: u64 = self.optimizers.values().map(Adam::skipped).sum();
        while self.state.nimg < total_nimg {
            if self.stop_requested(stop)? {
                bar.abandon();
                self.read_losses(&mut tick)?;
                self.state.elapsed_s = elapsed(&started);
                if let Some(path) = self.snapshot(run)? {
                    tracing::info!("stopped; snapshot written to {}", path.display());
                }
                return Ok(Outcome::Stopped);
            }
            reseed(self.seed, RngStream::Iteration, self.state.iteration);
            let losses = self.iteration()?;
            self.unread_losses.push((self.state.iteration, losses));
            if !self.defer_loss_reads {
                self.read_losses(&mut tick)?;
            }
            bar.set_position(self.state.nimg.min(total_nimg));

            let done = self.state.nimg >= total_nimg;
            if done || self.state.nimg >= self.state.tick_start_nimg + tick_nimg {
                self.read_losses(&mut tick)?;
                for optimizer in self.optimizers.values_mut() {
                    optimizer.settle()?;
                }
                self.state.elapsed_s = elapsed(&started);
                if let Device::Cuda(index) = self.device {
                    tch::Cuda::synchronize(index as i64);
                }
                let mut line = tick.line(
                    self.state.tick,
                    self.state.iteration,
                    self.state.nimg,
                    self.state.elapsed_s,
                    self.device,
                );
                let skipped: u64 = self.optimizers.values().map(Adam::skipped).sum();
                line["skipped_updates"] = serde_json::json!(skipped - skipped_before_tick);
                if let Some(group) = &self.group {
                    line["world_size"] = serde_json::json!(group.launch().world_size);
                }
                skipped_before_tick = skipped;
                let summary: Vec<String> =
                    tick.names().filter_map(|name| Some(format!("{name} {:.4}", tick.mean(name)?))).collect();
                bar.set_message(format!("loss {}", summary.join(" ")));
                tracing::info!(
                    tick = self.state.tick,
                    kimg = self.state.nimg as f64 / 1000.0,
                    "tick: loss {}",
                    summary.join(", ")
                );
                if self.is_writer() {
                    run.append_stats(&line)?;
                }
                self.state.tick += 1;
                self.state.tick_start_nimg = self.state.nimg;
                tick = TickStats::new(self.state.nimg);
                let snapshot_due =
                    self.schedule.snapshot_ticks > 0 && self.state.tick.is_multiple_of(self.schedule.snapshot_ticks);
                if done || snapshot_due {
                    let path = self.snapshot(run)?;
                    self.evaluate_metrics(run, path.as_deref())?;
                }
            }
        }
        bar.finish_and_clear();
        Ok(Outcome::Finished)
    }

    /// Whether to stop now: `stop` on this process, or on any rank (so that
    /// all stop at the same iteration).
    fn stop_requested(&self, stop: &AtomicBool) -> Result<bool> {
        let here = stop.load(Ordering::SeqCst);
        match &self.group {
            Some(group) => group.any(here),
            None => Ok(here),
        }
    }

    /// Reads the losses of the iterations since the last read, all in one
    /// transfer, and goes through them in order: each non-finite one is
    /// reported at its iteration, and the finite ones enter `tick`.
    fn read_losses(&mut self, tick: &mut TickStats) -> Result<()> {
        if self.unread_losses.is_empty() {
            return Ok(());
        }
        let unread = std::mem::take(&mut self.unread_losses);
        let values = read_scalars(unread.iter().flat_map(|(_, losses)| losses.0.iter().map(|(_, t)| t)))?;
        self.loss_reads += 1;
        let mut values = values.into_iter();
        for (iteration, losses) in &unread {
            let named = LossValues(losses.0.iter().map(|(name, _)| *name).zip(values.by_ref()).collect());
            self.check_finite(*iteration, &named)?;
            tick.add(&named);
        }
        Ok(())
    }

    /// Counts `losses` of iteration `iteration` (the count after it) towards
    /// the run of non-finite iterations; fails when the run reaches
    /// `schedule.max_nonfinite_iters`.
    fn check_finite(&mut self, iteration: u64, losses: &LossValues) -> Result<()> {
        let Some(name) = losses.first_non_finite() else {
            self.state.nonfinite_streak = 0;
            return Ok(());
        };
        self.state.nonfinite_streak += 1;
        tracing::warn!(iteration, ?losses, "non-finite loss; update skipped");
        if self.state.nonfinite_streak >= self.schedule.max_nonfinite_iters.max(1) {
            return Err(Error::NonFinite {
                what: loss_label(name),
                iteration,
                detail: format!(
                    "{} iterations in a row; the snapshots written so far are intact; \
                     lower the learning rates or raise schedule.max_nonfinite_iters",
                    self.state.nonfinite_streak
                ),
            });
        }
        Ok(())
    }

    /// Evaluates the configured metrics and appends them to `metrics.jsonl`,
    /// each tagged with the snapshot (`None` on ranks other than 0, which
    /// compute their share and write nothing).
    fn evaluate_metrics(&self, run: &RunDir, snapshot: Option<&Path>) -> Result<()> {
        let (Some(metrics), Some(generator)) = (&self.metrics, self.step.evaluated_generator()) else {
            return Ok(());
        };
        let lines = match &self.group {
            Some(group) => metrics.evaluate_shared(generator, group)?,
            None => Some(metrics.evaluate(generator)?),
        };
        let (Some(lines), Some(snapshot)) = (lines, snapshot) else { return Ok(()) };
        for mut line in lines {
            line["snapshot"] = serde_json::json!(snapshot.file_name().map(|n| n.to_string_lossy().into_owned()));
            line["kimg"] = serde_json::json!(self.state.nimg as f64 / 1000.0);
            line["iteration"] = serde_json::json!(self.state.iteration);
            tracing::info!("{} {}", line["metric"], line["results"]);
            run.append_metrics(&line)?;
        }
        Ok(())
    }

    /// Writes a snapshot of the current iteration into the run directory:
    /// weights, optimiser state, training state and, for image runs, a grid
    /// of samples from fixed latents (`samples.png`). Returns its path, or
    /// `None` on ranks other than 0, which write nothing.
    pub fn snapshot(&mut self, run: &RunDir) -> Result<Option<PathBuf>> {
        for optimizer in self.optimizers.values_mut() {
            optimizer.settle()?;
        }
        self.state.optimizer_steps = self.optimizers.iter().map(|(name, adam)| (name.clone(), adam.steps())).collect();
        self.state.world_size = self.world_size();
        if !self.is_writer() {
            return Ok(None);
        }
        let path = run.write_snapshot(self.state.iteration, |dir| {
            snapshot::save(dir, &self.parts, &self.optimizers, &self.state)?;
            if let Some(generator) = self.step.evaluated_generator()
                && let Some(grid) = sample_grid(generator, GRID_SIDE, GRID_SIDE, self.seed, self.device)?
            {
                write_png(&dir.join(SAMPLES_FILE), &grid)?;
            }
            Ok(())
        })?;
        tracing::debug!("snapshot {}", path.display());
        Ok(Some(path))
    }

    /// Restores weights, optimiser moments and state from a snapshot directory.
    pub fn load_snapshot(&mut self, dir: &Path) -> Result<()> {
        self.state = snapshot::load(dir, &self.parts, &mut self.optimizers)?;
        Ok(())
    }
}

/// Replays `graph` and copies out its losses, which the next replay rewrites.
fn replay(graph: &IterationGraph) -> Result<Losses> {
    graph.graph.replay().map_err(|e| step_error(format!("cuda_graph: {e}")))?;
    let losses = graph
        .losses
        .0
        .iter()
        .map(|(name, loss)| loss.f_detach_copy().map(|copy| (*name, copy)))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| step_error(format!("cuda_graph: copy losses: {e}")))?;
    Ok(Losses(losses))
}

/// What is in effect while a step runs: this rank's shard of the batch and
/// an autocast region, each when configured.
struct StepGuards {
    _shard: Option<ShardGuard>,
    _autocast: Option<AutocastGuard>,
}

/// Rows and columns of a snapshot's sample grid.
const GRID_SIDE: i64 = 8;

/// The sample grid of a snapshot.
pub const SAMPLES_FILE: &str = "samples.png";

/// `fake_score` → `fake-score loss`.
fn loss_label(name: &str) -> String {
    format!("{} loss", name.replace('_', "-"))
}

fn step_error(message: String) -> Error {
    Error::Plugin { plugin: "training step".into(), message }
}

/// A progress bar on stderr; hidden on ranks other than 0, which would
/// only repeat rank 0's.
fn progress_bar(len: u64, unit: &str, visible: bool) -> indicatif::ProgressBar {
    if !visible {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    let template = format!("{{elapsed_precise}} [{{bar:30}}] {{pos}}/{{len}} {unit} (eta {{eta}}) {{msg}}");
    if let Ok(style) = indicatif::ProgressStyle::with_template(&template) {
        bar.set_style(style);
    }
    bar
}
