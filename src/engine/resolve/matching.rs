//! Fuzzy matching: what resolve compares when two source profiles share no identifier.
//!
//! - **Match keys.** A source profile's person data in comparable form ([`MatchView`]):
//!   first and last name keys, birth date, street, postal code and city keys, and the
//!   local parts of its e-mail addresses.
//! - **Blocking keys** ([`blocking_keys`]) say which source profiles are worth comparing:
//!   a phonetic form of the last name with the postal code (or city), the birth date
//!   with the initial of either name, the postal code with the house number and the
//!   main word of the street, the local part of an e-mail address. Resolve keeps one
//!   store entry per key listing the source profiles that carry it; only those are ever
//!   read, never a scan.
//! - **Similarities** per field ([`similarities`]), in `[0, 1]`, with strsim's
//!   Jaro-Winkler on names and streets and Damerau-Levenshtein on birth dates, and the
//!   French specifics: accents folded, `Jean-Pierre` = `Jean Pierre`, initials,
//!   diminutives (`Fred`/`Frédéric`), feminine forms that are *not* the same name
//!   (`Jean`/`Jeanne`), swapped first and last names.
//! - **Rules** ([`Matcher`]): each [`MatchRule`] requires a minimum similarity on a few
//!   fields; a candidate's score is the best mean similarity over the rules it
//!   satisfies. Above `link_threshold` a rule allowed to link links; between
//!   `suggest_threshold` and there, it is only a suggestion.
//! - **Vetoes:** two different birth dates, or first names that are clearly not the
//!   same, are never linked nor suggested, whatever the rules.
//!
//! Pure functions: no store, no clock.

use serde::{Deserialize, Serialize};

use crate::engine::config::{ContradictionVeto, MatchRule, Matching, Scoring};
use crate::engine::normalise;
use crate::engine::resolve::model::{MatchModel, Score};
use crate::model::Field;

/// A postal address in match-key form.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressKey {
    /// [`normalise::street_key`] of `line1`.
    pub street: Option<String>,
    pub postal_code: Option<String>,
    /// [`normalise::city_key`].
    pub city: Option<String>,
}

impl AddressKey {
    pub fn from_address(a: &crate::model::Address) -> Self {
        let country = a
            .country
            .as_deref()
            .and_then(|c| normalise::country(c).ok());
        Self {
            street: a
                .line1
                .as_deref()
                .and_then(|s| normalise::street_key(s).ok()),
            postal_code: a
                .postal_code
                .as_deref()
                .and_then(|p| normalise::postal_code(p, country.as_deref()).ok()),
            city: a.city.as_deref().and_then(|c| normalise::city_key(c).ok()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.street.is_none() && self.postal_code.is_none() && self.city.is_none()
    }

    /// Where the person lives, for blocking: the postal code, else the city.
    fn area(&self) -> Option<&str> {
        self.postal_code.as_deref().or(self.city.as_deref())
    }
}

/// What one source profile says of the person, borrowed, in match-key form.
#[derive(Debug, Clone, Copy, Default)]
pub struct MatchView<'a> {
    pub first: Option<&'a str>,
    pub last: Option<&'a str>,
    pub birth: Option<&'a str>,
    pub address: Option<&'a AddressKey>,
    /// Normalised e-mail addresses (only their local parts are compared).
    pub emails: &'a [String],
}

impl MatchView<'_> {
    /// Whether there is anything to compare on.
    pub fn has_person(&self) -> bool {
        self.first.is_some() || self.last.is_some() || self.birth.is_some()
    }
}

/// Local part and domain of a normalised e-mail address, if the local part is long
/// enough to tell people apart.
pub(super) fn email_parts(email: &str) -> Option<(&str, &str)> {
    let (local, domain) = email.rsplit_once('@')?;
    (local.chars().filter(|c| c.is_alphabetic()).count() >= 4).then_some((local, domain))
}

fn email_local(email: &str) -> Option<&str> {
    email_parts(email).map(|(local, _)| local)
}

/// A rough phonetic form of a name key: the first letter, then consonant classes
/// (`b p` → p, `c k q g` → k, `d t` → t, `f v ph` → f, `m n` → n, `s z x` → s, `j` and
/// soft `g` → j, `l`, `r`), vowels and `h w y` dropped, repeats collapsed, a silent final
/// `t`, `s` or `x` dropped, at most six classes. `dupont` and `dupond` both give `dpn`.
pub fn phonetic(name_key: &str) -> String {
    let letters: Vec<char> = name_key.chars().filter(|c| c.is_alphanumeric()).collect();
    let mut out = String::with_capacity(8);
    let Some(&first) = letters.first() else {
        return out;
    };
    // `ph` sounds `f`: `philippe` and `filippe` start alike.
    let (first, mut i) = if letters.get(..2) == Some(&['p', 'h']) {
        ('f', 2)
    } else {
        (first, 1)
    };
    out.push(first);
    let mut last_class = class_of(first, letters.get(i).copied());
    let mut classes = 0;
    while i < letters.len() && classes < 6 {
        let c = letters[i];
        let next = letters.get(i + 1).copied();
        let class = if c == 'p' && next == Some('h') {
            i += 1;
            Some('f')
        } else {
            class_of(c, next)
        };
        match class {
            Some(k) if Some(k) != last_class => {
                out.push(k);
                classes += 1;
                last_class = Some(k);
            }
            Some(_) => {}
            None => last_class = None,
        }
        i += 1;
    }
    if out.len() > 1 && matches!(out.chars().last(), Some('t' | 's')) {
        out.pop();
    }
    out
}

fn class_of(c: char, next: Option<char>) -> Option<char> {
    Some(match c {
        'b' | 'p' => 'p',
        'c' if matches!(next, Some('e' | 'i' | 'y')) => 's',
        'c' | 'k' | 'q' => 'k',
        'g' if matches!(next, Some('e' | 'i' | 'y')) => 'j',
        'g' => 'k',
        'd' | 't' => 't',
        'f' | 'v' | 'w' => 'f',
        'm' | 'n' => 'n',
        's' | 'z' | 'x' => 's',
        'j' => 'j',
        'l' => 'l',
        'r' => 'r',
        c if c.is_ascii_digit() => c,
        _ => return None,
    })
}

/// House number (digits of the first all-digit word) and the longest other word of a
/// street key: `12 rue de la paix` → (`12`, `paix`).
pub(super) fn street_parts(street: &str) -> (Option<&str>, Option<&str>) {
    let number = street
        .split(' ')
        .find(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()));
    let main = street
        .split(' ')
        .filter(|w| w.chars().any(char::is_alphabetic) && !STREET_WORDS.contains(w))
        .max_by_key(|w| w.len());
    (number, main)
}

