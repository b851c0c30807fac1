//! Comparison levels of probabilistic scoring: how each field of two source profiles
//! agrees, as one of a few ordered levels (from the strongest agreement to
//! `different`), or nothing when either side lacks the field.
//!
//! | field | levels |
//! |---|---|
//! | `first_name` | `exact`, `variant` (diminutive, spelling, compound part, `Jean-Pierre`/`Jeanpierre`), `initial`, `one_edit`, `jw_0.92`, `jw_0.80`, `different` (also feminine forms: `Jean`/`Jeanne`) |
//! | `last_name` | `exact`, `variant` (spaces, compound part), `one_edit`, `jw_0.92`, `jw_0.80`, `different` |
//! | `birth_date` | `exact`, `swapped_day_month`, `year_off_by_one`, `one_digit`, `different` |
//! | `street` | `exact`, `jw_0.90` (same house number), `different` |
//! | `postal_code` | `exact`, `one_edit` (a digit typed wrong or two swapped), `same_area` (first two characters), `different` |
//! | `city` | `exact`, `jw_0.90`, `different` (only when either side lacks a postal code: otherwise the postal codes have said it) |
//! | `email_local` | `exact`, `jw_0.90`, `different` (local parts at the same provider only) |
//!
//! Names are compared straight and crosswise (first against last) and the better
//! arrangement is kept, as [`matching::similarities`] decides: forms swap them.
//! `jw_x` is Jaro-Winkler at least `x`; `one_edit` a Damerau-Levenshtein distance of
//! one. Pure functions.

use crate::engine::resolve::matching::{self, AddressKey, MatchView};
use crate::model::Field;

/// One compared field and its levels, strongest first; the last is `different`.
#[derive(Debug, Clone, Copy)]
pub struct Comparison {
    pub field: Field,
    pub levels: &'static [&'static str],
    /// Its `exact` level is adjusted by the frequency of the value agreed on.
    pub term_frequency: bool,
}

/// The comparisons, in [`Field::ALL`] order (index them with [`Field::index`]).
pub const COMPARISONS: [Comparison; 7] = [
    Comparison {
        field: Field::FirstName,
        levels: &[
            "exact",
            "variant",
            "initial",
            "one_edit",
            "jw_0.92",
            "jw_0.80",
            "different",
        ],
        term_frequency: true,
    },
    Comparison {
        field: Field::LastName,
        levels: &[
            "exact",
            "variant",
            "one_edit",
            "jw_0.92",
            "jw_0.80",
            "different",
        ],
        term_frequency: true,
    },
    Comparison {
        field: Field::BirthDate,
        levels: &[
            "exact",
            "swapped_day_month",
            "year_off_by_one",
            "one_digit",
            "different",
        ],
        term_frequency: true,
    },
    Comparison {
        field: Field::Street,
        levels: &["exact", "jw_0.90", "different"],
        term_frequency: false,
    },
    Comparison {
        field: Field::PostalCode,
        levels: &["exact", "one_edit", "same_area", "different"],
        term_frequency: true,
    },
    Comparison {
        field: Field::City,
        levels: &["exact", "jw_0.90", "different"],
        term_frequency: true,
    },
    Comparison {
        field: Field::EmailLocal,
        levels: &["exact", "jw_0.90", "different"],
        term_frequency: false,
    },
];

/// The number of compared fields.
pub const FIELDS: usize = COMPARISONS.len();

/// The level of each field (an index into its comparison's levels), `None` where either
/// side lacks it; for an `exact` level, the value agreed on (term frequencies).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Gamma<'a> {
    pub levels: [Option<u8>; FIELDS],
    pub exact_values: [Option<&'a str>; FIELDS],
    /// The names matched crosswise (first against last).
    pub swapped: bool,
}

/// Index of a level by name in a field's comparison (tests and training).
pub fn level_index(field: Field, name: &str) -> Option<u8> {
    COMPARISONS[field.index()]
        .levels
        .iter()
        .position(|l| *l == name)
        .map(|i| i as u8)
}

/// The levels of two views.
pub fn compare<'a>(a: &MatchView<'a>, b: &MatchView<'a>) -> Gamma<'a> {
    compare_arranged(a, b, matching::names_swapped(a, b))
}

