//! A GAN, written as a test: a new algorithm with a new role (a
//! discriminator), its own config section and its own losses, trained by the
//! unchanged runner, which saves the discriminator and its optimiser, resumes
//! it exactly and reports its loss. Nothing in difi-train knows about GANs.

use std::path::Path;
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

/// The GAN's config section: the real data is N(real_mean, real_std²) in 1-D.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GanSketch {
    real_mean: f64,
    real_std: f64,
}

impl Algorithm for GanSketch {
    const NAME: &'static str = "gan-sketch";

    fn trained_parts(&self) -> Vec<&'static str> {
        vec!["generator", "discriminator"]
    }

    fn resolve(&mut self, _registry: &Registry, _ctx: &ResolveContext<'_>) -> Result<()> {
        Ok(())
    }

    fn build(&self, env: &BuildEnv<'_>) -> Result<Box<dyn Step>> {
        tch::manual_seed(env.seed as i64);
        let generator_vars = VarStore::new(env.device);
        let generator = nn::linear(generator_vars.root() / "fc", 1, 1, Default::default());
        let discriminator_vars = VarStore::new(env.device);
        let root = discriminator_vars.root();
        let discriminator = nn::seq()
            .add(nn::linear(&root / "fc0", 1, 32, Default::default()))
            .add_fn(|x| x.leaky_relu())
            .add(nn::linear(&root / "fc1", 32, 1, Default::default()));
        let generator_ema_vars = VarStore::new(env.device);
        // Only its variables matter: the runner keeps them as the generator's EMA.
        nn::linear(generator_ema_vars.root() / "fc", 1, 1, Default::default());
        Ok(Box::new(GanStep {
            config: self.clone(),
            generator,
            generator_vars,
            generator_ema_vars,
            discriminator,
            discriminator_vars,
        }))
    }
}

struct GanStep {
    config: GanSketch,
    generator: nn::Linear,
    generator_vars: VarStore,
    generator_ema_vars: VarStore,
    discriminator: nn::Sequential,
    discriminator_vars: VarStore,
}

impl Step for GanStep {
    fn parts(&mut self) -> Vec<Part<'_>> {
        vec![
            Part { name: "generator", vars: &mut self.generator_vars, role: PartRole::Trained },
            Part { name: "generator_ema", vars: &mut self.generator_ema_vars, role: PartRole::EmaOf("generator") },
            Part { name: "discriminator", vars: &mut self.discriminator_vars, role: PartRole::Trained },
        ]
    }

    /// Non-saturating GAN losses (Goodfellow et al. 2014), one update of each.
    fn iteration(&mut self, ctx: &mut StepContext<'_>) -> Result<Losses> {
        let options = (Kind::Float, ctx.device);
        let n = ctx.batch_size;
        let real = Tensor::f_randn([n, 1], options).ctx("real")? * self.config.real_std + self.config.real_mean;
        let fake = self.generator.forward(&Tensor::f_randn([n, 1], options).ctx("z")?).detach();
        let d_loss =
            self.discriminator.forward(&real).f_neg().ctx("d")?.f_softplus().ctx("d")?.f_mean(Kind::Float).ctx("d")?
                + self.discriminator.forward(&fake).f_softplus().ctx("d")?.f_mean(Kind::Float).ctx("d")?;
        let discriminator = ctx.update("discriminator", &d_loss)?;
        let fake = self.generator.forward(&Tensor::f_randn([n, 1], options).ctx("z")?);
        let g_loss =
            self.discriminator.forward(&fake).f_neg().ctx("g")?.f_softplus().ctx("g")?.f_mean(Kind::Float).ctx("g")?;
        self.discriminator_vars.freeze();
        let generator = ctx.update("generator", &g_loss);
        self.discriminator_vars.unfreeze();
        Ok(Losses(vec![("discriminator", discriminator), ("generator", generator?)]))
    }
}