/// Street types and small words that say nothing of which street it is.
const STREET_WORDS: &[&str] = &[
    "rue",
    "avenue",
    "boulevard",
    "place",
    "chemin",
    "impasse",
    "allee",
    "faubourg",
    "route",
    "square",
    "quai",
    "cours",
    "de",
    "du",
    "des",
    "la",
    "le",
    "les",
    "l",
    "d",
    "bis",
    "ter",
];

/// The blocking keys of a source profile (without the store prefix), in a fixed
/// order. Profiles that share a key are compared; nothing else is.
pub fn blocking_keys(v: &MatchView) -> Vec<String> {
    let mut keys = Vec::with_capacity(6);
    push_name_area_key(v, &mut keys);
    push_birth_initial_keys(v, &mut keys);
    push_street_key(v, &mut keys);
    push_email_keys(v, &mut keys);
    keys.sort();
    keys.dedup();
    keys
}

/// `np`: the phonetic last name in the area.
fn push_name_area_key(v: &MatchView, keys: &mut Vec<String>) {
    let area = v.address.and_then(AddressKey::area);
    if let (Some(last), Some(area)) = (v.last, area) {
        keys.push(format!("np\0{}\0{area}", phonetic(last)));
    }
}

/// `bi`: the birth date with the initial of either name.
fn push_birth_initial_keys(v: &MatchView, keys: &mut Vec<String>) {
    if let Some(birth) = v.birth {
        for i in name_initials(v) {
            keys.push(format!("bi\0{birth}\0{i}"));
        }
    }
}

/// `ad`: the house number and phonetic street name in the area.
fn push_street_key(v: &MatchView, keys: &mut Vec<String>) {
    if let Some(a) = v.address {
        if let (Some(street), Some(area)) = (a.street.as_deref(), a.area()) {
            if let (Some(number), Some(main)) = street_parts(street) {
                keys.push(format!("ad\0{area}\0{number}\0{}", phonetic(main)));
            }
        }
    }
}

/// `el`: the local part of each e-mail address, on records with person data.
fn push_email_keys(v: &MatchView, keys: &mut Vec<String>) {
    if v.has_person() {
        for local in v.emails.iter().filter_map(|e| email_local(e)) {
            keys.push(format!("el\0{local}"));
        }
    }
}

/// The blocking keys of probabilistic scoring, so that a record with any one field
/// corrupted (a typo, a swapped day and month, another postal code) still shares a key
/// with the original. The `ad` and `el` keys of [`blocking_keys`], and:
///
/// - `bx`: the birth date with day and month in sorted order, with the initial of
///   either name (day and month swapped);
/// - `pl`: the postal code with the first three letters of the last name (a typo the
///   phonetic form does not absorb);
/// - `hn`: the postal code with the house number (another name and street spelling);
/// - `fa`: the area with the phonetic first name (another last name: a marriage, a
///   typo, on records without a birth date);
/// - `nc`: the town with the phonetic form of either name, whichever is first or last
///   (one record gives a postal code, the other only the town; names swapped);
/// - `nn`: either name in full with the first three or the last three letters of the
///   other (one name typed wrong on records with nothing else in common: a single
///   edit leaves one end of a name of six letters or more untouched);
/// - `nh`: either name's phonetic form with the house number (another postal code and
///   town, a typo in the street).
///
/// `pl` and `hn` take the postal code's characters in sorted order, so that two
/// swapped digits still agree. Each key uses at most two fields, and every field is
/// left out of some key.
///
/// Keys are left out where others hold the pairs they would give: every key is a block
/// to look up and to write for each new source profile (most of the cost of fuzzy
/// matching on a stream of new persons is writing them), and blocks beyond need add
/// nothing. `bi` of [`blocking_keys`] is left out when the birth date reads as a full
/// date (`bx` holds the same date with the same initials), and `ad` when there is a
/// postal code (`hn` holds the same postal code and house number): the candidates are
/// the same. `np` (phonetic last name and area) is left out: with a town for area, `nc`
/// holds its pairs; with a postal code, `pl`, `hn`, `nc` and `bx` hold every pair
/// that agrees on one more field. The phonetic forms of both names (`pf`) are not a
/// key either: a pair that shares no other key agrees on names alone, which neither
/// links nor suggests. Left out together, they changed no pair on FEBRL 1, FEBRL 2 and
/// the labelled stream (`bench accuracy`), and cut the blocks written by a fifth.
pub fn probabilistic_blocking_keys(v: &MatchView) -> Vec<String> {
    let mut keys = Vec::with_capacity(20);
    let area = v.address.and_then(AddressKey::area);
    let postal = v.address.and_then(|a| a.postal_code.as_deref());
    if postal.is_none() {
        push_street_key(v, &mut keys);
    }
    push_email_keys(v, &mut keys);
    match v.birth.and_then(day_month_sorted) {
        Some(birth) => {
            for i in name_initials(v) {
                keys.push(format!("bx\0{birth}\0{i}"));
            }
        }
        None => push_birth_initial_keys(v, &mut keys),
    }
    let postal = postal.map(sorted_chars);
    if let (Some(postal), Some(last)) = (&postal, v.last) {
        let prefix: String = last.chars().filter(|c| *c != ' ').take(3).collect();
        keys.push(format!("pl\0{postal}\0{prefix}"));
    }
    let number = v
        .address
        .and_then(|a| a.street.as_deref())
        .and_then(|s| street_parts(s).0);
    if let (Some(postal), Some(number)) = (&postal, number) {
        keys.push(format!("hn\0{postal}\0{number}"));
    }
    if let (Some(area), Some(first)) = (area, v.first) {
        keys.push(format!("fa\0{area}\0{}", phonetic(first)));
    }
    let names: Vec<&str> = [v.first, v.last].into_iter().flatten().collect();
    if let Some(city) = v.address.and_then(|a| a.city.as_deref()) {
        for name in &names {
            keys.push(format!("nc\0{city}\0{}", phonetic(name)));
        }
    }
    if let Some(number) = number {
        for name in &names {
            keys.push(format!("nh\0{number}\0{}", phonetic(name)));
        }
    }
    if let (Some(first), Some(last)) = (v.first, v.last) {
        for (whole, other) in [(first, last), (last, first)] {
            let letters: Vec<char> = other.chars().filter(|c| *c != ' ').collect();
            let n = letters.len().min(3);
            let head: String = letters[..n].iter().collect();
            let tail: String = letters[letters.len() - n..].iter().collect();
            keys.push(format!("nn\0{whole}\0<{head}"));
            keys.push(format!("nn\0{whole}\0>{tail}"));
        }
    }
    keys.sort();
    keys.dedup();
    keys
}

