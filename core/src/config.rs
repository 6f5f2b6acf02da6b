//! The RON run config: one file composes teacher, generator, fake score,
//! divergence, optimisers and schedule.
//!
//! Reading is two-pass (as bevy's asset meta): the file is parsed into an
//! untyped tree, `--set` overrides are applied to the tree, the top level is
//! decoded into [`Config`], and each component's `params` are decoded later by
//! the plugin the component names. Unknown fields are errors at both levels.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::registry::{Kind, Params, Registry, ResolveContext};

/// The config format this difi reads and writes.
pub const CONFIG_VERSION: u64 = 1;

/// A whole distillation run.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Config format version (must be 1).
    pub version: u64,
    /// Free text shown by `difi check`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Seed of every random draw of the run.
    #[serde(default)]
    pub seed: u64,
    /// `auto`, `cpu`, `cuda` or `cuda:N`.
    #[serde(default = "default_device")]
    pub device: String,
    /// Let CUDA compute float32 convolutions and matrix products in TF32
    /// (faster, ~1e-3 relative error); off by default, as in EDM.
    #[serde(default)]
    pub allow_tf32: bool,
    /// Directory that relative paths are relative to (default: the config's own directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_dir: Option<PathBuf>,
    /// Runtime plugin libraries (`.so`) to load before building anything.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PathBuf>,
    /// The pre-trained diffusion model (a score-model plugin), frozen.
    pub teacher: Component,
    /// The one-step generator (a generator plugin); needed to distill.
    #[serde(default, skip_serializing_if = "Component::is_empty")]
    pub generator: Component,
    /// The fake score tracking the generator (a score-model plugin, or
    /// `init_from: "teacher"`); needed to distill.
    #[serde(default, skip_serializing_if = "Component::is_empty")]
    pub fake_score: Component,
    /// The dataset (a dataset plugin): shapes, labels and FID reference
    /// statistics; never part of a loss.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset: Option<Component>,
    /// The divergence whose gradient trains the generator.
    #[serde(default = "default_divergence")]
    pub divergence: Component,
    /// Noise levels of the fake score's denoising loss.
    #[serde(default)]
    pub fake_loss: FakeLoss,
    /// Adam settings per trained network.
    #[serde(default)]
    pub optim: Optim,
    /// Length, batch, ticks, snapshots and EMA.
    #[serde(default)]
    pub schedule: Schedule,
    /// Metrics computed at every snapshot.
    #[serde(default)]
    pub metrics: MetricsConfig,
}

/// Metrics of the generator at every snapshot, appended to `metrics.jsonl`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// `fid50k_full` (FID of 50k generated images against the full dataset),
    /// `pr50k3_full` (precision/recall, k = 3); any number of thousands.
    pub list: Vec<String>,
    /// `inception` (NVIDIA's Inception-v3 TorchScript, located by the
    /// `DIFI_INCEPTION` variable or `inception_path`), `fmnist-classifier`
    /// (a proxy), or the path of a TorchScript detector.
    pub detector: String,
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
            detector: "inception".into(),
            inception_path: None,
            reference: None,
            batch_size: 250,
        }
    }
}

/// A pluggable component: `(plugin: "name", params: (…))`, or
/// `(init_from: "teacher")` to copy the teacher's network and weights.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Registered plugin name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Copy another role's network and weights instead (`"teacher"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<String>,
    /// The plugin's own parameters; every one has a default.
    #[serde(default, skip_serializing_if = "Params::is_null")]
    pub params: Params,
}

impl Component {
    /// Whether nothing is given (the component is absent).
    pub fn is_empty(&self) -> bool {
        self.plugin.is_none() && self.init_from.is_none() && self.params.is_null()
    }

    /// A component built by `plugin` with `params`.
    pub fn plugin(name: &str, params: Params) -> Self {
        Component { plugin: Some(name.to_string()), init_from: None, params }
    }
}

