//! A run config: parsed, then resolved against the built-in plugins, as
//! `difi check` does (without building networks). Runtime plugin libraries a
//! config names are never loaded: that would run their code.

use std::path::Path;

use difi_core::registry::Registry;
use difi_train::{Algorithm, DiffInstruct, EdmTeacherTraining, RunConfig};

use super::{Verdict, scratch_dir};

thread_local! {
    static REGISTRY: Option<Registry> = {
        difi_zoo::link();
        difi_divergences::link();
        difi_datasets::link();
        Registry::with_builtins().ok()
    };
}

fn check<A: Algorithm>(text: &str, base_dir: &Path) -> Verdict {
    let mut config = match RunConfig::<A>::parse(text, &[]) {
        Ok(config) => config,
        Err(err) => return Verdict::of::<()>(Err(err)),
    };
    config.run.base_dir = Some(base_dir.to_path_buf());
    REGISTRY.with(|registry| match registry {
        Some(registry) => Verdict::of(config.resolve(registry)),
        None => Verdict::Suspicious("the built-in plugin registry does not build".into()),
    })
}

pub fn run(data: &[u8]) -> Verdict {
    let Ok(text) = std::str::from_utf8(data) else {
        return Verdict::Refused("not UTF-8".into());
    };
    check::<DiffInstruct>(text, scratch_dir()).and(check::<EdmTeacherTraining>(text, scratch_dir()))
}