/// Every key a source profile may be found in a block under: those of either scoring,
/// and `pf` (the phonetic forms of both names, sorted), which earlier versions wrote.
/// What erasure clears: a store may have been run under both scorings and versions.
pub fn every_blocking_key(v: &MatchView) -> Vec<String> {
    let mut keys = blocking_keys(v);
    keys.extend(probabilistic_blocking_keys(v));
    if let (Some(first), Some(last)) = (v.first, v.last) {
        let mut codes = [phonetic(first), phonetic(last)];
        codes.sort();
        keys.push(format!("pf\0{}\0{}", codes[0], codes[1]));
    }
    keys.sort();
    keys.dedup();
    keys
}

/// A postal code's characters in sorted order: two swapped digits give the same text.
fn sorted_chars(s: &str) -> String {
    let mut c: Vec<char> = s.chars().collect();
    c.sort_unstable();
    c.into_iter().collect()
}

/// The initials of the first and last names, sorted, without repeats.
fn name_initials(v: &MatchView) -> Vec<char> {
    let mut initials: Vec<char> = [v.first, v.last]
        .into_iter()
        .flatten()
        .filter_map(|n| n.chars().next())
        .collect();
    initials.sort_unstable();
    initials.dedup();
    initials
}

/// `YYYY-MM-DD` with its month and day in increasing order: a date and the same with
/// day and month swapped give the same text.
fn day_month_sorted(birth: &str) -> Option<String> {
    let (year, md) = (birth.get(..4)?, (birth.get(5..7)?, birth.get(8..10)?));
    let (lo, hi) = if md.0 <= md.1 { md } else { (md.1, md.0) };
    Some(format!("{year}-{lo}-{hi}"))
}

/// Similarity of each field present on both sides, indexed by [`Field`]; `None` where
/// either side lacks it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Similarities {
    values: [Option<f64>; 7],
    /// The names matched crosswise (first against last).
    pub swapped: bool,
}

impl Similarities {
    pub fn get(&self, field: Field) -> Option<f64> {
        self.values[field.index()]
    }

    fn set(&mut self, field: Field, value: Option<f64>) {
        self.values[field.index()] = value;
    }

    /// The fields compared, with their similarity rounded to three decimals.
    pub fn compared(&self) -> Vec<(Field, f64)> {
        Field::ALL
            .into_iter()
            .filter_map(|f| self.get(f).map(|s| (f, round3(s))))
            .collect()
    }
}

pub fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Common diminutives whose letters are not a prefix of the full name.
pub(super) const DIMINUTIVES: &[(&str, &str)] = &[
    ("cathy", "catherine"),
    ("kate", "catherine"),
    ("babette", "elisabeth"),
    ("zabeth", "elisabeth"),
    ("lisa", "elisabeth"),
    ("liz", "elizabeth"),
    ("beth", "elizabeth"),
    ("bob", "robert"),
    ("bobby", "robert"),
    ("bill", "william"),
    ("will", "william"),
    ("jim", "james"),
    ("dick", "richard"),
    ("peggy", "margaret"),
    ("maggie", "margaret"),
    ("manu", "emmanuel"),
    ("manue", "emmanuelle"),
    ("toinette", "antoinette"),
    ("tony", "antoine"),
    ("tonio", "antoine"),
    ("mimi", "michele"),
    ("lolo", "laurent"),
    ("bab", "barbara"),
    ("gégé", "gerard"),
    ("gege", "gerard"),
    ("jojo", "joseph"),
    ("jo", "josephine"),
    ("nanou", "anne"),
    ("nono", "arnaud"),
    ("riri", "henri"),
    ("loulou", "louis"),
    ("fanfan", "francoise"),
    ("sandy", "sandrine"),
    ("steph", "stephanie"),
    ("nath", "nathalie"),
    ("gaby", "gabrielle"),
    ("mathou", "mathilde"),
    ("pat", "patrick"),
    ("patou", "patricia"),
    ("bernie", "bernard"),
    ("jp", "jean pierre"),
    ("jc", "jean claude"),
    ("jl", "jean luc"),
    ("jm", "jean marc"),
    ("pm", "pierre marie"),
];

/// `b` is `a` with a feminine ending: `jean`/`jeanne`, `louis`/`louise`,
/// `michel`/`michele`, `daniel`/`danielle`, `francois`/`francoise`. Not the same name.
pub(super) fn feminine_of(a: &str, b: &str) -> bool {
    match b.strip_prefix(a) {
        Some(ending) => matches!(
            ending,
            "e" | "ne" | "le" | "te" | "se" | "ette" | "nette" | "ine" | "tte"
        ),
        None => false,
    }
}

/// How likely two first-name keys name the same person, in `[0, 1]`.
pub fn first_name_similarity(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    if feminine_of(a, b) || feminine_of(b, a) {
        return 0.3;
    }
    if same_without_spaces(a, b) {
        return 0.98;
    }
    if DIMINUTIVES
        .iter()
        .any(|&(d, full)| (a == d && b == full) || (a == full && b == d))
    {
        return 0.93;
    }
    let (fa, fb) = (first_word(a), first_word(b));
    if let Some(s) = initials_similarity(a, b).or_else(|| initials_similarity(b, a)) {
        return s;
    }
    // A diminutive made of the first letters: `fred`/`frederic`, `alex`/`alexandre`.
    let (short, long) = if fa.len() <= fb.len() {
        (fa, fb)
    } else {
        (fb, fa)
    };
    if short.len() >= 3 && long.len() > short.len() + 1 && long.starts_with(short) {
        return if feminine_of(short, long) { 0.3 } else { 0.92 };
    }
    let words: f64 = if fa == fb && a != b { 0.9 } else { 0.0 };
    let spelled = if same_spelling(fa, fb) { 0.95 } else { 0.0 };
    words
        .max(spelled)
        .max(strsim::jaro_winkler(a, b))
        .max(strsim::jaro_winkler(fa, fb) * 0.98)
}

pub(super) fn first_word(s: &str) -> &str {
    s.split(' ').next().unwrap_or(s)
}

/// `j` / `jean`, `j p` / `jean pierre`: an initial is weaker evidence than the name.
pub(super) fn initials_similarity(initials: &str, name: &str) -> Option<f64> {
    let mut words = name.split(' ');
    let mut n = 0;
    for i in initials.split(' ') {
        let mut cs = i.chars();
        let (Some(c), None) = (cs.next(), cs.next()) else {
            return None;
        };
        let w = words.next()?;
        if w.len() < 2 || !w.starts_with(c) {
            return None;
        }
        n += 1;
    }
    (n > 0).then_some(0.85)
}