/// Noise levels of the fake score's EDM denoising loss: ln σ ~ N(p_mean, p_std²).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FakeLoss {
    /// Mean of ln σ.
    pub p_mean: f64,
    /// Standard deviation of ln σ.
    pub p_std: f64,
}

impl Default for FakeLoss {
    fn default() -> Self {
        FakeLoss { p_mean: -1.2, p_std: 1.2 }
    }
}

/// Optimiser settings per trained network.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Optim {
    /// The generator's Adam.
    pub generator: Adam,
    /// The fake score's Adam.
    pub fake_score: Adam,
}

/// Adam with learning-rate warm-up and loss scaling. Non-finite gradient
/// entries are zeroed before the update, as EDM does.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Adam {
    /// Learning rate after warm-up.
    pub lr: f64,
    /// (β₁, β₂); the paper uses (0, 0.999).
    pub betas: (f64, f64),
    /// Denominator term.
    pub eps: f64,
    /// Linear learning-rate ramp over this many kimg (0 = none).
    pub warmup_kimg: f64,
    /// Factor on the loss before the backward pass.
    pub loss_scale: f64,
}

impl Default for Adam {
    fn default() -> Self {
        Adam { lr: 1e-5, betas: (0.0, 0.999), eps: 1e-8, warmup_kimg: 0.0, loss_scale: 1.0 }
    }
}

/// How long to train and how often to report and save.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Schedule {
    /// Generator samples per iteration (also the fake score's batch).
    pub batch_size: i64,
    /// Training length, in thousands of generator samples.
    pub total_kimg: f64,
    /// One line of `stats.jsonl` per tick.
    pub tick_kimg: f64,
    /// Snapshot every this many ticks (0: only at the end and on Ctrl-C).
    pub snapshot_ticks: u64,
    /// Fake-score updates before the first generator update.
    pub fake_warmup_iters: u64,
    /// Fake-score updates per generator update.
    pub fake_updates_per_iter: u64,
    /// Half-life of the generator's EMA, in kimg.
    pub ema_halflife_kimg: f64,
    /// EMA ramp-up (EDM): the half-life is at most this fraction of the kimg done so far.
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
            fake_warmup_iters: 0,
            fake_updates_per_iter: 1,
            ema_halflife_kimg: 0.5,
            ema_rampup_ratio: None,
            max_nonfinite_iters: 10,
        }
    }
}

fn default_device() -> String {
    "auto".to_string()
}

fn default_divergence() -> Component {
    Component::plugin("ikl", Params::Null)
}