/// [`compare`] with the arrangement of the names already known (`swapped`: `b`'s first
/// name against `a`'s last, as [`matching::similarities`] found).
pub fn compare_arranged<'a>(a: &MatchView<'a>, b: &MatchView<'a>, swapped: bool) -> Gamma<'a> {
    let mut g = Gamma {
        swapped,
        ..Gamma::default()
    };
    let (bf, bl) = if swapped {
        (b.last, b.first)
    } else {
        (b.first, b.last)
    };
    g.set(Field::FirstName, a.first, bf, first_name_level);
    g.set(Field::LastName, a.last, bl, last_name_level);
    g.set(Field::BirthDate, a.birth, b.birth, birth_date_level);
    let part = |v: &MatchView<'a>, f: fn(&'a AddressKey) -> Option<&'a str>| v.address.and_then(f);
    g.set(
        Field::Street,
        part(a, |k| k.street.as_deref()),
        part(b, |k| k.street.as_deref()),
        street_level,
    );
    g.set(
        Field::PostalCode,
        part(a, |k| k.postal_code.as_deref()),
        part(b, |k| k.postal_code.as_deref()),
        postal_code_level,
    );
    // The town says nothing the postal codes have not said: compared only without them.
    let postal_on_both = g.levels[Field::PostalCode.index()].is_some();
    if !postal_on_both {
        g.set(
            Field::City,
            part(a, |k| k.city.as_deref()),
            part(b, |k| k.city.as_deref()),
            city_level,
        );
    }
    g.levels[Field::EmailLocal.index()] = email_local_level(a.emails, b.emails);
    g
}

impl<'a> Gamma<'a> {
    fn set(
        &mut self,
        field: Field,
        a: Option<&'a str>,
        b: Option<&'a str>,
        level: fn(&str, &str) -> &'static str,
    ) {
        let (Some(a), Some(b)) = (a, b) else {
            return;
        };
        let name = level(a, b);
        self.levels[field.index()] = level_index(field, name);
        if name == "exact" {
            self.exact_values[field.index()] = Some(a);
        }
    }
}

fn dl(a: &str, b: &str) -> usize {
    strsim::damerau_levenshtein(a, b)
}

fn short_len(a: &str, b: &str) -> usize {
    a.chars().count().min(b.chars().count())
}

/// First-name keys: see the table of the module.
pub fn first_name_level(a: &str, b: &str) -> &'static str {
    if a == b {
        return "exact";
    }
    if matching::feminine_of(a, b) || matching::feminine_of(b, a) {
        return "different";
    }
    let diminutive = matching::DIMINUTIVES
        .iter()
        .any(|&(d, full)| (a == d && b == full) || (a == full && b == d));
    let (fa, fb) = (matching::first_word(a), matching::first_word(b));
    let (short, long) = if fa.len() <= fb.len() {
        (fa, fb)
    } else {
        (fb, fa)
    };
    // `fred`/`frederic`, `alex`/`alexandre`: the first letters of the name.
    let prefix = short.len() >= 3 && long.len() > short.len() + 1 && long.starts_with(short);
    // `jean pierre`/`jean`: one name and the compound it starts.
    let compound_part = {
        let part =
            |x: &str, y: &str| x.len() >= 3 && y.starts_with(x) && y[x.len()..].starts_with(' ');
        part(a, b) || part(b, a)
    };
    if matching::same_without_spaces(a, b)
        || diminutive
        || prefix
        || compound_part
        || matching::same_spelling(a, b)
    {
        return "variant";
    }
    if matching::initials_similarity(a, b).is_some()
        || matching::initials_similarity(b, a).is_some()
    {
        return "initial";
    }
    if dl(a, b) == 1 && short_len(a, b) >= 3 {
        return "one_edit";
    }
    jw_band(a, b)
}

/// Last-name keys: see the table of the module.
pub fn last_name_level(a: &str, b: &str) -> &'static str {
    if a == b {
        return "exact";
    }
    let part_of = |short: &str, long: &str| {
        short.len() >= 3 && long.contains(' ') && long.split(' ').any(|w| w == short)
    };
    if a.replace(' ', "") == b.replace(' ', "") || part_of(a, b) || part_of(b, a) {
        return "variant";
    }
    if dl(a, b) == 1 && short_len(a, b) >= 4 {
        return "one_edit";
    }
    jw_band(a, b)
}

fn jw_band(a: &str, b: &str) -> &'static str {
    let jw = strsim::jaro_winkler(a, b);
    if jw >= 0.92 {
        "jw_0.92"
    } else if jw >= 0.80 {
        "jw_0.80"
    } else {
        "different"
    }
}

