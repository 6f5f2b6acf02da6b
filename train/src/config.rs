//! A run config: the runner's settings (seed, device, schedule, optimisers,
//! metrics, dataset) and the algorithm's own section, in one RON file.
//!
//! Reading is two-pass (as bevy's asset meta): the text becomes an untyped
//! tree, `--set` overrides are applied to the tree, the runner takes the keys
//! it owns ([`RUN_KEYS`]) and the algorithm decodes the rest; each
//! component's `params` are decoded later by the plugin it names. Unknown
//! fields are errors at every level.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use difi_core::component::Component;
use difi_core::device::DeviceSpec;
use difi_core::error::{Error, Result};
use difi_core::params::{Params, decode_params, encode_params};
use difi_core::registry::{Registry, ResolveContext, Role};
use difi_core::ron_tree;
use difi_core::traits::Dataset;
use difi_metrics::Metric;
use difi_metrics::detectors::DetectorSpec;
use serde::{Deserialize, Serialize};

use crate::algorithm::{Algorithm, BuildEnv};
use crate::networks::build_dataset;
use crate::optim::AdamConfig;

/// The config format this difi reads and writes.
pub const CONFIG_VERSION: u64 = 1;

/// The top-level keys the runner owns; every other key is the algorithm's.
pub const RUN_KEYS: [&str; 15] = [
    "version",
    "algorithm",
    "description",
    "seed",
    "device",
    "allow_tf32",
    "autocast",
    "checkpoint_activations",
    "cuda_graph",
    "base_dir",
    "plugins",
    "dataset",
    "optim",
    "schedule",
    "metrics",
];

/// Keys printed before the algorithm's section; the rest follow it.
const HEAD_KEYS: usize = 11;

/// What the runner needs, whatever the algorithm.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSettings {
    /// Config format version (must be 1).
    pub version: u64,
    /// The algorithm the config is for (`diff-instruct`, `edm-teacher`);
    /// optional in a config, recorded in a run's, so a run is resumed,
    /// sampled and measured as what it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub algorithm: Option<String>,
    /// Free text shown by `difi check`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Seed of every random draw of the run.
    #[serde(default)]
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[serde(default)]
    pub device: DeviceSpec,
    /// Let CUDA compute float32 convolutions and matrix products in TF32
    /// (faster, ~1e-3 relative error); off by default, as in EDM.
    #[serde(default)]
    pub allow_tf32: bool,
    /// Mixed precision for every forward pass of training (`torch.autocast`):
    /// `"none"` (the default), `"bf16"` or `"fp16"` (which wants a loss scale,
    /// `optim.*.loss_scale`, against underflowing gradients).
    #[serde(default, skip_serializing_if = "Autocast::is_none")]
    pub autocast: Autocast,
    /// The networks, by role, whose activations are recomputed in backward
    /// instead of kept (`["generator"]`; diff-instruct's roles are
    /// `teacher`, `generator` and `fake_score`, edm-teacher's `network`):
    /// less memory for one more forward pass of each in backward. EDM's
    /// networks can (block by block); others are refused by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checkpoint_activations: Vec<String>,
    /// Capture the training iteration in a CUDA graph after a few eager
    /// ones and replay it (one launch per iteration instead of thousands):
    /// for small networks, whose iterations are bound by launch overhead.
    /// Needs `fused: true` in every `optim` entry and is refused with
    /// `checkpoint_activations` or data-parallel training; runs that cannot
    /// capture otherwise (not on CUDA, an algorithm or setting that reads
    /// the host each iteration) say why and run eagerly. The trajectory is
    /// the eager one (but for a float32 warm-up learning rate, see
    /// docs/performance.md).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cuda_graph: bool,
    /// Directory that relative paths are relative to (default: the config's own directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_dir: Option<PathBuf>,
    /// Runtime plugin libraries (`.so`) to load before building anything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PathBuf>,
    /// The dataset (a dataset plugin): shapes, labels and FID reference
    /// statistics in distillation (never part of a loss), the training data
    /// of algorithms that have any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<Component>,
    /// Adam settings of each part the algorithm trains, by part name.
    #[serde(default)]
    pub optim: BTreeMap<String, AdamConfig>,
    /// Length, batch, ticks, snapshots and EMA.
    #[serde(default)]
    pub schedule: Schedule,
    /// Metrics computed at every snapshot.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// The precision [`RunSettings::autocast`] asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Autocast {
    /// Every op in its own dtype (float32).
    #[default]
    None,
    /// Matrix products and convolutions in bfloat16.
    Bf16,
    /// Matrix products and convolutions in float16.
    Fp16,
}