impl Config {
    /// Reads a config file and applies `--set PATH=VALUE` overrides.
    pub fn load(path: &Path, overrides: &[String]) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut config = Config::parse(&text, overrides)?;
        if config.base_dir.is_none() {
            let dir = path.parent().unwrap_or(Path::new("."));
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            config.base_dir = Some(std::path::absolute(dir).map_err(|e| Error::io(dir, e))?);
        }
        Ok(config)
    }

    /// Parses config text and applies `--set PATH=VALUE` overrides.
    pub fn parse(text: &str, overrides: &[String]) -> Result<Config> {
        let value: ron::Value =
            ron::from_str(text).map_err(|err| Error::config("", format!("not valid RON: {err}")))?;
        let mut tree = ron_to_tree(value, "")?;
        for spec in overrides {
            apply_override(&mut tree, spec)?;
        }
        match tree.get("version") {
            Some(v) if v.as_u64() == Some(CONFIG_VERSION) => {}
            Some(v) => {
                return Err(Error::config(
                    "version",
                    format!("config version {v} is not supported; this difi reads version {CONFIG_VERSION}"),
                ));
            }
            None => {
                return Err(Error::config(
                    "version",
                    format!("missing; write `version: {CONFIG_VERSION}` at the top of the config"),
                ));
            }
        }
        crate::registry::decode_params(&tree)
    }

    /// Directory that relative paths in the config start from.
    pub fn base_dir(&self) -> &Path {
        self.base_dir.as_deref().unwrap_or(Path::new("."))
    }

    /// Resolves a path written in the config.
    pub fn path(&self, path: &Path) -> PathBuf {
        self.base_dir().join(path)
    }

    /// Checks the teacher against the registry and fills in its defaults:
    /// enough to sample the teacher, not to distill.
    pub fn resolve_teacher(&self, registry: &Registry) -> Result<Config> {
        let mut resolved = self.clone();
        resolved.base_dir = Some(self.base_dir().to_path_buf());
        resolved.plugins = self.plugins.iter().map(|p| self.path(p)).collect();
        crate::device::parse_device(&self.device)?;
        let ctx = ResolveContext { base_dir: self.base_dir() };
        resolve_component(registry, &ctx, Kind::ScoreModel, "teacher", &mut resolved.teacher)?;
        if resolved.teacher.init_from.is_some() {
            return Err(Error::config("teacher.init_from", "the teacher cannot be initialised from another role"));
        }
        Ok(resolved)
    }

    /// Checks every component against the registry and fills in all defaults.
    /// The result is what a run records as its config.
    pub fn resolve(&self, registry: &Registry) -> Result<Config> {
        let mut resolved = self.resolve_teacher(registry)?;
        let ctx = ResolveContext { base_dir: self.base_dir() };
        let ctx = &ctx;
        resolve_component(registry, ctx, Kind::Generator, "generator", &mut resolved.generator)?;
        resolve_component(registry, ctx, Kind::ScoreModel, "fake_score", &mut resolved.fake_score)?;
        resolve_component(registry, ctx, Kind::Divergence, "divergence", &mut resolved.divergence)?;
        if let Some(dataset) = resolved.dataset.as_mut() {
            resolve_component(registry, ctx, Kind::Dataset, "dataset", dataset)?;
            if dataset.init_from.is_some() {
                return Err(Error::config("dataset.init_from", "a dataset cannot be initialised from another role"));
            }
        }
        resolved.validate()?;
        Ok(resolved)
    }

    fn validate(&self) -> Result<()> {
        let s = &self.schedule;
        let positive = [
            ("schedule.total_kimg", s.total_kimg),
            ("schedule.tick_kimg", s.tick_kimg),
            ("schedule.batch_size", s.batch_size as f64),
            ("optim.generator.lr", self.optim.generator.lr),
            ("optim.fake_score.lr", self.optim.fake_score.lr),
            ("fake_loss.p_std", self.fake_loss.p_std),
        ];
        for (key, value) in positive {
            if !(value > 0.0 && value.is_finite()) {
                return Err(Error::config(key, format!("must be a positive number, got {value}")));
            }
        }
        if s.ema_halflife_kimg < 0.0 {
            return Err(Error::config("schedule.ema_halflife_kimg", "must not be negative"));
        }
        for name in &self.metrics.list {
            crate::metrics::schedule::Metric::parse(name)?;
        }
        if !self.metrics.list.is_empty() && self.metrics.reference.is_none() && self.dataset.is_none() {
            return Err(Error::config(
                "metrics.reference",
                "metrics need reference statistics or a dataset to compute them from",
            ));
        }
        if s.fake_updates_per_iter == 0 {
            return Err(Error::config("schedule.fake_updates_per_iter", "must be at least 1"));
        }
        for (key, adam) in [("optim.generator", &self.optim.generator), ("optim.fake_score", &self.optim.fake_score)] {
            let (b1, b2) = adam.betas;
            if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
                return Err(Error::config(format!("{key}.betas"), "each beta must lie in [0, 1)"));
            }
        }
        Ok(())
    }

    /// One component as RON text.
    pub fn component_to_ron(component: &Component) -> String {
        let tree = serde_json::to_value(component).expect("a component always serialises");
        let mut out = String::new();
        write_ron(&tree, 0, &mut out);
        out.push('\n');
        out
    }

    /// The config as RON text, as `difi check` prints it and runs record it.
    pub fn to_ron(&self) -> String {
        let tree = serde_json::to_value(self).expect("a config always serialises");
        let mut out = String::new();
        write_ron(&tree, 0, &mut out);
        out.push('\n');
        out
    }
}

