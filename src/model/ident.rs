//! Identifiers after normalisation, the currency of resolution, consent per identifier
//! and erasure.

use serde::{Deserialize, Serialize};

/// A normalised identifier: `email` / `sophie.dupont@gmail.com`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Ident {
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

impl Ident {
    pub fn new(kind: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            kind: kind.into(),
            value: value.into(),
        }
    }
}