impl Autocast {
    /// Whether autocast is off.
    pub fn is_none(&self) -> bool {
        *self == Autocast::None
    }

    /// The dtype of autocast regions, if on.
    pub fn kind(self) -> Option<tch::Kind> {
        match self {
            Autocast::None => None,
            Autocast::Bf16 => Some(tch::Kind::BFloat16),
            Autocast::Fp16 => Some(tch::Kind::Half),
        }
    }
}

impl RunSettings {
    /// The configured device, checked to exist; on CUDA, EDM's settings are
    /// applied (TF32 as `allow_tf32` says, cuDNN autotuning on).
    pub fn resolve_device(&self) -> Result<tch::Device> {
        let device = self.device.resolve()?;
        if device.is_cuda() {
            difi_torch_ext::configure_cuda(self.allow_tf32)
                .map_err(|e| Error::Plugin { plugin: "libtorch".into(), message: e.to_string() })?;
        }
        Ok(device)
    }
}

/// How long to train and how often to report and save.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Schedule {
    /// Samples per iteration.
    pub batch_size: i64,
    /// Training length, in thousands of samples.
    pub total_kimg: f64,
    /// One line of `stats.jsonl` per tick.
    pub tick_kimg: f64,
    /// Snapshot every this many ticks (0: only at the end and on Ctrl-C).
    pub snapshot_ticks: u64,
    /// Half-life of the EMA of the parts that keep one, in kimg (EDM's and
    /// Diff-Instruct's default 500).
    pub ema_halflife_kimg: f64,
    /// EMA ramp-up (EDM): the half-life is at most this fraction of the kimg
    /// done so far (default 0.05, as EDM and Diff-Instruct).
    pub ema_rampup_ratio: Option<f64>,
    /// Stop with an error after this many consecutive iterations with a non-finite loss.
    pub max_nonfinite_iters: u64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            batch_size: 128,
            total_kimg: 1000.0,
            tick_kimg: 10.0,
            snapshot_ticks: 10,
            ema_halflife_kimg: 500.0,
            ema_rampup_ratio: Some(0.05),
            max_nonfinite_iters: 10,
        }
    }
}

/// Metrics of the evaluated network at every snapshot, appended to `metrics.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `fid50k_full` (FID of 50k generated images against the full dataset),
    /// `pr50k3_full` (precision/recall, k = 3); any number of thousands.
    pub list: Vec<Metric>,
    /// `inception` (NVIDIA's Inception-v3 TorchScript, located by the
    /// `DIFI_INCEPTION` variable or `inception_path`), `fmnist-classifier`
    /// (a proxy), or the path of a TorchScript detector.
    pub detector: DetectorSpec,
    /// Path of `inception-2015-12-05.pt` (else `DIFI_INCEPTION`).
    pub inception_path: Option<PathBuf>,
    /// Reference statistics `.npz` (`mu`, `sigma`); default: computed from
    /// the dataset (all images, no flips) and cached in the run directory.
    pub reference: Option<PathBuf>,
    /// Images per detector batch.
    pub batch_size: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            list: Vec::new(),
            detector: DetectorSpec::default(),
            inception_path: None,
            reference: None,
            batch_size: 250,
        }
    }
}