const CONFIG: &str = r#"(
    version: 1,
    seed: 7,
    device: "cpu",
    real_mean: 3.0,
    real_std: 0.5,
    optim: (generator: (lr: 0.01, betas: (0.5, 0.999)), discriminator: (lr: 0.01, betas: (0.5, 0.999))),
    schedule: (batch_size: 64, total_kimg: 25.6, tick_kimg: 6.4, snapshot_ticks: 2, ema_halflife_kimg: 1.0),
)"#;

/// libtorch's generator is global and the tests of this file run in parallel threads.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn gan_config(overrides: &[String]) -> RunConfig<GanSketch> {
    let config = RunConfig::<GanSketch>::parse(CONFIG, overrides).unwrap();
    config.resolve(&Registry::empty()).unwrap()
}

fn runner(config: &RunConfig<GanSketch>) -> Runner {
    difi_train::session::build_runner(config, &Registry::empty()).unwrap()
}

fn generator_mean(snapshot: &Path) -> f64 {
    let weights = difi_formats::weights::load(&snapshot.join("generator_ema.safetensors")).unwrap().into_map();
    weights["fc.bias"].double_value(&[0])
}

#[test]
fn a_gan_trains_through_the_unchanged_runner_and_resumes_exactly() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let scratch = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("difi-gan-sketch");
    let _ = std::fs::remove_dir_all(&scratch);
    let never = AtomicBool::new(false);

    let whole = RunDir::create(&scratch.join("whole")).unwrap();
    let config = gan_config(&[]);
    assert_eq!(runner(&config).run(&whole, &never).unwrap(), Outcome::Finished);
    let last = whole.latest_snapshot().unwrap().unwrap();
    for file in ["generator", "generator_ema", "discriminator", "adam_generator", "adam_discriminator"] {
        assert!(last.join(format!("{file}.safetensors")).is_file(), "{file} in {}", last.display());
    }
    let stats = std::fs::read_to_string(whole.stats_path()).unwrap();
    let line: serde_json::Value = serde_json::from_str(stats.lines().last().unwrap()).unwrap();
    assert!(line["loss_discriminator"].as_f64().is_some_and(f64::is_finite), "{line}");
    // The generator's mean moved from ~0 to the real mean.
    let mean = generator_mean(&last);
    assert!((mean - 3.0).abs() < 0.6, "generator mean {mean}");

    // Half the run, then a second runner resumes from its snapshot.
    let halves = RunDir::create(&scratch.join("halves")).unwrap();
    let first = gan_config(&["schedule.total_kimg=12.8".into()]);
    runner(&first).run(&halves, &never).unwrap();
    let mut second = runner(&config);
    second.load_snapshot(&halves.latest_snapshot().unwrap().unwrap()).unwrap();
    assert_eq!(second.run(&halves, &never).unwrap(), Outcome::Finished);
    let resumed = halves.latest_snapshot().unwrap().unwrap();
    for file in ["generator_ema", "discriminator", "adam_discriminator"] {
        let a = difi_formats::weights::load(&last.join(format!("{file}.safetensors"))).unwrap().into_map();
        let b = difi_formats::weights::load(&resumed.join(format!("{file}.safetensors"))).unwrap().into_map();
        for (name, tensor) in &a {
            let diff = (tensor - &b[name]).abs().max().double_value(&[]);
            assert!(diff == 0.0, "{file}: {name} differs by {diff}");
        }
    }
}

#[test]
fn an_optimiser_for_a_part_the_algorithm_does_not_train_is_refused() {
    let _rng = RNG.lock().unwrap_or_else(|e| e.into_inner());
    let config = RunConfig::<GanSketch>::parse(CONFIG, &["optim.critic=(lr: 0.1)".into()]).unwrap();
    let err = config.resolve(&Registry::empty()).unwrap_err().to_string();
    assert!(err.contains("optim.critic") && err.contains("discriminator"), "{err}");
}