/// Whether two words are written the same way but for doubled letters, `ph` for `f`,
/// `th` for `t` and `y` for `i`: `sophie`/`sofie`. Compared letter by letter, without
/// building either spelling (it runs for most candidate pairs).
pub(super) fn same_spelling(a: &str, b: &str) -> bool {
    normalise::spelled(a).eq(normalise::spelled(b))
}

/// Whether two names are the same once their spaces are left out.
pub(super) fn same_without_spaces(a: &str, b: &str) -> bool {
    a.chars()
        .filter(|c| *c != ' ')
        .eq(b.chars().filter(|c| *c != ' '))
}

/// How likely two last-name keys name the same family, in `[0, 1]`.
pub fn last_name_similarity(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    if same_without_spaces(a, b) {
        return 0.98;
    }
    // A compound name and one of its parts: `martin dupont` / `dupont`.
    let part_of = |short: &str, long: &str| {
        short.len() >= 3 && long.contains(' ') && long.split(' ').any(|w| w == short)
    };
    if part_of(a, b) || part_of(b, a) {
        return 0.9;
    }
    let jw = strsim::jaro_winkler(a, b);
    // One typo in a short name: `dupnt`/`dupont`.
    let dl = strsim::damerau_levenshtein(a, b);
    let typo = if dl == 1 && a.len().min(b.len()) >= 4 {
        0.93
    } else {
        0.0
    };
    jw.max(typo)
}

/// Birth dates `YYYY-MM-DD`: equal 1, one typed digit or day and month swapped 0.75,
/// anything else 0 (two people).
pub fn birth_date_similarity(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    if a.len() == 10 && b.len() == 10 {
        let swapped =
            a.get(..5) == b.get(..5) && a.get(5..7) == b.get(8..10) && a.get(8..10) == b.get(5..7);
        if swapped || strsim::damerau_levenshtein(a, b) == 1 {
            return 0.75;
        }
    }
    0.0
}

/// Street keys: a different house number is another address; otherwise Jaro-Winkler
/// on the words.
pub fn street_similarity(a: &str, b: &str) -> f64 {
    if a == b {
        return 1.0;
    }
    let numbers = |s: &str| -> Vec<String> {
        s.split(' ')
            .filter(|w| !w.is_empty() && w.bytes().all(|c| c.is_ascii_digit()))
            .map(str::to_string)
            .collect()
    };
    let (na, nb) = (numbers(a), numbers(b));
    if !na.is_empty() && !nb.is_empty() && na != nb {
        return 0.0;
    }
    let words = |s: &str| -> String {
        s.split(' ')
            .filter(|w| !w.bytes().all(|c| c.is_ascii_digit()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    strsim::jaro_winkler(&words(a), &words(b))
}

/// Whether `b`'s names are best compared crosswise with `a`'s (see [`similarities`]).
pub fn names_swapped(a: &MatchView, b: &MatchView) -> bool {
    name_similarities(a, b).2
}

/// The first and last names' similarities in their better arrangement, and whether it
/// is crosswise.
fn name_similarities(a: &MatchView, b: &MatchView) -> (Option<f64>, Option<f64>, bool) {
    let pair = |x: Option<&str>, y: Option<&str>, f: fn(&str, &str) -> f64| match (x, y) {
        (Some(x), Some(y)) => Some(f(x, y)),
        _ => None,
    };
    let straight = (
        pair(a.first, b.first, first_name_similarity),
        pair(a.last, b.last, last_name_similarity),
    );
    let sum = |p: (Option<f64>, Option<f64>)| p.0.unwrap_or(0.0) + p.1.unwrap_or(0.0);
    // Crosswise, each name counts 0.97 at most: it cannot beat a straight sum as high,
    // and it is not looked at once one crossed name is below the minimum (most
    // candidates: the same last name, another first name).
    let as_is = (straight.0, straight.1, false);
    if sum(straight) >= 2.0 * 0.97 {
        return as_is;
    }
    let crossed_first = pair(a.first, b.last, first_name_similarity).map(|x| x * 0.97);
    if !crossed_first.is_some_and(|x| x >= CROSSED_NAME_MIN) {
        return as_is;
    }
    let crossed = (
        crossed_first,
        pair(a.last, b.first, last_name_similarity).map(|x| x * 0.97),
    );
    if crossed.1.is_some_and(|x| x >= CROSSED_NAME_MIN) && sum(crossed) > sum(straight) {
        (crossed.0, crossed.1, true)
    } else {
        as_is
    }
}

/// The least similarity of each name for first and last names to count as swapped.
pub const CROSSED_NAME_MIN: f64 = 0.8;

/// Field similarities of two views. Names are also compared crosswise (first against
/// last) and the better arrangement is kept, at a small discount. Crosswise counts only
/// when both names agree that way (at least [`CROSSED_NAME_MIN`] each): `Georgia
/// Kyriacou` and `Georgia Pegg` (a new last name) are not `Pegg Georgia` because
/// `kyriacou`/`georgia` and `georgia`/`pegg` are each half alike.
pub fn similarities(a: &MatchView, b: &MatchView) -> Similarities {
    let mut s = Similarities::default();
    let (first, last, swapped) = name_similarities(a, b);
    s.swapped = swapped;
    s.set(Field::FirstName, first);
    s.set(Field::LastName, last);
    let pair = |x: Option<&str>, y: Option<&str>, f: fn(&str, &str) -> f64| match (x, y) {
        (Some(x), Some(y)) => Some(f(x, y)),
        _ => None,
    };
    s.set(
        Field::BirthDate,
        pair(a.birth, b.birth, birth_date_similarity),
    );
    let (aa, ba) = (a.address, b.address);
    let addr = |f: fn(&AddressKey) -> Option<&str>| (aa.and_then(f), ba.and_then(f));
    let (x, y) = addr(|k| k.street.as_deref());
    s.set(Field::Street, pair(x, y, street_similarity));
    let (x, y) = addr(|k| k.postal_code.as_deref());
    s.set(
        Field::PostalCode,
        pair(x, y, |x, y| if x == y { 1.0 } else { 0.0 }),
    );
    let (x, y) = addr(|k| k.city.as_deref());
    s.set(Field::City, pair(x, y, strsim::jaro_winkler));
    // Local parts are compared at the same provider (or one typed wrong: `gmial.com`):
    // `julien.noel@yahoo.fr` and `julien.noel@gmail.com` are two people's as often as
    // one's, and say no more than their names.
    let mut best: Option<f64> = None;
    for (x, xd) in a.emails.iter().filter_map(|e| email_parts(e)) {
        for (y, yd) in b.emails.iter().filter_map(|e| email_parts(e)) {
            if xd != yd && strsim::jaro_winkler(xd, yd) < 0.9 {
                continue;
            }
            let sim = strsim::jaro_winkler(x, y);
            best = Some(best.map_or(sim, |b: f64| b.max(sim)));
        }
    }
    s.set(Field::EmailLocal, best);
    s
}

/// Probabilistic scoring's veto, as the guardrail of resolve
/// ([`super::PersonSig::contradicts_beyond_typos`]): birth dates more than one typo apart
/// and first names (as arranged) that cannot be the same person's, each or both as
/// `veto` says. A household (one address, one last name) would otherwise add up to a
/// suggestion.
fn contradicts_beyond_typos(
    veto: ContradictionVeto,
    a: &MatchView,
    b: &MatchView,
    g: &super::levels::Gamma,
) -> bool {
    let different = |f: Field| {
        g.levels[f.index()].map(usize::from)
            == Some(super::levels::COMPARISONS[f.index()].levels.len() - 1)
    };
    let b_first = if g.swapped { b.last } else { b.first };
    let first_names = match (a.first, b_first) {
        (Some(x), Some(y)) => {
            different(Field::FirstName) && !normalise::first_name_compatible(x, y)
        }
        _ => false,
    };
    veto.vetoes(different(Field::BirthDate), first_names)
}

/// Something only the person shares weighed for the match: the first name, the birth
/// date or an e-mail local part. A last name and an address alone are a household's as
/// much as a person's: at most a suggestion.
///
/// Names alone (nothing else weighing for the match) link only when the model knows how
/// common they are: a name the data it was fitted on never showed may be the most common
/// of the stream (a shipped model on another population), so two such records are at
/// most a suggestion.
fn personal_evidence(score: &Score) -> bool {
    let personal = score.fields.iter().any(|f| {
        f.weight > 0.0
            && matches!(
                f.field,
                Field::FirstName | Field::BirthDate | Field::EmailLocal
            )
    });
    let mut agreeing = score.fields.iter().filter(|f| f.weight > 0.0);
    let names_alone = agreeing
        .clone()
        .all(|f| matches!(f.field, Field::FirstName | Field::LastName));
    personal && !(names_alone && agreeing.any(|f| f.unseen))
}

/// Something besides the two names was compared (a birth date, an address, an e-mail
/// local part): two records that only share a name, however rare the model thinks it,
/// are not even a suggestion, or every `Marie Martin` would be put before an operator.
fn compared_beyond_names(score: &Score) -> bool {
    score
        .fields
        .iter()
        .any(|f| !matches!(f.field, Field::FirstName | Field::LastName))
}

/// What the rules make of a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Link,
    Suggest,
    /// Below both thresholds, or no rule applies.
    None,
    /// A veto: different birth dates or clearly different first names.
    Vetoed,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Link => "link",
            Decision::Suggest => "suggest",
            Decision::None => "none",
            Decision::Vetoed => "vetoed",
        }
    }
}