/// Birth dates `YYYY-MM-DD`: see the table of the module.
pub fn birth_date_level(a: &str, b: &str) -> &'static str {
    if a == b {
        return "exact";
    }
    if a.len() != 10 || b.len() != 10 {
        return "different";
    }
    let (ya, yb) = (a.get(..4), b.get(..4));
    if ya == yb && a.get(5..7) == b.get(8..10) && a.get(8..10) == b.get(5..7) {
        return "swapped_day_month";
    }
    if a.get(4..) == b.get(4..) {
        let year = |y: Option<&str>| y.and_then(|y| y.parse::<i32>().ok());
        if let (Some(x), Some(y)) = (year(ya), year(yb)) {
            if (x - y).abs() == 1 {
                return "year_off_by_one";
            }
        }
    }
    if dl(a, b) == 1 {
        return "one_digit";
    }
    "different"
}

/// Street keys: the same words, or close words with the same house number.
pub fn street_level(a: &str, b: &str) -> &'static str {
    if a == b {
        "exact"
    } else if matching::street_similarity(a, b) >= 0.9 {
        "jw_0.90"
    } else {
        "different"
    }
}

/// Postal codes: see the table of the module.
pub fn postal_code_level(a: &str, b: &str) -> &'static str {
    if a == b {
        "exact"
    } else if dl(a, b) == 1 && a.len() == b.len() {
        "one_edit"
    } else if a.len() >= 2 && a.get(..2) == b.get(..2) {
        "same_area"
    } else {
        "different"
    }
}

/// City keys.
pub fn city_level(a: &str, b: &str) -> &'static str {
    if a == b {
        "exact"
    } else if strsim::jaro_winkler(a, b) >= 0.9 {
        "jw_0.90"
    } else {
        "different"
    }
}

