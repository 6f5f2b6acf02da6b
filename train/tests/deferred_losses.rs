//! Loss values read at ticks instead of after every iteration (the default
//! on CUDA, where each read waits for the device) train the same run: the
//! same weights, the same `stats.jsonl` and the same failure, at the same
//! iteration, when non-finite losses pile up. Run on the CPU by forcing the
//! deferred reads on.

use std::sync::atomic::AtomicBool;

use difi_core::error::{Result, TorchContext};
use difi_core::registry::{Registry, ResolveContext};
use difi_train::config::RunConfig;
use difi_train::run_dir::RunDir;
use difi_train::runner::{Outcome, Runner};
use difi_train::step::{Losses, Part, PartRole, Step, StepContext};
use difi_train::{Algorithm, BuildEnv};
use serde::{Deserialize, Serialize};
use tch::nn::{self, Module, VarStore};
use tch::{Kind, Tensor};

/// A linear regression whose loss is multiplied by NaN at chosen iterations.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Regression {
    /// Iterations (counted from 0) whose loss is NaN.
    nan_at: Vec<u64>,
}

impl Algorithm for Regression {
    const NAME: &'static str = "nan-regression";

    fn trained_parts(&self) -> Vec<&'static str> {
        vec!["model"]
    }

    fn resolve(&mut self, _registry: &Registry, _ctx: &ResolveContext<'_>) -> Result<()> {
        Ok(())
    }

    fn build(&self, env: &BuildEnv<'_>) -> Result<Box<dyn Step>> {
        tch::manual_seed(env.seed as i64);
        let vars = VarStore::new(env.device);
        let model = nn::linear(vars.root() / "fc", 4, 1, Default::default());
        let ema_vars = VarStore::new(env.device);
        nn::linear(ema_vars.root() / "fc", 4, 1, Default::default());
        Ok(Box::new(RegressionStep { nan_at: self.nan_at.clone(), model, vars, ema_vars }))
    }
}

struct RegressionStep {
    nan_at: Vec<u64>,
    model: nn::Linear,
    vars: VarStore,
    ema_vars: VarStore,
}

impl Step for RegressionStep {
    fn parts(&mut self) -> Vec<Part<'_>> {
        vec![
            Part { name: "model", vars: &mut self.vars, role: PartRole::Trained },
            Part { name: "model_ema", vars: &mut self.ema_vars, role: PartRole::EmaOf("model") },
        ]
    }

    fn iteration(&mut self, ctx: &mut StepContext<'_>) -> Result<Losses> {
        let options = (Kind::Float, ctx.device);
        let x = Tensor::f_randn([ctx.batch_size, 4], options).ctx("x")?;
        let target = x.f_sum_dim_intlist(&[1i64][..], true, Kind::Float).ctx("target")? * 0.5 + 1.0;
        let error = self.model.forward(&x) - target;
        let mut loss = error.f_square().ctx("loss")?.f_mean(Kind::Float).ctx("loss")?;
        if self.nan_at.contains(&ctx.iteration) {
            loss *= f64::NAN;
        }
        Ok(Losses(vec![("model", ctx.update("model", &loss)?)]))
    }
}

/// 40 iterations of 25 samples, a tick every 10.
const CONFIG: &str = r#"(
    version: 1,
    seed: 3,
    device: "cpu",
    nan_at: [2, 3, 11, 25, 26],
    optim: (model: (lr: 0.05, betas: (0.9, 0.99), warmup_kimg: 0.1)),
    schedule: (batch_size: 25, total_kimg: 1.0, tick_kimg: 0.25, snapshot_ticks: 2, ema_halflife_kimg: 0.1,
               max_nonfinite_iters: 3),
)"#;

/// libtorch's generator is global and the tests of this file run in parallel threads.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn runner(overrides: &[&str], defer: bool) -> Runner {
    let overrides: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    let config = RunConfig::<Regression>::parse(CONFIG, &overrides).unwrap();
    let config = config.resolve(&Registry::empty()).unwrap();
    let mut runner = difi_train::session::build_runner(&config, &Registry::empty()).unwrap();
    runner.set_defer_loss_reads(defer);
    runner
}