/// The verdict on one candidate, with its explanation.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub decision: Decision,
    /// The best rule satisfied (its index in the configuration), if any.
    pub rule: Option<usize>,
    /// Rules: the rule's score. Probabilistic: the match probability (six decimals).
    pub score: f64,
    pub similarities: Similarities,
    /// Probabilistic scoring: the weights behind the probability.
    pub model: Option<Box<Score>>,
}

/// The name records give to probabilistic scoring where they name a rule.
pub const PROBABILISTIC: &str = "probabilistic";

/// The configured rules or model, ready to score candidates.
#[derive(Debug, Clone)]
pub struct Matcher {
    config: Matching,
    /// Per rule, the fields it requires and their minimum similarity.
    rules: Vec<Vec<(Field, f64)>>,
    /// Probabilistic scoring: the model.
    model: Option<MatchModel>,
}

impl Matcher {
    /// Rules were checked by [`Matching::validate`]; unknown field names are skipped.
    /// The model file was checked too; should it have become unreadable since, the
    /// shipped model is used (logged).
    pub fn new(config: &Matching) -> Self {
        let model = (config.scoring == Scoring::Probabilistic).then(|| match &config.model {
            None => MatchModel::default_model(),
            Some(path) => MatchModel::load(path).unwrap_or_else(|e| {
                tracing::error!(path = %path.display(), error = %e, "model file unusable, using the shipped model");
                MatchModel::default_model()
            }),
        });
        Self::with_model(config, model)
    }

    /// With this model for probabilistic scoring (`None`: rules), whatever the
    /// configuration says.
    pub fn with_model(config: &Matching, model: Option<MatchModel>) -> Self {
        let rules = config
            .rules
            .iter()
            .map(|r| {
                r.require
                    .iter()
                    .filter_map(|(name, min)| Field::parse(name).map(|f| (f, *min)))
                    .collect()
            })
            .collect();
        Self {
            config: config.clone(),
            rules,
            model,
        }
    }

    pub fn probabilistic(&self) -> bool {
        self.model.is_some()
    }

    /// The model of probabilistic scoring (`None` under rules).
    pub fn model(&self) -> Option<&MatchModel> {
        self.model.as_ref()
    }

    /// The blocking keys of a view under this scoring.
    pub fn blocking_keys(&self, v: &MatchView) -> Vec<String> {
        if self.probabilistic() {
            probabilistic_blocking_keys(v)
        } else {
            blocking_keys(v)
        }
    }

    /// What records name as the verdict's rule: the rule's name, or `probabilistic`.
    pub fn rule_name(&self, v: &Verdict) -> Option<String> {
        match (&v.model, v.rule) {
            (Some(_), _) => Some(PROBABILISTIC.to_string()),
            (None, Some(r)) => Some(self.config.rules[r].name.clone()),
            (None, None) => None,
        }
    }

