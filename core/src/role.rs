//! The roles a plugin can fill.

use std::fmt;

/// Which trait a plugin implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    ScoreModel,
    Generator,
    Divergence,
    Dataset,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::ScoreModel => "score-model",
            Role::Generator => "generator",
            Role::Divergence => "divergence",
            Role::Dataset => "dataset",
        })
    }
}
