//! The person fields that fuzzy matching compares, named as the match rules of the
//! configuration name them.

use serde::{Deserialize, Serialize};

/// A field compared by fuzzy matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    FirstName,
    LastName,
    BirthDate,
    Street,
    PostalCode,
    City,
    EmailLocal,
}

impl Field {
    pub const ALL: [Field; 7] = [
        Field::FirstName,
        Field::LastName,
        Field::BirthDate,
        Field::Street,
        Field::PostalCode,
        Field::City,
        Field::EmailLocal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Field::FirstName => "first_name",
            Field::LastName => "last_name",
            Field::BirthDate => "birth_date",
            Field::Street => "street",
            Field::PostalCode => "postal_code",
            Field::City => "city",
            Field::EmailLocal => "email_local",
        }
    }

    pub fn parse(name: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.as_str() == name)
    }

    /// The field's position in [`Field::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}