    /// The fields a linking verdict matched on: its rule's, or those that weighed for
    /// the match.
    pub fn matched_fields(&self, v: &Verdict) -> Vec<String> {
        match (&v.model, v.rule) {
            (Some(score), _) => score.agreeing_fields(),
            (None, Some(r)) => self.config.rules[r].require.keys().cloned().collect(),
            (None, None) => Vec::new(),
        }
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    pub fn max_candidates(&self) -> usize {
        self.config.max_candidates
    }

    pub fn rule(&self, index: usize) -> &MatchRule {
        &self.config.rules[index]
    }

    /// Scores a candidate against the event's view, with every field's similarity.
    pub fn judge(&self, a: &MatchView, b: &MatchView) -> Verdict {
        self.judge_with(a, b, true)
    }

    /// [`Matcher::judge`] as the stream needs it: under probabilistic scoring, a
    /// candidate that is neither linked, suggested nor vetoed (most of them: nothing is
    /// written about it) gets only its names' similarities.
    pub fn judge_in_stream(&self, a: &MatchView, b: &MatchView) -> Verdict {
        self.judge_with(a, b, false)
    }

    fn judge_with(&self, a: &MatchView, b: &MatchView, always_similarities: bool) -> Verdict {
        if let Some(model) = &self.model {
            let (first, last, swapped) = name_similarities(a, b);
            let gamma = super::levels::compare_arranged(a, b, swapped);
            let score = model.score_gamma(&gamma);
            let p = score.probability;
            let decision = if contradicts_beyond_typos(self.config.contradiction_veto, a, b, &gamma)
            {
                Decision::Vetoed
            } else if p >= self.config.link_probability && personal_evidence(&score) {
                Decision::Link
            } else if p >= self.config.suggest_probability && compared_beyond_names(&score) {
                Decision::Suggest
            } else {
                Decision::None
            };
            let sims = if always_similarities || decision != Decision::None {
                similarities(a, b)
            } else {
                let mut names = Similarities {
                    swapped,
                    ..Similarities::default()
                };
                names.set(Field::FirstName, first);
                names.set(Field::LastName, last);
                names
            };
            return Verdict {
                decision,
                rule: None,
                score: (p * 1e6).round() / 1e6,
                similarities: sims,
                model: Some(Box::new(score)),
            };
        }
        let sims = similarities(a, b);
        let vetoed = sims.get(Field::BirthDate) == Some(0.0)
            || sims.get(Field::FirstName).is_some_and(|s| s < 0.5);
        let Some((rule, score)) = self.best_rule(&sims) else {
            return Verdict {
                decision: if vetoed {
                    Decision::Vetoed
                } else {
                    Decision::None
                },
                rule: None,
                score: 0.0,
                similarities: sims,
                model: None,
            };
        };
        let decision = if vetoed {
            Decision::Vetoed
        } else if score + 1e-9 >= self.config.link_threshold && self.config.rules[rule].link {
            Decision::Link
        } else if score + 1e-9 >= self.config.suggest_threshold {
            Decision::Suggest
        } else {
            Decision::None
        };
        Verdict {
            decision,
            rule: Some(rule),
            score: round3(score),
            similarities: sims,
            model: None,
        }
    }

    /// The rule satisfied with the best score (the mean similarity of its fields), and
    /// that score.
    fn best_rule(&self, sims: &Similarities) -> Option<(usize, f64)> {
        let mut best: Option<(usize, f64)> = None;
        for (i, req) in self.rules.iter().enumerate() {
            let mut total = 0.0;
            let mut ok = !req.is_empty();
            for (field, min) in req {
                match sims.get(*field) {
                    Some(s) if s + 1e-9 >= *min => total += s,
                    _ => {
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                continue;
            }
            let score = total / req.len() as f64;
            let better = match best {
                None => true,
                // Ties go to the rule listed first; a linking rule beats a suggesting one.
                Some((j, s)) => {
                    score > s + 1e-9
                        || ((score - s).abs() <= 1e-9
                            && self.config.rules[i].link
                            && !self.config.rules[j].link)
                }
            };
            if better {
                best = Some((i, score));
            }
        }
        best
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(s: &str) -> String {
        normalise::name_key(s).unwrap()
    }

    fn first(a: &str, b: &str) -> f64 {
        first_name_similarity(&key(a), &key(b))
    }

    fn last(a: &str, b: &str) -> f64 {
        last_name_similarity(&key(a), &key(b))
    }

    #[test]
    fn french_first_names_with_accents_hyphens_and_diminutives() {
        assert_eq!(first("Hélène", "HELENE"), 1.0);
        assert_eq!(first("Jean-Pierre", "Jean Pierre"), 1.0);
        assert!(first("Jean-Pierre", "Jeanpierre") >= 0.95);
        assert!(first("JP", "Jean-Pierre") >= 0.9);
        assert!(first("J.-P.", "Jean-Pierre") >= 0.85);
        assert!(first("Fred", "Frédéric") >= 0.9);
        assert!(first("Cathy", "Catherine") >= 0.9);
        assert!(first("Sofie", "Sophie") >= 0.95);
        assert!(
            first("Sophei", "Sophie") >= 0.9,
            "{}",
            first("Sophei", "Sophie")
        );
        assert!(first("Jean-Pierre", "Jean") >= 0.85);
    }

    #[test]
    fn feminine_forms_and_different_names_are_not_the_same_person() {
        assert!(first("Jean", "Jeanne") < 0.5);
        assert!(first("Louis", "Louise") < 0.5);
        assert!(first("François", "Françoise") < 0.5);
        assert!(first("Michel", "Michèle") < 0.5);
        assert!(first("Marie", "Lucas") < 0.6);
        assert!(first("Thomas", "Nicolas") < 0.8);
    }

    #[test]
    fn last_names_with_typos_compounds_and_particles() {
        assert!(
            last("Dupont", "Dupond") >= 0.92,
            "{}",
            last("Dupont", "Dupond")
        );
        assert!(last("Dupont", "Dupnot") >= 0.9);
        assert!(last("Le Gall", "Legall") >= 0.95);
        assert!(last("Martin-Dupont", "Dupont") >= 0.9);
        assert!(last("Müller", "Muller") >= 0.99);
        assert!(last("D'Arc", "Darc") >= 0.95);
        assert!(last("Dupont", "Martin") < 0.6);
        assert!(last("O'Brien", "OBrien") >= 0.95);
    }

    #[test]
    fn birth_dates_equal_typed_or_different() {
        assert_eq!(birth_date_similarity("1985-04-12", "1985-04-12"), 1.0);
        assert_eq!(birth_date_similarity("1985-04-12", "1985-12-04"), 0.75);
        assert_eq!(birth_date_similarity("1985-04-12", "1985-04-13"), 0.75);
        assert_eq!(birth_date_similarity("1985-04-12", "1990-01-01"), 0.0);
    }

    #[test]
    fn e_mail_local_parts_count_only_at_the_same_provider() {
        let yahoo = ["julien.noel@yahoo.fr".to_string()];
        let gmail = ["julien.noel@gmail.com".to_string()];
        let typo = ["julien.noel@yaho.fr".to_string()];
        let v = |emails: &[String]| {
            similarities(
                &MatchView {
                    emails: &yahoo,
                    ..MatchView::default()
                },
                &MatchView {
                    emails,
                    ..MatchView::default()
                },
            )
            .get(Field::EmailLocal)
        };
        assert_eq!(v(&gmail), None);
        assert_eq!(v(&typo), Some(1.0));
    }

    #[test]
    fn another_house_number_is_another_address() {
        let s = |a: &str, b: &str| {
            street_similarity(
                &normalise::street_key(a).unwrap(),
                &normalise::street_key(b).unwrap(),
            )
        };
        assert_eq!(s("12, R. de la Paix", "12 rue de la paix"), 1.0);
        assert!(s("12 rue de la Paix", "12 rue de la Paiz") > 0.9);
        assert_eq!(s("12 rue de la Paix", "14 rue de la Paix"), 0.0);
    }

    #[test]
    fn spellings_compare_as_the_rewritten_words_would() {
        // The rewriting itself, as it was written before it was compared letter by letter.
        fn rewritten(word: &str) -> String {
            let word = word.replace("ph", "f").replace("th", "t").replace('y', "i");
            let mut out = String::new();
            for c in word.chars() {
                if !out.ends_with(c) {
                    out.push(c);
                }
            }
            out
        }
        let words = [
            "sophie", "sofie", "sofy", "thomas", "tomas", "tthomas", "phth", "ft", "pph", "pf",
            "tth", "t", "philippe", "filipe", "yves", "ives", "anne", "ane", "h", "ph", "", "é",
            "éé", "zoé", "zoe", "mathys", "matis", "pthh", "pt",
        ];
        for a in words {
            for b in words {
                assert_eq!(
                    same_spelling(a, b),
                    rewritten(a) == rewritten(b),
                    "{a:?} {b:?}"
                );
                assert_eq!(
                    same_without_spaces(a, b),
                    a.replace(' ', "") == b.replace(' ', "")
                );
            }
        }
        assert!(same_without_spaces("jean pierre", "jeanpierre"));
        assert!(!same_without_spaces("jean pierre", "jean pierr"));
    }

    #[test]
    fn phonetic_keys_block_spelling_variants_together() {
        assert_eq!(phonetic("dupont"), phonetic("dupond"));
        assert_eq!(phonetic("dupont"), phonetic("dupnot"));
        assert_eq!(phonetic("philippe"), phonetic("filippe"));
        assert_ne!(phonetic("dupont"), phonetic("martin"));
    }

    fn view<'a>(
        first: &'a str,
        last: &'a str,
        birth: Option<&'a str>,
        address: Option<&'a AddressKey>,
    ) -> MatchView<'a> {
        MatchView {
            first: Some(first),
            last: Some(last),
            birth,
            address,
            emails: &[],
        }
    }

    fn paris() -> AddressKey {
        AddressKey {
            street: Some("12 rue de la paix".into()),
            postal_code: Some("75002".into()),
            city: Some("paris".into()),
        }
    }

    #[test]
    fn blocking_keys_are_shared_by_variants_of_one_person() {
        let a = paris();
        let k1 = blocking_keys(&view("sophie", "dupont", Some("1985-04-12"), Some(&a)));
        let k2 = blocking_keys(&view("sofie", "dupond", None, Some(&a)));
        assert!(k1.iter().any(|k| k2.contains(k)));
        // Swapped names still share the birth-date keys.
        let k3 = blocking_keys(&view("dupont", "sophie", Some("1985-04-12"), None));
        assert!(k1.iter().any(|k| k3.contains(k)));
    }

    /// One field of a full record corrupted in each way a form or a till corrupts it.
    type Corruption = (&'static str, Box<dyn Fn(&mut Owned)>);

    fn corruptions() -> Vec<Corruption> {
        vec![
            (
                "first name typo",
                Box::new(|o: &mut Owned| o.first = "sopihe".into()),
            ),
            (
                "first name other",
                Box::new(|o: &mut Owned| o.first = "zoe".into()),
            ),
            (
                "first initial typo",
                Box::new(|o: &mut Owned| o.first = "tophie".into()),
            ),
            (
                "last name typo",
                Box::new(|o: &mut Owned| o.last = "dupnot".into()),
            ),
            (
                "last name other",
                Box::new(|o: &mut Owned| o.last = "martin".into()),
            ),
            (
                "last initial typo",
                Box::new(|o: &mut Owned| o.last = "rupont".into()),
            ),
            (
                "names swapped",
                Box::new(|o: &mut Owned| std::mem::swap(&mut o.first, &mut o.last)),
            ),
            (
                "birth digit",
                Box::new(|o: &mut Owned| o.birth = "1985-04-13".into()),
            ),
            (
                "birth year",
                Box::new(|o: &mut Owned| o.birth = "1958-04-12".into()),
            ),
            (
                "day month swapped",
                Box::new(|o: &mut Owned| o.birth = "1985-12-04".into()),
            ),
            (
                "postal digit",
                Box::new(|o: &mut Owned| o.address.postal_code = Some("75020".into())),
            ),
            (
                "postal digits swapped",
                Box::new(|o: &mut Owned| o.address.postal_code = Some("57002".into())),
            ),
            (
                "postal moved",
                Box::new(|o: &mut Owned| o.address.postal_code = Some("69003".into())),
            ),
            (
                "street typo",
                Box::new(|o: &mut Owned| o.address.street = Some("12 rue de la paiz".into())),
            ),
            (
                "house number",
                Box::new(|o: &mut Owned| o.address.street = Some("21 rue de la paix".into())),
            ),
            (
                "city",
                Box::new(|o: &mut Owned| o.address.city = Some("pari".into())),
            ),
            (
                "email",
                Box::new(|o: &mut Owned| o.emails = vec!["s.dupont@example.org".into()]),
            ),
        ]
    }

    #[derive(Clone)]
    struct Owned {
        first: String,
        last: String,
        birth: String,
        address: AddressKey,
        emails: Vec<String>,
    }

    impl Owned {
        fn view(&self) -> MatchView<'_> {
            MatchView {
                first: Some(&self.first),
                last: Some(&self.last),
                birth: Some(&self.birth),
                address: Some(&self.address),
                emails: &self.emails,
            }
        }
    }

    #[test]
    fn probabilistic_blocking_survives_any_one_corrupted_field() {
        let original = Owned {
            first: "sophie".into(),
            last: "dupont".into(),
            birth: "1985-04-12".into(),
            address: paris(),
            emails: vec!["sophie.dupont@example.org".into()],
        };
        let keys = probabilistic_blocking_keys(&original.view());
        for (what, corrupt) in corruptions() {
            let mut c = original.clone();
            corrupt(&mut c);
            let theirs = probabilistic_blocking_keys(&c.view());
            assert!(
                theirs.iter().any(|k| keys.contains(k)),
                "{what}: no shared key between {keys:?} and {theirs:?}"
            );
        }
        // The same on partial records: name and postal code, name and birth date.
        for (original, kept) in [
            (
                Owned {
                    birth: String::new(),
                    address: AddressKey {
                        street: None,
                        ..paris()
                    },
                    emails: Vec::new(),
                    ..original.clone()
                },
                "name and postal code",
            ),
            (
                Owned {
                    address: AddressKey::default(),
                    emails: Vec::new(),
                    ..original.clone()
                },
                "name and birth date",
            ),
        ] {
            fn view(o: &Owned) -> MatchView<'_> {
                let mut v = o.view();
                if o.birth.is_empty() {
                    v.birth = None;
                }
                if o.address.is_empty() {
                    v.address = None;
                }
                v
            }
            let keys = probabilistic_blocking_keys(&view(&original));
            for (what, corrupt) in corruptions() {
                let mut c = original.clone();
                corrupt(&mut c);
                if c.birth.is_empty() != original.birth.is_empty()
                    || c.address.is_empty() != original.address.is_empty()
                {
                    continue;
                }
                let theirs = probabilistic_blocking_keys(&view(&c));
                assert!(
                    theirs.iter().any(|k| keys.contains(k)),
                    "{kept}, {what}: no shared key between {keys:?} and {theirs:?}"
                );
            }
        }
        // Names alone against a full record, one name typed wrong; a town alone against a
        // postal code, the other name typed wrong; names swapped and one typed wrong.
        let full = probabilistic_blocking_keys(&original.view());
        let town = AddressKey {
            city: Some("paris".into()),
            ..AddressKey::default()
        };
        for (first, last, address) in [
            ("sophie", "dupnot", None),
            ("sopihe", "dupont", None),
            ("sophie", "dupnot", Some(&town)),
            ("dupont", "sopihe", Some(&town)),
        ] {
            let v = MatchView {
                first: Some(first),
                last: Some(last),
                address,
                ..MatchView::default()
            };
            let theirs = probabilistic_blocking_keys(&v);
            assert!(
                theirs.iter().any(|k| full.contains(k)),
                "{first} {last} {address:?}: no shared key between {full:?} and {theirs:?}"
            );
        }
    }

    #[test]
    fn the_rules_keys_left_out_of_probabilistic_blocking_are_held_by_others() {
        // Pairs that share `bi` share `bx`; pairs that share `ad` with a postal code
        // share `hn`; with a town for area, pairs that share `np` share `nc`.
        let town = AddressKey {
            postal_code: None,
            ..paris()
        };
        let paris = paris();
        let views = [
            view("sophie", "dupont", Some("1985-04-12"), Some(&paris)),
            view("sophia", "dupond", Some("1985-04-12"), Some(&paris)),
            view("zoe", "dupont", Some("1985-04-12"), Some(&town)),
            view("sophie", "martin", Some("1985-12-04"), Some(&town)),
            view("s", "d", Some("1985-04-12"), None),
        ];
        for a in &views {
            let (ra, pa) = (blocking_keys(a), probabilistic_blocking_keys(a));
            assert!(pa
                .iter()
                .all(|k| !k.starts_with("bi\0") && !k.starts_with("np\0")));
            // Erasure clears the blocks of every key a store may hold.
            let every = every_blocking_key(a);
            assert!(ra.iter().chain(&pa).all(|k| every.contains(k)));
            assert!(every.iter().any(|k| k.starts_with("pf\0")));
            for b in &views {
                let (rb, pb) = (blocking_keys(b), probabilistic_blocking_keys(b));
                if ra.iter().any(|k| rb.contains(k)) {
                    assert!(pa.iter().any(|k| pb.contains(k)), "{a:?} {b:?}");
                }
            }
        }
    }

    #[test]
    fn names_alone_the_model_never_saw_suggest_and_do_not_link() {
        let config = Matching {
            scoring: Scoring::Probabilistic,
            contradiction_veto: ContradictionVeto::Off,
            ..Matching::default()
        };
        let m = Matcher::new(&config);
        let a = paris();
        let names = |first, last| view(first, last, None, None);
        // The shipped model's data holds every name it saw: these it did not.
        let v = m.judge(
            &view("zbigniew", "wojciechowski", Some("1985-04-12"), Some(&a)),
            &names("zbigniew", "wojciechowski"),
        );
        let score = v.model.as_ref().unwrap();
        assert!(score.fields.iter().all(|f| f.unseen), "{score:?}");
        assert_ne!(v.decision, Decision::Link, "{v:?}");
        // With a birth date agreeing as well, they link.
        let v = m.judge(
            &view("zbigniew", "wojciechowski", Some("1985-04-12"), Some(&a)),
            &view("zbigniew", "wojciechowski", Some("1985-04-12"), None),
        );
        assert_eq!(v.decision, Decision::Link, "{v:?}");
    }

    #[test]
    fn default_rules_link_variants_and_refuse_the_household() {
        let m = Matcher::new(&Matching {
            scoring: Scoring::Rules,
            ..Matching::default()
        });
        let a = paris();
        let store_form = view("sophie", "dupont", Some("1985-04-12"), Some(&a));
        let web = view("sofie", "dupond", Some("1985-04-12"), Some(&a));
        assert_eq!(m.judge(&store_form, &web).decision, Decision::Link);
        let swapped = view("dupont", "sophie", Some("1985-04-12"), None);
        let v = m.judge(&store_form, &swapped);
        assert_eq!(v.decision, Decision::Link, "{v:?}");
        assert!(v.similarities.swapped);
        // Same family, same address: another first name and birth date.
        let brother = view("thomas", "dupont", Some("1982-02-03"), Some(&a));
        assert_eq!(m.judge(&store_form, &brother).decision, Decision::Vetoed);
        let husband = view("jean", "dupont", None, Some(&a));
        let wife = view("jeanne", "dupont", None, Some(&a));
        assert_eq!(m.judge(&husband, &wife).decision, Decision::Vetoed);
        // Same name and postal code only: a suggestion, not a link.
        let other_street = AddressKey {
            street: Some("3 avenue foch".into()),
            ..paris()
        };
        let v = m.judge(
            &view("sophie", "dupont", None, Some(&a)),
            &view("sophie", "dupont", None, Some(&other_street)),
        );
        assert_eq!(v.decision, Decision::Suggest, "{v:?}");
    }
}
