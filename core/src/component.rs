//! A pluggable component as configs write it: `(plugin: "name", params: (…))`,
//! or `(init_from: "teacher")` for a trainable copy of another role's network.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::params::Params;
use crate::registry::{Registry, ResolveContext, Role};

/// A component of a run.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// Registered plugin name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// Copy another role's network and weights instead of naming a plugin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_from: Option<InitFrom>,
    /// The plugin's own parameters; every one has a default.
    #[serde(default, skip_serializing_if = "Params::is_null")]
    pub params: Params,
}

/// The roles a component can be initialised from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InitFrom {
    /// The teacher's network and weights.
    Teacher,
}

impl Component {
    /// A component built by `plugin` with `params`.
    pub fn plugin(name: &str, params: Params) -> Self {
        Component { plugin: Some(name.to_string()), init_from: None, params }
    }

    /// Whether nothing is given (the component is absent).
    pub fn is_empty(&self) -> bool {
        self.plugin.is_none() && self.init_from.is_none() && self.params.is_null()
    }

    /// The plugin's name, or an error at `key` (the component's place in the config).
    pub fn plugin_name(&self, key: &str) -> Result<&str> {
        self.plugin.as_deref().ok_or_else(|| Error::config(key, "missing `plugin`"))
    }

    /// Checks a `(plugin: …)` component against the registry and fills in
    /// its params' defaults. `key` places errors (`teacher` → `teacher.params.stds`).
    pub fn resolve_plugin(
        &mut self,
        registry: &Registry,
        ctx: &ResolveContext<'_>,
        role: Role,
        key: &str,
    ) -> Result<()> {
        let name = match (&self.plugin, &self.init_from) {
            (Some(_), Some(_)) => return Err(Error::config(key, "give either `plugin` or `init_from`, not both")),
            (None, Some(_)) => {
                return Err(Error::config(
                    format!("{key}.init_from"),
                    "this component cannot be initialised from another role",
                ));
            }
            (None, None) => {
                return Err(Error::config(
                    key,
                    format!("missing `plugin`; registered {role} plugins: {}", registry.names(role).join(", ")),
                ));
            }
            (Some(name), None) => name.clone(),
        };
        registry.get(role, &name).map_err(|err| match err {
            Error::UnknownPlugin { available, .. } => Error::config(
                format!("{key}.plugin"),
                format!("no {role} plugin is named `{name}` (registered: {available})"),
            ),
            other => other,
        })?;
        self.params =
            registry.resolve(role, &name, &self.params, ctx).map_err(|err| err.under(&format!("{key}.params")))?;
        Ok(())
    }
}
