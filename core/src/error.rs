//! The one error type of difi-core and the libraries built on it. Variants carry the names a user needs to
//! find the problem: the config key, the file, the plugin, the tensor.

use std::path::PathBuf;

use crate::role::Role;

/// Errors of difi-core and of the plugins built on it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A libtorch call failed; `context` says which step. Shown without
    /// libtorch's C++ backtrace (`error` keeps it, for `{:?}`).
    #[error("{context}: {}", torch_summary(error))]
    Torch { context: String, error: tch::TchError },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A config value is missing, malformed or out of range. `key` is the
    /// dotted path in the config (`teacher.params.stds`).
    #[error("config{}: {message}", if key.is_empty() { String::new() } else { format!(" `{key}`") })]
    Config { key: String, message: String },
    /// No plugin of this kind has this name.
    #[error("unknown {role} plugin `{name}` (registered: {available})")]
    UnknownPlugin { role: Role, name: String, available: String },
    /// Two plugins claim the same name.
    #[error("{role} plugin `{name}` is registered twice: by {first} and by {second}")]
    DuplicatePlugin { role: Role, name: String, first: String, second: String },
    /// A runtime plugin library was refused or failed.
    #[error("plugin library {}: {message}", path.display())]
    PluginLibrary { path: PathBuf, message: String },
    /// A checkpoint or snapshot is missing, incomplete or does not match the network.
    #[error("checkpoint {}: {message}", path.display())]
    Checkpoint { path: PathBuf, message: String },
    /// A tensor has the wrong shape.
    #[error("{what}: expected shape {expected:?}, got {actual:?}")]
    Shape { what: String, expected: Vec<i64>, actual: Vec<i64> },
    /// Training produced NaN or infinity and could not recover.
    #[error("{what} is not finite at iteration {iteration} ({detail})")]
    NonFinite { what: String, iteration: u64, detail: String },
    /// A plugin reported a failure in its own words.
    #[error("{plugin}: {message}")]
    Plugin { plugin: String, message: String },
}

/// A value that does not parse (a device or metric name): the message says
/// what is allowed. Configs report it under the key that holds the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

impl From<InvalidValue> for Error {
    fn from(err: InvalidValue) -> Self {
        Error::config("", err.0)
    }
}

/// Result with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A config error at `key`.
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config { key: key.into(), message: message.into() }
    }

    /// `Ok` when `value` is a finite number above zero, else a config error
    /// at `key` that shows the value.
    pub fn ensure_positive(key: &str, value: f64) -> Result<()> {
        if value > 0.0 && value.is_finite() {
            Ok(())
        } else {
            Err(Error::config(key, format!("must be a positive number, got {value}")))
        }
    }

    /// An I/O error on `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    /// Places a config error's key under `prefix`, so an error a plugin
    /// reports for `stds` reads `teacher.params.stds`.
    pub fn under(self, prefix: &str) -> Self {
        match self {
            Error::Config { key, message } => Error::Config {
                key: match (prefix.is_empty(), key.is_empty()) {
                    (true, _) => key,
                    (false, true) => prefix.to_string(),
                    (false, false) => format!("{prefix}.{key}"),
                },
                message,
            },
            other => other,
        }
    }

    /// A checkpoint error on `path`.
    pub fn checkpoint(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Checkpoint { path: path.into(), message: message.into() }
    }
}

/// Adds the step that failed to a libtorch error.
pub trait TorchContext<T> {
    /// Wraps a `TchError` into [`Error::Torch`] with `context`.
    fn ctx(self, context: &str) -> Result<T>;
}

impl<T> TorchContext<T> for std::result::Result<T, tch::TchError> {
    fn ctx(self, context: &str) -> Result<T> {
        self.map_err(|error| Error::Torch { context: context.to_string(), error })
    }
}

/// A libtorch error without the C++ stack that follows its message
/// (20–40 lines of `frame #N` that say nothing to a user).
pub fn torch_summary(error: &tch::TchError) -> String {
    let text = error.to_string();
    let message = text.split("\nException raised from").next().unwrap_or(&text);
    let message = message.split("\nframe #").next().unwrap_or(message);
    message.lines().map(str::trim).filter(|line| !line.is_empty()).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_errors_are_shown_without_their_cpp_backtrace() {
        let a = tch::Tensor::zeros([2, 3], (tch::Kind::Float, tch::Device::Cpu));
        let b = tch::Tensor::zeros([4, 5], (tch::Kind::Float, tch::Device::Cpu));
        let err = a.f_matmul(&b).ctx("product").unwrap_err().to_string();
        assert!(err.starts_with("product: ") && err.contains("2x3 and 4x5"), "{err}");
        assert!(!err.contains("frame #") && !err.contains('\n'), "{err}");
    }
}