fn resolve_component(
    registry: &Registry,
    ctx: &ResolveContext<'_>,
    kind: Kind,
    role: &str,
    component: &mut Component,
) -> Result<()> {
    match (&component.plugin, &component.init_from) {
        (Some(_), Some(_)) => Err(Error::config(role, "give either `plugin` or `init_from`, not both")),
        (None, Some(source)) if source == "teacher" && kind == Kind::ScoreModel => {
            if !component.params.is_null() {
                return Err(Error::config(
                    format!("{role}.params"),
                    "a copy of the teacher takes the teacher's params; remove these",
                ));
            }
            Ok(())
        }
        (None, Some(source)) if source == "teacher" && kind == Kind::Generator => {
            // G(z) = D(σ_init z; σ_init) around a copy of the teacher.
            component.params = crate::registry::resolve_params::<crate::denoiser_generator::DenoiserGeneratorParams>(
                &component.params,
                ctx,
            )
            .map_err(|e| e.under(&format!("{role}.params")))?;
            Ok(())
        }
        (None, Some(source)) => Err(Error::config(
            format!("{role}.init_from"),
            format!("`{source}` is not a role this component can be initialised from (use \"teacher\")"),
        )),
        (None, None) => Err(Error::config(
            role,
            format!("missing `plugin`; registered {kind} plugins: {}", registry.names(kind).join(", ")),
        )),
        (Some(name), None) => {
            let name = name.clone();
            registry.get(kind, &name).map_err(|err| match err {
                Error::UnknownPlugin { available, .. } => Error::config(
                    format!("{role}.plugin"),
                    format!("no {kind} plugin is named `{name}` (registered: {available})"),
                ),
                other => other,
            })?;
            component.params = registry
                .resolve(kind, &name, &component.params, ctx)
                .map_err(|err| err.under(&format!("{role}.params")))?;
            Ok(())
        }
    }
}

/// Converts parsed RON into the untyped tree. RON's bare identifiers (enum
/// variants) do not survive parsing, so they are refused with a hint.
fn ron_to_tree(value: ron::Value, key: &str) -> Result<Params> {
    use ron::Value as R;
    Ok(match value {
        R::Bool(b) => Params::Bool(b),
        R::Char(c) => Params::String(c.to_string()),
        R::String(s) => Params::String(s),
        R::Number(n) => number_to_tree(n, key)?,
        R::Option(None) => Params::Null,
        R::Option(Some(inner)) => ron_to_tree(*inner, key)?,
        R::Seq(items) => Params::Array(
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| ron_to_tree(v, &format!("{key}[{i}]")))
                .collect::<Result<_>>()?,
        ),
        R::Map(map) => {
            let mut object = serde_json::Map::new();
            for (k, v) in map.into_iter() {
                let name = match k {
                    R::String(s) => s,
                    other => {
                        return Err(Error::config(key, format!("map keys must be names or strings, got {other:?}")));
                    }
                };
                let child = if key.is_empty() { name.clone() } else { format!("{key}.{name}") };
                object.insert(name, ron_to_tree(v, &child)?);
            }
            Params::Object(object)
        }
        R::Unit => {
            return Err(Error::config(
                key,
                "bare names and `()` are not values here; write choices as strings (\"sigma2\") and absent values as None",
            ));
        }
        R::Bytes(_) => return Err(Error::config(key, "byte strings are not supported")),
    })
}

#[allow(unreachable_patterns)]
fn number_to_tree(number: ron::Number, key: &str) -> Result<Params> {
    use ron::Number as N;
    let integer = |i: i64| Params::Number(i.into());
    Ok(match number {
        N::I8(i) => integer(i.into()),
        N::I16(i) => integer(i.into()),
        N::I32(i) => integer(i.into()),
        N::I64(i) => integer(i),
        N::U8(u) => integer(u.into()),
        N::U16(u) => integer(u.into()),
        N::U32(u) => integer(u.into()),
        N::U64(u) => Params::Number(u.into()),
        other => {
            let f = other.into_f64();
            Params::Number(
                serde_json::Number::from_f64(f)
                    .ok_or_else(|| Error::config(key, format!("{f} is not a finite number")))?,
            )
        }
    })
}

