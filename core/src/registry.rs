//! Named factories for every pluggable role.
//!
//! Crates linked into the binary register with [`register_plugin!`] (through
//! `inventory`); runtime plugins add theirs with
//! [`Registry::load_library`](crate::plugin_host). Each factory decodes its own
//! typed parameters: a config names a plugin, then its params are decoded by
//! that plugin's type, with defaults, and unknown fields are errors.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tch::Device;

use crate::error::{Error, Result};
use crate::params::Params;
pub use crate::role::Role;
use crate::traits::{Dataset, Divergence, Generator, ScoreModel};

/// What a factory may use while building: the device, the teacher (for shapes,
/// labels and σ_data) and where relative paths start.
pub struct BuildContext<'a> {
    /// Where the component's tensors live.
    pub device: Device,
    /// The teacher, once built (absent while building the teacher itself).
    pub teacher: Option<&'a dyn ScoreModel>,
    /// Directory that relative paths in params are relative to.
    pub base_dir: &'a Path,
}

impl<'a> BuildContext<'a> {
    /// The teacher, or an error saying that this plugin needs one.
    pub fn teacher(&self, plugin: &str) -> Result<&'a dyn ScoreModel> {
        self.teacher.ok_or_else(|| Error::Plugin {
            plugin: plugin.to_string(),
            message: "needs a teacher to take its shapes from, but none was built yet".into(),
        })
    }
}

/// What a plugin may use while resolving its params: where relative paths start.
pub struct ResolveContext<'a> {
    /// Directory that relative paths in params are relative to.
    pub base_dir: &'a Path,
}