/// The algorithm a config names (`algorithm: "…"`), read without decoding
/// the rest; configs that name none are taken as teacher training when they
/// have a `network`, else as distillation.
pub fn algorithm_of(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let tree = ron_tree::parse(&text, &[])?;
    Ok(match tree.get("algorithm").and_then(|v| v.as_str()) {
        Some(name) => name.to_string(),
        None if tree.get("network").is_some() => "edm-teacher".to_string(),
        None => "diff-instruct".to_string(),
    })
}

/// A whole run: the runner's settings and algorithm `A`'s section.
#[derive(Clone, Debug)]
pub struct RunConfig<A> {
    /// Seed, device, dataset, optimisers, schedule, metrics.
    pub run: RunSettings,
    /// The algorithm's networks and hyper-parameters.
    pub algorithm: A,
}

impl<A: Algorithm> RunConfig<A> {
    /// Reads a config file and applies `--set PATH=VALUE` overrides.
    /// Relative paths in it start from the file's directory.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut config = Self::parse(&text, overrides)?;
        if config.run.base_dir.is_none() {
            let dir = path.parent().unwrap_or(Path::new("."));
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            config.run.base_dir = Some(std::path::absolute(dir).map_err(|e| Error::io(dir, e))?);
        }
        Ok(config)
    }

    /// Parses config text and applies `--set PATH=VALUE` overrides.
    pub fn parse(text: &str, overrides: &[String]) -> Result<Self> {
        let tree = ron_tree::parse(text, overrides)?;
        check_version(&tree)?;
        let Params::Object(mut fields) = tree else {
            return Err(Error::config("", "a config is a struct: `(version: 1, …)`"));
        };
        let mut run = serde_json::Map::new();
        for key in RUN_KEYS {
            if let Some(value) = fields.remove(key) {
                run.insert(key.to_string(), value);
            }
        }
        let run: RunSettings = decode_params(&Params::Object(run))?;
        if let Some(name) = run.algorithm.as_deref()
            && name != A::NAME
        {
            return Err(Error::config(
                "algorithm",
                format!(
                    "this config is for `{name}`, not `{}` (a `{name}` run is resumed by its own command)",
                    A::NAME
                ),
            ));
        }
        let algorithm: A = decode_params(&Params::Object(fields)).map_err(|err| match err {
            Error::Config { key, message } if message.starts_with("unknown field") => Error::Config {
                key,
                message: format!("{message}, or one of the run settings `{}`", RUN_KEYS.join("`, `")),
            },
            other => other,
        })?;
        Ok(RunConfig { run, algorithm })
    }

    /// Directory that relative paths in the config start from.
    pub fn base_dir(&self) -> &Path {
        self.run.base_dir.as_deref().unwrap_or(Path::new("."))
    }

    /// Resolves a path written in the config.
    pub fn path(&self, path: &Path) -> PathBuf {
        self.base_dir().join(path)
    }

    /// What building the algorithm's networks on `device` needs.
    pub fn build_env<'a>(
        &'a self,
        registry: &'a Registry,
        device: tch::Device,
        dataset: Option<Rc<dyn Dataset>>,
    ) -> BuildEnv<'a> {
        BuildEnv {
            registry,
            device,
            seed: self.run.seed,
            base_dir: self.base_dir(),
            dataset,
            batch_size: self.run.schedule.batch_size,
            checkpoint_activations: &self.run.checkpoint_activations,
        }
    }

    /// The config's dataset, if it names one.
    pub fn dataset(&self, registry: &Registry) -> Result<Option<Rc<dyn Dataset>>> {
        self.run.dataset.as_ref().map(|component| build_dataset(component, registry, self.base_dir())).transpose()
    }

    /// A registry with the built-in plugins and the runtime libraries that
    /// the config names.
    pub fn registry(&self) -> Result<Registry> {
        let mut registry = Registry::with_builtins()?;
        for path in &self.run.plugins {
            registry.load_library(&self.path(path))?;
        }
        Ok(registry)
    }

    /// Checks every component against the registry and fills in all
    /// defaults. The result is what a run records as its config.
    pub fn resolve(&self, registry: &Registry) -> Result<Self> {
        let mut resolved = self.clone();
        resolved.run.algorithm = Some(A::NAME.to_string());
        resolved.run.base_dir = Some(self.base_dir().to_path_buf());
        resolved.run.plugins = self.run.plugins.iter().map(|p| self.path(p)).collect();
        let ctx = ResolveContext { base_dir: self.base_dir() };
        resolved.algorithm.resolve(registry, &ctx)?;
        if let Some(dataset) = resolved.run.dataset.as_mut() {
            dataset.resolve_plugin(registry, &ctx, Role::Dataset, "dataset")?;
        }
        let trained = resolved.algorithm.trained_parts();
        for name in resolved.run.optim.keys() {
            if !trained.contains(&name.as_str()) {
                return Err(Error::config(
                    format!("optim.{name}"),
                    format!("{} trains no part named `{name}` (it trains {})", A::NAME, trained.join(", ")),
                ));
            }
        }
        for name in trained {
            resolved.run.optim.entry(name.to_string()).or_default();
        }
        resolved.validate()?;
        Ok(resolved)
    }

    fn validate(&self) -> Result<()> {
        let s = &self.run.schedule;
        let positive = [
            ("schedule.total_kimg", s.total_kimg),
            ("schedule.tick_kimg", s.tick_kimg),
            ("schedule.batch_size", s.batch_size as f64),
        ];
        for (key, value) in positive {
            Error::ensure_positive(key, value)?;
        }
        if s.ema_halflife_kimg.is_nan() || s.ema_halflife_kimg < 0.0 {
            return Err(Error::config("schedule.ema_halflife_kimg", "must not be negative"));
        }
        if let Some(ratio) = s.ema_rampup_ratio
            && !(ratio > 0.0 && ratio.is_finite())
        {
            return Err(Error::config("schedule.ema_rampup_ratio", format!("must be positive, got {ratio}")));
        }
        for (name, adam) in &self.run.optim {
            adam.validate().map_err(|e| e.under(&format!("optim.{name}")))?;
            if self.run.cuda_graph && !adam.fused {
                return Err(Error::config(
                    format!("optim.{name}.fused"),
                    "cuda_graph needs the fused Adam step (fused: true) for every trained part",
                ));
            }
        }
        if self.run.cuda_graph && !self.run.checkpoint_activations.is_empty() {
            return Err(Error::config(
                "cuda_graph",
                "cannot be combined with checkpoint_activations (the recomputation saves and restores \
                 random states on the host)",
            ));
        }
        let metrics = &self.run.metrics;
        if !metrics.list.is_empty() && metrics.reference.is_none() && self.run.dataset.is_none() {
            return Err(Error::config(
                "metrics.reference",
                "metrics need reference statistics or a dataset to compute them from",
            ));
        }
        if metrics.list.iter().any(Metric::needs_real_images) && self.run.dataset.is_none() {
            return Err(Error::config("metrics.list", "precision/recall needs real images: give the config a dataset"));
        }
        self.algorithm.validate()
    }

    /// The config as one tree: the runner's leading settings, the
    /// algorithm's section, then the runner's dataset, optimisers, schedule
    /// and metrics.
    pub fn to_tree(&self) -> Params {
        let run = encode_params(&self.run).expect("run settings always encode");
        let algorithm = encode_params(&self.algorithm).expect("an algorithm config always encodes");
        let mut tree = serde_json::Map::new();
        let (Params::Object(run), Params::Object(algorithm)) = (run, algorithm) else {
            unreachable!("both are structs")
        };
        for key in &RUN_KEYS[..HEAD_KEYS] {
            if let Some(value) = run.get(*key) {
                tree.insert(key.to_string(), value.clone());
            }
        }
        tree.extend(algorithm);
        for key in &RUN_KEYS[HEAD_KEYS..] {
            if let Some(value) = run.get(*key) {
                tree.insert(key.to_string(), value.clone());
            }
        }
        Params::Object(tree)
    }

    /// The config as RON text, as `difi check` prints it and runs record it.
    pub fn to_ron(&self) -> String {
        ron_tree::to_ron(&self.to_tree())
    }
}

