//! `cuda_graph: true`: the Diff-Instruct iteration captured in a CUDA graph
//! and replayed trains what the eager iterations train, bit for bit. The
//! comparison needs a GPU (without one it stops after the checks that run
//! everywhere; `scripts/device-check.sh` runs it on one); the config's
//! refusals and the CPU fallback are tested everywhere.

use difi_core::registry::Registry;
use difi_core::rng::{RngStream, reseed};
use difi_train::config::RunConfig;
use difi_train::run_dir::RunDir;
use difi_train::runner::Runner;
use difi_train::step::{Losses, Part, Step, StepContext};
use difi_train::{Algorithm, DiffInstruct};

const TOY: &str = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/toy-gmm.ron"));

/// The toy with fused Adam (a graph needs it) and the given overrides.
fn config(overrides: &[&str]) -> difi_core::error::Result<RunConfig<DiffInstruct>> {
    difi_divergences::link();
    let registry = Registry::with_builtins()?;
    let mut all = vec!["optim.generator.fused=true".to_string(), "optim.fake_score.fused=true".to_string()];
    all.extend(overrides.iter().map(|s| s.to_string()));
    RunConfig::<DiffInstruct>::parse(TOY, &all)?.resolve(&registry)
}

fn runner(overrides: &[&str]) -> Runner {
    let config = config(overrides).unwrap();
    difi_train::session::build_runner(&config, &Registry::with_builtins().unwrap()).unwrap()
}

#[test]
fn a_config_that_cannot_capture_is_refused_or_runs_eagerly() {
    let error = config(&["cuda_graph=true", "optim.generator.fused=false"]).unwrap_err().to_string();
    assert!(error.contains("optim.generator.fused") && error.contains("cuda_graph"), "{error}");
    let error = config(&["cuda_graph=true", "checkpoint_activations=[\"generator\"]"]).unwrap_err().to_string();
    assert!(error.contains("checkpoint_activations"), "{error}");
    // On the CPU the setting is reported and the run is eager.
    let cpu = runner(&["cuda_graph=true", "device=\"cpu\""]);
    assert!(!cpu.uses_cuda_graph());
}

#[test]
fn diff_instruct_on_the_toy_is_capturable_and_the_default_step_is_not() {
    let config = config(&["device=\"cpu\""]).unwrap();
    let registry = Registry::with_builtins().unwrap();
    let mut step = config.algorithm.build(&config.build_env(&registry, tch::Device::Cpu, None)).unwrap();
    assert_eq!(step.capturable(), Ok(()));
    // A step that has not said is not captured.
    struct Unchecked;
    impl Step for Unchecked {
        fn parts(&mut self) -> Vec<Part<'_>> {
            Vec::new()
        }
        fn iteration(&mut self, _ctx: &mut StepContext<'_>) -> difi_core::error::Result<Losses> {
            Ok(Losses::default())
        }
    }
    assert!(Unchecked.capturable().unwrap_err().contains("not been checked"));
}

#[test]
fn replayed_iterations_train_what_eager_iterations_train() {
    if !tch::Cuda::is_available() {
        return; // needs a GPU: scripts/device-check.sh
    }
    let set = ["device=\"cuda\"", "schedule.batch_size=64", "schedule.ema_rampup_ratio=Some(0.1)"];
    let mut eager = runner(&set);
    let mut graphed = runner(&[&set[..], &["cuda_graph=true"]].concat());
    assert!(graphed.uses_cuda_graph() && !eager.uses_cuda_graph());
    let seed = 0;
    for iteration in 0..12 {
        let mut losses = Vec::new();
        for runner in [&mut eager, &mut graphed] {
            reseed(seed, RngStream::Iteration, iteration);
            let values = runner.iteration().unwrap().values().unwrap();
            losses.push(values);
        }
        assert_eq!(losses[0], losses[1], "iteration {iteration}: losses differ");
    }
    assert!(graphed.cuda_graph_captured(), "3 warm-up iterations, then the capture");
    for part in ["generator", "generator_ema", "fake_score"] {
        let (a, b) = (eager.part_variables(part).unwrap(), graphed.part_variables(part).unwrap());
        for ((name, x), (_, y)) in a.iter().zip(b) {
            assert!(x.equal(y), "{part}.{name} differs after 12 iterations");
        }
    }
    // Adam's counts after replays (settled by a snapshot) are the eager ones.
    let scratch = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("difi-cuda-graph");
    let _ = std::fs::remove_dir_all(&scratch);
    for (name, runner) in [("eager", &mut eager), ("graphed", &mut graphed)] {
        runner.snapshot(&RunDir::create(&scratch.join(name)).unwrap()).unwrap();
    }
    assert_eq!(eager.state().optimizer_steps, graphed.state().optimizer_steps);
    assert_eq!(graphed.state().optimizer_steps.get("generator"), Some(&12));
}
