//! Plugin parameters: an untyped tree as read from a config, decoded by each
//! plugin into its own typed struct (with defaults, unknown fields refused).

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Untyped parameters as read from a config (a JSON-like tree).
pub type Params = serde_json::Value;

/// Decodes typed params; absent params (`null`) decode as `{}` so every field
/// takes its default. Errors name the offending key relative to `params`.
pub fn decode_params<P: DeserializeOwned>(params: &Params) -> Result<P> {
    let empty = Params::Object(Default::default());
    let params = if params.is_null() { &empty } else { params };
    serde_path_to_error::deserialize(params).map_err(|err| {
        let key = err.path().to_string();
        let key = if key == "." { String::new() } else { key };
        Error::config(key, err.into_inner().to_string())
    })
}

/// Decodes params as `P` (defaults filled in) and encodes them again: the
/// resolved form of params that need nothing but their defaults.
pub fn resolve_params<P: DeserializeOwned + Serialize>(params: &Params) -> Result<Params> {
    let typed: P = decode_params(params)?;
    encode_params(&typed)
}

/// Encodes typed params as a tree.
pub fn encode_params<P: Serialize>(params: &P) -> Result<Params> {
    serde_json::to_value(params).map_err(|err| Error::config("", err.to_string()))
}