/// The best agreement of the local parts of two lists of e-mail addresses at the same
/// provider (or one typed wrong); `None` when no pair is comparable.
fn email_local_level(a: &[String], b: &[String]) -> Option<u8> {
    let mut best: Option<u8> = None;
    for (x, xd) in a.iter().filter_map(|e| matching::email_parts(e)) {
        for (y, yd) in b.iter().filter_map(|e| matching::email_parts(e)) {
            if xd != yd && strsim::jaro_winkler(xd, yd) < 0.9 {
                continue;
            }
            let name = if x == y {
                "exact"
            } else if strsim::jaro_winkler(x, y) >= 0.9 {
                "jw_0.90"
            } else {
                "different"
            };
            let level = level_index(Field::EmailLocal, name);
            best = match (best, level) {
                (Some(b), Some(l)) => Some(b.min(l)),
                (b, l) => b.or(l),
            };
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::normalise;

    fn key(s: &str) -> String {
        normalise::name_key(s).unwrap()
    }

    fn first(a: &str, b: &str) -> &'static str {
        first_name_level(&key(a), &key(b))
    }

    fn last(a: &str, b: &str) -> &'static str {
        last_name_level(&key(a), &key(b))
    }

    #[test]
    fn every_level_named_by_a_function_is_declared() {
        for c in COMPARISONS {
            assert_eq!(c.levels.last(), Some(&"different"), "{:?}", c.field);
            assert_eq!(c.levels[0], "exact");
        }
        assert_eq!(level_index(Field::BirthDate, "one_digit"), Some(3));
        assert_eq!(level_index(Field::BirthDate, "nope"), None);
    }

    #[test]
    fn first_name_levels() {
        assert_eq!(first("Hélène", "HELENE"), "exact");
        assert_eq!(first("Cathy", "Catherine"), "variant");
        assert_eq!(first("Fred", "Frédéric"), "variant");
        assert_eq!(first("Sofie", "Sophie"), "variant");
        assert_eq!(first("Jean-Pierre", "Jeanpierre"), "variant");
        assert_eq!(first("Jean-Pierre", "Jean"), "variant");
        assert_eq!(first("J.", "Jean"), "initial");
        assert_eq!(first("J.-P.", "Jean-Pierre"), "initial");
        assert_eq!(first("Sophei", "Sophie"), "one_edit");
        assert_eq!(first("Sopie", "Sophie"), "one_edit");
        assert_eq!(first("Jean", "Jeanne"), "different");
        assert_eq!(first("Louis", "Louise"), "different");
        assert_eq!(first("Marie", "Lucas"), "different");
        assert_eq!(first("Christophe", "Christopher"), "one_edit");
        assert_eq!(first("Mathieu", "Matthias"), "jw_0.80");
        assert_eq!(first("Sebastien", "Sebastian"), "one_edit");
        assert_eq!(first_name_level("anne sophie", "anne sofie"), "variant");
        assert_eq!(first_name_level("emmanuelle", "emmanuele"), "variant");
        assert_eq!(first_name_level("gabrielle", "gabriela"), "jw_0.92");
    }

    #[test]
    fn last_name_levels() {
        assert_eq!(last("Müller", "Muller"), "exact");
        assert_eq!(last("Le Gall", "Legall"), "variant");
        assert_eq!(last("Martin-Dupont", "Dupont"), "variant");
        assert_eq!(last("Dupont", "Dupond"), "one_edit");
        assert_eq!(last("Dupont", "Dupnot"), "one_edit");
        assert_eq!(last("Fontaine", "Fontaines"), "one_edit");
        assert_eq!(last("Lefebvre", "Lefevre"), "one_edit");
        assert_eq!(last("Lefebvre", "Lefeuvre"), "one_edit");
        assert_eq!(last("Dupont", "Duponteil"), "jw_0.92");
        assert_eq!(last("Moreau", "Morel"), "jw_0.80");
        assert_eq!(last("Dupont", "Martin"), "different");
    }

    #[test]
    fn birth_date_levels() {
        assert_eq!(birth_date_level("1985-04-12", "1985-04-12"), "exact");
        assert_eq!(
            birth_date_level("1985-04-12", "1985-12-04"),
            "swapped_day_month"
        );
        assert_eq!(birth_date_level("1985-04-12", "1985-04-13"), "one_digit");
        assert_eq!(birth_date_level("1985-04-12", "1958-04-12"), "one_digit");
        assert_eq!(
            birth_date_level("1985-04-12", "1986-04-12"),
            "year_off_by_one"
        );
        assert_eq!(
            birth_date_level("1989-04-12", "1990-04-12"),
            "year_off_by_one"
        );
        assert_eq!(birth_date_level("1985-04-12", "1990-01-01"), "different");
    }

    #[test]
    fn address_levels() {
        assert_eq!(postal_code_level("75011", "75011"), "exact");
        assert_eq!(postal_code_level("75011", "75012"), "one_edit");
        assert_eq!(postal_code_level("75011", "57011"), "one_edit");
        assert_eq!(postal_code_level("75011", "75020"), "same_area");
        assert_eq!(postal_code_level("75011", "69003"), "different");
        assert_eq!(city_level("paris", "paris"), "exact");
        assert_eq!(city_level("marseille", "marseile"), "jw_0.90");
        assert_eq!(city_level("paris", "lyon"), "different");
        assert_eq!(
            street_level("12 rue de la paix", "12 rue de la paix"),
            "exact"
        );
        assert_eq!(
            street_level("12 rue de la paix", "12 rue de la paiz"),
            "jw_0.90"
        );
        assert_eq!(
            street_level("12 rue de la paix", "14 rue de la paix"),
            "different"
        );
    }

    #[test]
    fn missing_fields_have_no_level_and_swapped_names_are_compared_crosswise() {
        let a = MatchView {
            first: Some("sophie"),
            last: Some("dupont"),
            birth: Some("1985-04-12"),
            ..MatchView::default()
        };
        let b = MatchView {
            first: Some("dupont"),
            last: Some("sophie"),
            ..MatchView::default()
        };
        let g = compare(&a, &b);
        assert!(g.swapped);
        // One name the same, the other quite different (a marriage): not swapped, even
        // where each name is half like the other one.
        let married = |last| MatchView {
            first: Some("georgia"),
            last: Some(last),
            ..MatchView::default()
        };
        let m = compare(&married("kyriacou"), &married("pegg"));
        assert!(!m.swapped);
        assert_eq!(m.levels[Field::FirstName.index()], Some(0));
        assert_eq!(g.levels[Field::FirstName.index()], Some(0));
        assert_eq!(g.levels[Field::LastName.index()], Some(0));
        assert_eq!(g.exact_values[Field::LastName.index()], Some("dupont"));
        assert_eq!(g.levels[Field::BirthDate.index()], None);
        assert_eq!(g.levels[Field::PostalCode.index()], None);
        assert_eq!(g.levels[Field::EmailLocal.index()], None);
        let emails_a = ["julien.noel@yahoo.fr".to_string()];
        let emails_b = ["julien.noel@yaho.fr".to_string()];
        let g = compare(
            &MatchView {
                emails: &emails_a,
                ..a
            },
            &MatchView {
                emails: &emails_b,
                ..b
            },
        );
        assert_eq!(g.levels[Field::EmailLocal.index()], Some(0));
    }
}