fn check_version(tree: &Params) -> Result<()> {
    match tree.get("version") {
        Some(v) if v.as_u64() == Some(CONFIG_VERSION) => Ok(()),
        Some(v) => Err(Error::config(
            "version",
            format!("config version {v} is not supported; this difi reads version {CONFIG_VERSION}"),
        )),
        None => Err(Error::config(
            "version",
            format!("missing; write `version: {CONFIG_VERSION}` at the top of the config"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithms::diff_instruct::DiffInstruct;

    const MINIMAL: &str = r#"(
        version: 1,
        teacher: (plugin: "t", params: (means: [[1.0, 2]])),
        generator: (plugin: "g"),
        fake_score: (init_from: "teacher"),
    )"#;

    type Config = RunConfig<DiffInstruct>;

    #[test]
    fn splits_run_settings_from_the_algorithm_and_fills_defaults() {
        let config = Config::parse(MINIMAL, &["device=cuda:1".into(), "schedule.total_kimg=2".into()]).unwrap();
        assert_eq!(config.run.device, DeviceSpec::Cuda(1));
        assert_eq!(config.run.schedule.total_kimg, 2.0);
        assert_eq!(config.algorithm.divergence.plugin.as_deref(), Some("ikl"));
        assert_eq!(config.algorithm.teacher.params["means"][0][1], serde_json::json!(2));
    }

    #[test]
    fn unknown_fields_are_named_with_the_settings_that_exist() {
        let err = Config::parse(MINIMAL, &["schedule.totl_kimg=2".to_string()]).unwrap_err().to_string();
        assert!(err.contains("schedule") && err.contains("totl_kimg"), "{err}");
        let err = Config::parse(MINIMAL, &["nonsense=1".to_string()]).unwrap_err().to_string();
        assert!(err.contains("nonsense") && err.contains("teacher") && err.contains("schedule"), "{err}");
    }

    #[test]
    fn version_is_required_and_checked() {
        let err = Config::parse(&MINIMAL.replace("version: 1,", ""), &[]).unwrap_err();
        assert!(err.to_string().contains("version"), "{err}");
        let err = Config::parse(&MINIMAL.replace("version: 1", "version: 7"), &[]).unwrap_err();
        assert!(err.to_string().contains("version 7"), "{err}");
    }

    #[test]
    fn printed_config_reads_back_identically_in_reading_order() {
        let config = Config::parse(MINIMAL, &["optim.generator.lr=1e-3".into()]).unwrap();
        let text = config.to_ron();
        let again = Config::parse(&text, &[]).unwrap();
        assert_eq!(text, again.to_ron());
        let at = |key: &str| text.find(&format!("\n    {key}:")).unwrap_or_else(|| panic!("{key} in {text}"));
        assert!(at("version") < at("teacher") && at("teacher") < at("optim") && at("optim") < at("schedule"));
    }

    #[test]
    fn typed_settings_refuse_bad_values_by_name() {
        let err = Config::parse(MINIMAL, &["device=tpu".into()]).unwrap_err().to_string();
        assert!(err.contains("device") && err.contains("tpu"), "{err}");
        let err = Config::parse(MINIMAL, &["metrics.list=[\"fid50\"]".into()]).unwrap_err().to_string();
        assert!(err.contains("metrics.list") && err.contains("fid50"), "{err}");
        let err = Config::parse(MINIMAL, &["generator.init_from=\"fake\"".into()]).unwrap_err().to_string();
        assert!(err.contains("generator.init_from") && err.contains("teacher"), "{err}");
    }
}