/// The lines of `stats.jsonl` without their timings and memory.
fn stats_without_timings(run: &RunDir) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(run.stats_path()).unwrap();
    text.lines()
        .map(|line| {
            let mut value: serde_json::Value = serde_json::from_str(line).unwrap();
            let object = value.as_object_mut().unwrap();
            for key in ["sec_per_tick", "sec_per_kimg", "total_time_s", "rss_mib", "gpu_mem_mib"] {
                object.remove(key);
            }
            value
        })
        .collect()
}

fn final_weights(run: &RunDir) -> Vec<(String, Tensor)> {
    let last = run.latest_snapshot().unwrap().unwrap();
    let mut all = Vec::new();
    for file in ["model", "model_ema", "adam_model"] {
        let mut tensors: Vec<_> = difi_formats::weights::load(&last.join(format!("{file}.safetensors")))
            .unwrap()
            .into_map()
            .into_iter()
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        all.extend(tensors.into_iter().map(|(name, t)| (format!("{file}/{name}"), t)));
    }
    all
}

/// An empty scratch directory `name` under cargo's test temporary folder.
fn fresh_scratch(name: &str) -> std::path::PathBuf {
    let scratch = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    let _ = std::fs::remove_dir_all(&scratch);
    scratch
}

#[test]
fn deferred_reads_train_the_same_run_with_one_read_per_tick() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = fresh_scratch("difi-deferred-losses");
    let never = AtomicBool::new(false);
    // Per-tensor Adam decides skips on the host; fused Adam on the device.
    for fused in ["false", "true"] {
        let set = format!("optim.model.fused={fused}");
        let mut runs = Vec::new();
        for defer in [false, true] {
            let run = RunDir::create(&scratch.join(format!("fused-{fused}-defer-{defer}"))).unwrap();
            let mut runner = runner(&[&set], defer);
            assert_eq!(runner.run(&run, &never).unwrap(), Outcome::Finished);
            let expected_reads = if defer { 4 } else { 40 };
            assert_eq!(runner.loss_reads(), expected_reads, "fused {fused}, deferred {defer}");
            runs.push(run);
        }
        let (immediate, deferred) = (stats_without_timings(&runs[0]), stats_without_timings(&runs[1]));
        assert_eq!(immediate, deferred, "fused {fused}");
        let skipped: Vec<u64> = deferred.iter().map(|line| line["skipped_updates"].as_u64().unwrap()).collect();
        assert_eq!(skipped, [2, 1, 2, 0], "fused {fused}: skips per tick");
        assert!(deferred.iter().all(|line| line["loss_model"].as_f64().is_some_and(f64::is_finite)));
        for ((name, a), (_, b)) in final_weights(&runs[0]).iter().zip(final_weights(&runs[1])) {
            assert!(a.equal(&b), "fused {fused}: {name} differs");
        }
    }
}

#[test]
fn a_run_of_non_finite_losses_fails_at_the_same_iteration_and_saves_nothing_after_it() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = fresh_scratch("difi-deferred-nonfinite");
    let never = AtomicBool::new(false);
    let mut errors = Vec::new();
    for defer in [false, true] {
        let run = RunDir::create(&scratch.join(format!("defer-{defer}"))).unwrap();
        // Three NaN iterations in a row, the third at count 24: inside the
        // third tick, before that tick's read and snapshot.
        let err = runner(&["nan_at=[21, 22, 23]", "optim.model.fused=true"], defer).run(&run, &never).unwrap_err();
        errors.push(err.to_string());
        let snapshots = run.snapshots().unwrap();
        assert_eq!(snapshots.len(), 1, "deferred {defer}: only the snapshot of tick 2 exists: {snapshots:?}");
        assert_eq!(std::fs::read_to_string(run.stats_path()).unwrap().lines().count(), 2, "deferred {defer}");
    }
    assert!(errors[0].contains("iteration 24") && errors[0].contains("3 iterations in a row"), "{}", errors[0]);
    assert_eq!(errors[0], errors[1]);
}