/// Applies one `PATH=RON_VALUE` override. Path segments are field names or
/// list indices (`teacher.params.means.0`); missing fields are created so
/// defaults can be overridden. A value that is not RON is taken as a string
/// (`--set device=cuda:1`).
pub fn apply_override(tree: &mut Params, spec: &str) -> Result<()> {
    let (path, text) = spec
        .split_once('=')
        .ok_or_else(|| Error::config(spec, "an override is PATH=VALUE, e.g. teacher.params.stds=[0.2,0.2]"))?;
    let path = path.trim();
    if path.is_empty() {
        return Err(Error::config(spec, "the override has an empty path"));
    }
    let value = parse_override_value(text.trim(), path)?;
    let mut node = tree;
    let segments: Vec<&str> = path.split('.').collect();
    for (depth, segment) in segments.iter().enumerate() {
        let here = segments[..=depth].join(".");
        let last = depth + 1 == segments.len();
        if node.is_null() {
            *node = Params::Object(Default::default());
        }
        node = match node {
            Params::Object(map) => {
                if last {
                    map.insert(segment.to_string(), value);
                    return Ok(());
                }
                map.entry(segment.to_string()).or_insert(Params::Null)
            }
            Params::Array(items) => {
                let len = items.len();
                let index: usize = segment
                    .parse()
                    .map_err(|_| Error::config(&here, format!("`{segment}` is not an index into a list of {len}")))?;
                let slot = items
                    .get_mut(index)
                    .ok_or_else(|| Error::config(&here, format!("index {index} is past the end of a list of {len}")))?;
                if last {
                    *slot = value;
                    return Ok(());
                }
                slot
            }
            _ => {
                return Err(Error::config(&here, "cannot descend into a value that is neither a struct nor a list"));
            }
        };
    }
    Ok(())
}

fn parse_override_value(text: &str, path: &str) -> Result<Params> {
    match ron::from_str::<ron::Value>(text) {
        Ok(ron::Value::Unit) if text != "()" => Ok(Params::String(text.to_string())),
        Ok(value) => ron_to_tree(value, path),
        Err(_) if !text.is_empty() && !text.contains(['(', ')', '[', ']', '{', '}', '"', ',']) => {
            Ok(Params::String(text.to_string()))
        }
        Err(err) => Err(Error::config(path, format!("override value `{text}` is not valid RON: {err}"))),
    }
}

/// Writes the tree as RON: structs as `(name: value)`, lists as `[…]`,
/// absent values as `None`.
fn write_ron(value: &Params, indent: usize, out: &mut String) {
    const STEP: usize = 4;
    match value {
        Params::Null => out.push_str("None"),
        Params::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Params::Number(n) => out.push_str(&n.to_string()),
        Params::String(s) => out.push_str(&serde_json::to_string(s).expect("strings serialise")),
        Params::Array(items) => {
            let inline = items.iter().all(|v| !v.is_object()) && {
                let mut probe = String::new();
                for item in items {
                    write_ron(item, 0, &mut probe);
                }
                probe.len() < 80 && !probe.contains('\n')
            };
            if inline {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    write_ron(item, indent, out);
                }
                out.push(']');
            } else {
                out.push_str("[\n");
                for item in items {
                    out.push_str(&" ".repeat(indent + STEP));
                    write_ron(item, indent + STEP, out);
                    out.push_str(",\n");
                }
                out.push_str(&" ".repeat(indent));
                out.push(']');
            }
        }
        Params::Object(map) => {
            if map.is_empty() {
                out.push_str("()");
                return;
            }
            let identifiers = map.keys().all(|k| is_identifier(k));
            out.push_str(if identifiers { "(\n" } else { "{\n" });
            for (key, item) in map {
                out.push_str(&" ".repeat(indent + STEP));
                if identifiers {
                    out.push_str(key);
                } else {
                    out.push_str(&serde_json::to_string(key).expect("strings serialise"));
                }
                out.push_str(": ");
                write_ron(item, indent + STEP, out);
                out.push_str(",\n");
            }
            out.push_str(&" ".repeat(indent));
            out.push(if identifiers { ')' } else { '}' });
        }
    }
}

fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"(
        version: 1,
        teacher: (plugin: "t", params: (means: [[1.0, 2]], weights: Some([0.5]))),
        generator: (plugin: "g"),
        fake_score: (init_from: "teacher"),
    )"#;

    #[test]
    fn parses_and_fills_top_level_defaults() {
        let config = Config::parse(MINIMAL, &[]).unwrap();
        assert_eq!(config.device, "auto");
        assert_eq!(config.divergence.plugin.as_deref(), Some("ikl"));
        assert_eq!(config.optim.generator.betas, (0.0, 0.999));
        assert_eq!(config.teacher.params["means"][0][1], serde_json::json!(2));
        assert_eq!(config.teacher.params["weights"][0], serde_json::json!(0.5));
    }

    #[test]
    fn overrides_replace_values_and_whole_components() {
        let overrides = [
            "teacher.params.means.0=[3.0, 4.0]".to_string(),
            "schedule.total_kimg=2".to_string(),
            "device=cuda:1".to_string(),
            r#"divergence=(plugin: "sid")"#.to_string(),
        ];
        let config = Config::parse(MINIMAL, &overrides).unwrap();
        assert_eq!(config.teacher.params["means"][0], serde_json::json!([3.0, 4.0]));
        assert_eq!(config.schedule.total_kimg, 2.0);
        assert_eq!(config.device, "cuda:1");
        assert_eq!(config.divergence.plugin.as_deref(), Some("sid"));
        assert!(config.divergence.params.is_null());
    }

    #[test]
    fn unknown_fields_are_named() {
        let err = Config::parse(MINIMAL, &["schedule.totl_kimg=2".to_string()]).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("schedule") && text.contains("totl_kimg"), "{text}");
        let err = Config::parse(MINIMAL, &["nonsense=1".to_string()]).unwrap_err();
        assert!(err.to_string().contains("nonsense"), "{err}");
    }

    #[test]
    fn version_is_required_and_checked() {
        let err = Config::parse(&MINIMAL.replace("version: 1,", ""), &[]).unwrap_err();
        assert!(err.to_string().contains("version"), "{err}");
        let err = Config::parse(&MINIMAL.replace("version: 1", "version: 7"), &[]).unwrap_err();
        assert!(err.to_string().contains("version 7"), "{err}");
    }

    #[test]
    fn bare_identifiers_are_refused_with_a_hint() {
        let err = Config::parse(MINIMAL, &["divergence.params.weighting=\"unit\"".into()]);
        assert!(err.is_ok());
        let text = MINIMAL.replace("generator: (plugin: \"g\")", "generator: (plugin: \"g\", params: (kind: Relu))");
        let err = Config::parse(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("generator.params.kind") && err.contains("strings"), "{err}");
    }

    #[test]
    fn printed_config_reads_back_identically() {
        let config = Config::parse(MINIMAL, &[]).unwrap();
        let text = config.to_ron();
        let again = Config::parse(&text, &[]).unwrap();
        assert_eq!(text, again.to_ron());
        assert!(text.contains("betas: [0.0, 0.999]"), "{text}");
    }

    #[test]
    fn bad_override_syntax_is_explained() {
        let err = Config::parse(MINIMAL, &["seed".to_string()]).unwrap_err();
        assert!(err.to_string().contains("PATH=VALUE"), "{err}");
        let err = Config::parse(MINIMAL, &["teacher.params.means.9=[1.0]".to_string()]).unwrap_err();
        assert!(err.to_string().contains("past the end"), "{err}");
    }
}