type BuildFn<T> = fn(&Params, &BuildContext<'_>) -> Result<Box<T>>;

/// The typed builder of a statically registered plugin.
pub enum StaticBuild {
    ScoreModel(BuildFn<dyn ScoreModel>),
    Generator(BuildFn<dyn Generator>),
    Divergence(BuildFn<dyn Divergence>),
    Dataset(BuildFn<dyn Dataset>),
}

/// One plugin compiled into the binary; submitted with [`register_plugin!`].
pub struct Registration {
    /// Name used in configs (`plugin: "gmm"`).
    pub name: &'static str,
    /// The crate that registered it.
    pub origin: &'static str,
    /// Decodes params with defaults and re-encodes them (the resolved form).
    pub resolve: fn(&Params, &ResolveContext<'_>) -> Result<Params>,
    /// Builds the component.
    pub build: StaticBuild,
}

inventory::collect!(Registration);

type DynBuild<T> = Box<dyn Fn(&Params, &BuildContext<'_>) -> Result<Box<T>>>;

/// Decodes params with defaults filled in and encodes them again.
pub type ResolveFn = Box<dyn Fn(&Params, &ResolveContext<'_>) -> Result<Params>>;

/// How an entry builds its component.
pub enum Builder {
    ScoreModel(DynBuild<dyn ScoreModel>),
    Generator(DynBuild<dyn Generator>),
    Divergence(DynBuild<dyn Divergence>),
    Dataset(DynBuild<dyn Dataset>),
}

impl Builder {
    fn role(&self) -> Role {
        match self {
            Builder::ScoreModel(_) => Role::ScoreModel,
            Builder::Generator(_) => Role::Generator,
            Builder::Divergence(_) => Role::Divergence,
            Builder::Dataset(_) => Role::Dataset,
        }
    }
}

/// A registered plugin.
pub struct Entry {
    /// Name used in configs.
    pub name: String,
    /// Where it came from: a crate name, or the path of a runtime library.
    pub origin: String,
    /// Decodes and re-encodes params with defaults filled in.
    pub resolve: ResolveFn,
    /// Builds the component.
    pub builder: Builder,
}

impl Entry {
    /// The role this plugin fills.
    pub fn role(&self) -> Role {
        self.builder.role()
    }
}

/// Every plugin known to this process, by role and name.
#[derive(Default)]
pub struct Registry {
    entries: BTreeMap<(Role, String), Entry>,
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A registry holding every plugin compiled into the binary.
    pub fn with_builtins() -> Result<Self> {
        let mut registry = Self::empty();
        for registration in inventory::iter::<Registration> {
            registry.insert(Entry::from_static(registration))?;
        }
        Ok(registry)
    }

    /// Adds a plugin; a name already taken for that role is an error.
    pub fn insert(&mut self, entry: Entry) -> Result<()> {
        let key = (entry.role(), entry.name.clone());
        if let Some(existing) = self.entries.get(&key) {
            return Err(Error::DuplicatePlugin {
                role: key.0,
                name: key.1,
                first: existing.origin.clone(),
                second: entry.origin,
            });
        }
        self.entries.insert(key, entry);
        Ok(())
    }

    /// All plugins, ordered by role and name.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values()
    }

    /// The plugin `name` of `role`, or an error listing those that exist.
    pub fn get(&self, role: Role, name: &str) -> Result<&Entry> {
        self.entries.get(&(role, name.to_string())).ok_or_else(|| Error::UnknownPlugin {
            role,
            name: name.to_string(),
            available: self.names(role).join(", "),
        })
    }

    /// Names registered for `role`.
    pub fn names(&self, role: Role) -> Vec<String> {
        self.entries.keys().filter(|(r, _)| *r == role).map(|(_, name)| name.clone()).collect()
    }

    /// Decodes `params` for plugin `name` and returns them with defaults filled in.
    pub fn resolve(&self, role: Role, name: &str, params: &Params, ctx: &ResolveContext<'_>) -> Result<Params> {
        (self.get(role, name)?.resolve)(params, ctx)
    }

    /// Builds score model `name`.
    pub fn build_score_model(
        &self,
        name: &str,
        params: &Params,
        ctx: &BuildContext<'_>,
    ) -> Result<Box<dyn ScoreModel>> {
        match &self.get(Role::ScoreModel, name)?.builder {
            Builder::ScoreModel(build) => build(params, ctx),
            _ => unreachable!("entries are keyed by their role"),
        }
    }

    /// Builds generator `name`.
    pub fn build_generator(&self, name: &str, params: &Params, ctx: &BuildContext<'_>) -> Result<Box<dyn Generator>> {
        match &self.get(Role::Generator, name)?.builder {
            Builder::Generator(build) => build(params, ctx),
            _ => unreachable!("entries are keyed by their role"),
        }
    }

    /// Builds divergence `name`.
    pub fn build_divergence(&self, name: &str, params: &Params, ctx: &BuildContext<'_>) -> Result<Box<dyn Divergence>> {
        match &self.get(Role::Divergence, name)?.builder {
            Builder::Divergence(build) => build(params, ctx),
            _ => unreachable!("entries are keyed by their role"),
        }
    }

    /// Builds dataset `name`.
    pub fn build_dataset(&self, name: &str, params: &Params, ctx: &BuildContext<'_>) -> Result<Box<dyn Dataset>> {
        match &self.get(Role::Dataset, name)?.builder {
            Builder::Dataset(build) => build(params, ctx),
            _ => unreachable!("entries are keyed by their role"),
        }
    }
}

impl Entry {
    fn from_static(registration: &'static Registration) -> Self {
        let builder = match registration.build {
            StaticBuild::ScoreModel(f) => Builder::ScoreModel(Box::new(f)),
            StaticBuild::Generator(f) => Builder::Generator(Box::new(f)),
            StaticBuild::Divergence(f) => Builder::Divergence(Box::new(f)),
            StaticBuild::Dataset(f) => Builder::Dataset(Box::new(f)),
        };
        Entry {
            name: registration.name.to_string(),
            origin: registration.origin.to_string(),
            resolve: Box::new(registration.resolve),
            builder,
        }
    }
}

/// The resolution of params that need nothing but their defaults: decoded
/// as `P` and encoded again.
pub fn resolve_defaults<P: DeserializeOwned + Serialize>(params: &Params, _ctx: &ResolveContext<'_>) -> Result<Params> {
    crate::params::resolve_params::<P>(params)
}

/// Registers a plugin compiled into the binary:
///
/// ```text
/// difi_core::register_plugin!(ScoreModel, "gmm", GmmParams, |params, ctx| {
///     Ok(Box::new(Gmm::new(params, ctx.device)?))
/// });
/// ```
///
/// The first argument is the trait (`ScoreModel`, `Generator`, `Divergence`,
/// `Dataset`), then the name, the params type (`Deserialize + Serialize`,
/// with defaults) and a non-capturing builder. Params that need more than
/// their defaults to be resolved (paths, files to read) add
/// `resolve = fn(&Params, &ResolveContext) -> Result<Params>`.
#[macro_export]
macro_rules! register_plugin {
    ($role:ident, $name:literal, $params:ty, $build:expr) => {
        $crate::register_plugin!(
            $role,
            $name,
            $params,
            $build,
            resolve = $crate::registry::resolve_defaults::<$params>
        );
    };
    ($role:ident, $name:literal, $params:ty, $build:expr, resolve = $resolve:expr) => {
        const _: () = {
            fn __difi_build(
                params: &$crate::params::Params,
                ctx: &$crate::registry::BuildContext<'_>,
            ) -> $crate::Result<::std::boxed::Box<dyn $crate::traits::$role>> {
                let params: $params = $crate::params::decode_params(params)?;
                let build: fn(
                    $params,
                    &$crate::registry::BuildContext<'_>,
                ) -> $crate::Result<::std::boxed::Box<dyn $crate::traits::$role>> = $build;
                build(params, ctx)
            }
            $crate::inventory::submit! {
                $crate::registry::Registration {
                    name: $name,
                    origin: env!("CARGO_PKG_NAME"),
                    resolve: $resolve,
                    build: $crate::registry::StaticBuild::$role(__difi_build),
                }
            }
        };
    };
}
