//! Normalisation of identifiers and person data, before any matching.
//!
//! # Contract
//!
//! Every normaliser takes the raw value exactly as a source system sent it and
//! returns either its canonical form or [`Unusable`]. A normaliser **never
//! invents a value**: when the input cannot be read with confidence (an
//! ambiguous date, a phone number that is not valid for its region, an e-mail
//! without a domain, a social handle without its network...) the answer is
//! "unusable", never a guess. Callers drop unusable values (and may count
//! them); they never match on them.
//!
//! Normalisers are pure, allocation-light (ASCII input skips all Unicode
//! normalisation work) and never panic, whatever the input.
//!
//! # Display forms and key forms
//!
//! Person data has two normalised forms:
//!
//! * a **display** form ([`name_display`]) keeps what a person would want to
//!   see: case, accents, hyphens. It is only cleaned (Unicode NFKC, trimmed,
//!   runs of whitespace collapsed). It goes into golden records.
//! * a **key** form ([`name_key`], [`city_key`], [`street_key`]) is a match
//!   key: case-folded, accent-folded, punctuation-free, abbreviations expanded.
//!   It is only ever compared, never shown.
//!
//! Identifiers ([`email`], [`phone`], [`id`], [`id_case_insensitive`],
//! [`social_handle`]) have a single canonical form, which is both stored and
//! compared. [`Normaliser`] names the identifier normalisers so that identifier
//! types can be configured.
//!
//! # Decisions
//!
//! * E-mail: lower-cased whole, but dots and `+tags` are kept (provider-specific
//!   rules such as Gmail's are not universal).
//! * Phone: E.164. An unknown `default_region` is not an error: the number is
//!   then parsed without a region, so only numbers written with their country
//!   code (`+33…`) are usable and national ones (`06…`) are unusable. Use
//!   [`region`] to validate a configured region up front. With region `FR`, a
//!   national number of a French overseas department (`0690…`, `0692…`), which
//!   is part of the French numbering plan, resolves to its own country code.
//!   Extensions and letters are unusable.
//! * Birth date: `YYYY-MM-DD`; day/month/year order for `12/04/1985`; two-digit
//!   years are unusable (ambiguous); a timestamp keeps its literal date part
//!   (no time-zone shift).
//! * Postal codes: compact (no spaces or hyphens) everywhere except Great
//!   Britain (`SW1A 1AA`). Netherlands is compact too: `1234AB`. A leading
//!   country prefix (`F-75002`, `L-1234`) is removed.

use crate::generations::Generations;
use std::fmt::Write as _;

use unicode_normalization::char::{decompose_compatible, is_combining_mark};
use unicode_normalization::UnicodeNormalization;

/// Longest identifier ([`id`], [`id_case_insensitive`], [`social_handle`]), in bytes.
pub const MAX_ID_BYTES: usize = 256;
/// Longest name or key, in characters, after normalisation.
pub const MAX_TEXT_CHARS: usize = 256;
/// Longest raw free-text input (names, cities, streets), in bytes after
/// trimming; bounds the work done on garbage input.
pub const MAX_RAW_TEXT_BYTES: usize = 4096;
/// Longest e-mail address, in bytes (RFC 5321 path limit).
pub const MAX_EMAIL_BYTES: usize = 254;
/// Longest local part of an e-mail address, in bytes (RFC 5321).
pub const MAX_EMAIL_LOCAL_BYTES: usize = 64;
/// Longest raw phone number, in bytes after trimming.
pub const MAX_PHONE_BYTES: usize = 64;
/// Longest raw postal code, in bytes after trimming.
pub const MAX_POSTAL_BYTES: usize = 32;

/// Why a raw value cannot be used. Messages are lower-case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unusable {
    /// Nothing left once trimmed.
    #[error("empty value")]
    Empty,
    /// Over the size limit for this kind of value.
    #[error("too long (max {max})")]
    TooLong { max: usize },
    /// Contains a control character (other than whitespace where whitespace is allowed).
    #[error("contains a control character")]
    ControlCharacter,
    /// Does not have the shape of a `what`.
    #[error("invalid {what}")]
    Invalid { what: &'static str },
    /// Has the right shape but a value outside the accepted range.
    #[error("{what} out of range")]
    OutOfRange { what: &'static str },
    /// A name made of digits only.
    #[error("digits only")]
    DigitsOnly,
    /// No alphabetic character (a name or address needs letters).
    #[error("no letters")]
    NoLetters,
    /// A social handle without its `network:` prefix.
    #[error("missing network prefix")]
    MissingNetwork,
    /// Not a known country.
    #[error("unknown country")]
    UnknownCountry,
}

/// The identifier normalisers, by name, for configurable identifier types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Normaliser {
    /// [`email`]
    Email,
    /// [`phone`]
    Phone,
    /// [`id`]
    Id,
    /// [`id_case_insensitive`]
    IdCaseInsensitive,
    /// [`social_handle`]
    SocialHandle,
}

impl Normaliser {
    /// Normalise `raw` with this normaliser. `default_region` is only used by
    /// [`Normaliser::Phone`].
    pub fn apply(&self, raw: &str, default_region: &str) -> Result<String, Unusable> {
        match self {
            Normaliser::Email => email(raw),
            Normaliser::Phone => phone(raw, default_region),
            Normaliser::Id => id(raw),
            Normaliser::IdCaseInsensitive => id_case_insensitive(raw),
            Normaliser::SocialHandle => social_handle(raw),
        }
    }
}

// ---------------------------------------------------------------------------
// Small helpers
// ---------------------------------------------------------------------------

/// `s` without `prefix`, compared ASCII case-insensitively.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// Zero-width and invisible formatting characters, removed from text.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}' | '\u{200B}' | '\u{200C}' | '\u{200D}' | '\u{2060}' | '\u{FEFF}'
    )
}

/// Characters that separate words in names: hyphens, apostrophes, dots, underscores.
fn is_word_separator(c: char) -> bool {
    matches!(
        c,
        '-' | '\'' | '.' | '_' | '`' | '\u{00B4}' | '\u{02BC}' | '\u{2010}'
            ..='\u{2015}' | '\u{2018}' | '\u{2019}' | '\u{2212}'
    )
}

/// Letters that do not lose their accent by decomposition.
fn fold_special(c: char) -> Option<&'static str> {
    Some(match c {
        'ß' => "ss",
        'æ' => "ae",
        'œ' => "oe",
        'ø' => "o",
        'ł' => "l",
        'đ' | 'ð' => "d",
        'þ' => "th",
        'ħ' => "h",
        'ı' => "i",
        _ => return None,
    })
}

fn too_many_chars(s: &str, max: usize) -> bool {
    s.len() > max && s.chars().count() > max
}

// ---------------------------------------------------------------------------
// Identifiers
// ---------------------------------------------------------------------------

/// Normalise an e-mail address: trimmed, `mailto:` removed, lower-cased.
///
/// Requires exactly one `@`, a non-empty local part (at most 64 bytes), a
/// domain with at least one dot and well-formed labels, and no whitespace or
/// control character. Dots and `+tags` are kept.
pub fn email(raw: &str) -> Result<String, Unusable> {
    const WHAT: Unusable = Unusable::Invalid { what: "email" };
    let mut s = raw.trim();
    if let Some(rest) = strip_prefix_ci(s, "mailto:") {
        s = rest.trim();
    }
    if s.is_empty() {
        return Err(Unusable::Empty);
    }
    if s.len() > MAX_EMAIL_BYTES {
        return Err(Unusable::TooLong {
            max: MAX_EMAIL_BYTES,
        });
    }
    if s.chars().any(char::is_control) {
        return Err(Unusable::ControlCharacter);
    }
    let (local, domain) = s.split_once('@').ok_or(WHAT)?;
    if local.is_empty() || domain.contains('@') {
        return Err(WHAT);
    }
    if local.len() > MAX_EMAIL_LOCAL_BYTES {
        return Err(Unusable::TooLong {
            max: MAX_EMAIL_LOCAL_BYTES,
        });
    }
    if local.chars().any(|c| {
        c.is_whitespace()
            || matches!(
                c,
                ',' | ';' | ':' | '<' | '>' | '(' | ')' | '[' | ']' | '"' | '\\'
            )
    }) {
        return Err(WHAT);
    }
    if !domain.contains('.') {
        return Err(WHAT);
    }
    let mut labels = domain.split('.').peekable();
    while let Some(label) = labels.next() {
        if label.is_empty()
            || label.starts_with('-')
            || label.ends_with('-')
            || !label.chars().all(|c| c == '-' || c.is_alphanumeric())
        {
            return Err(WHAT);
        }
        // The top-level domain is never numeric.
        if labels.peek().is_none() && label.chars().all(|c| c.is_ascii_digit()) {
            return Err(WHAT);
        }
    }
    Ok(if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        s.to_lowercase()
    })
}

/// The phone-number region for a region string such as `"FR"` (any case,
/// trimmed; `"UK"` is taken as `GB`), or `None` when it is not a region the
/// phone-number metadata knows.
pub fn region(raw: &str) -> Option<phonenumber::country::Id> {
    let &[a, b] = raw.trim().as_bytes() else {
        return None;
    };
    let up = [a.to_ascii_uppercase(), b.to_ascii_uppercase()];
    let code = std::str::from_utf8(&up).ok()?;
    let code = if code == "UK" { "GB" } else { code };
    code.parse().ok()
}

/// Regions of French overseas departments and collectivities that share the
/// French national numbering plan (`0590…`, `0690…`, `0262…`, `0692…`...).
const FRENCH_OVERSEAS: [phonenumber::country::Id; 8] = {
    use phonenumber::country::Id;
    [
        Id::GP,
        Id::RE,
        Id::MQ,
        Id::GF,
        Id::YT,
        Id::PM,
        Id::BL,
        Id::MF,
    ]
};

/// Normalise a phone number to E.164 (`+33612345678`).
///
/// Accepts digits with the usual separators (spaces, `-`, `.`, `/`,
/// parentheses), a leading `+` or international prefix (`00`), and a `tel:`
/// prefix. The number must be valid for its region according to the
/// phone-number metadata. `default_region` (e.g. `"FR"`) is used for numbers
/// written without a country code; when it is not a known region, the number
/// is parsed without one, so only numbers with an explicit `+country code`
/// are usable.
pub fn phone(raw: &str, default_region: &str) -> Result<String, Unusable> {
    const WHAT: Unusable = Unusable::Invalid {
        what: "phone number",
    };
    let mut s = raw.trim();
    if let Some(rest) = strip_prefix_ci(s, "tel:") {
        s = rest.trim();
    }
    if s.is_empty() {
        return Err(Unusable::Empty);
    }
    if s.len() > MAX_PHONE_BYTES {
        return Err(Unusable::TooLong {
            max: MAX_PHONE_BYTES,
        });
    }
    // Keep only digits and a leading '+'; anything but a separator is unusable.
    let mut cleaned = String::with_capacity(s.len());
    let mut digits = 0usize;
    let mut push = |c: char| -> Result<(), Unusable> {
        match c {
            '0'..='9' => {
                digits += 1;
                cleaned.push(c);
            }
            '+' if cleaned.is_empty() => cleaned.push('+'),
            '-' | '.' | '/' | '(' | ')' => {}
            c if c.is_whitespace() || is_invisible(c) => {}
            c if c.is_control() => return Err(Unusable::ControlCharacter),
            _ => return Err(WHAT),
        }
        Ok(())
    };
    if s.is_ascii() {
        s.chars().try_for_each(&mut push)?;
    } else {
        // Full-width digits and other compatibility forms.
        s.nfkc().try_for_each(&mut push)?;
    }
    if digits < 3 {
        return Err(WHAT);
    }

    // The region is a configuration value: no space in it (a region code or empty).
    let key = format!("{default_region} {cleaned}");
    PHONES.with_borrow_mut(|memo| {
        memo.get_or_insert_with(key, || parse_phone(&cleaned, default_region))
    })
}

thread_local! {
    /// Phone numbers already parsed on this thread, by default region and cleaned text:
    /// parsing against the metadata is most of the cost of a phone, and the same numbers
    /// come back event after event.
    static PHONES: std::cell::RefCell<Generations<String, Result<String, Unusable>>> =
        std::cell::RefCell::new(Generations::with_entries(PHONE_MEMO_ENTRIES));
}

/// Entries of each of the two generations of [`PHONES`].
const PHONE_MEMO_ENTRIES: usize = 16_384;

/// [`phone`] past the cleaning: `cleaned` is digits with perhaps a leading `+`.
fn parse_phone(cleaned: &str, default_region: &str) -> Result<String, Unusable> {
    const WHAT: Unusable = Unusable::Invalid {
        what: "phone number",
    };
    let region = region(default_region);
    let parsed = phonenumber::parse(region, cleaned)
        .ok()
        .filter(phonenumber::PhoneNumber::is_valid);
    let number = match parsed {
        Some(number) => number,
        None if region == Some(phonenumber::country::Id::FR)
            && !cleaned.starts_with('+')
            && !cleaned.starts_with("00") =>
        {
            FRENCH_OVERSEAS
                .iter()
                .find_map(|&r| {
                    phonenumber::parse(Some(r), cleaned)
                        .ok()
                        .filter(phonenumber::PhoneNumber::is_valid)
                })
                .ok_or(WHAT)?
        }
        None => return Err(WHAT),
    };
    let mut out = String::with_capacity(16);
    write!(out, "{}", number.format().mode(phonenumber::Mode::E164)).map_err(|_| WHAT)?;
    Ok(out)
}

/// Normalise an opaque identifier: trimmed, case preserved. Unusable when
/// empty, longer than [`MAX_ID_BYTES`] bytes or containing a control character.
pub fn id(raw: &str) -> Result<String, Unusable> {
    check_id(raw).map(str::to_owned)
}

fn check_id(raw: &str) -> Result<&str, Unusable> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(Unusable::Empty);
    }
    if s.len() > MAX_ID_BYTES {
        return Err(Unusable::TooLong { max: MAX_ID_BYTES });
    }
    if s.chars().any(char::is_control) {
        return Err(Unusable::ControlCharacter);
    }
    Ok(s)
}

/// Like [`id`], but lower-cased: for identifiers whose case carries no
/// meaning, such as hexadecimal device or cookie ids.
pub fn id_case_insensitive(raw: &str) -> Result<String, Unusable> {
    let s = check_id(raw)?;
    if s.is_ascii() {
        return Ok(s.to_ascii_lowercase());
    }
    let out = s.to_lowercase();
    if out.len() > MAX_ID_BYTES {
        return Err(Unusable::TooLong { max: MAX_ID_BYTES });
    }
    Ok(out)
}

/// Normalise a social-network handle written `network:handle`:
/// `Twitter:@Sophie_D` gives `twitter:sophie_d`.
///
/// The network (ASCII letters, digits, `-`, `_`, `.`) and the handle are
/// trimmed and lower-cased, and one leading `@` is removed from the handle. A
/// handle without its network is unusable: the network is what makes it an
/// identifier. A handle containing whitespace, `/` or `:` (a URL, two
/// handles...) is unusable.
pub fn social_handle(raw: &str) -> Result<String, Unusable> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(Unusable::Empty);
    }
    if s.len() > MAX_ID_BYTES {
        return Err(Unusable::TooLong { max: MAX_ID_BYTES });
    }
    if s.chars().any(char::is_control) {
        return Err(Unusable::ControlCharacter);
    }
    let (network, handle) = s.split_once(':').ok_or(Unusable::MissingNetwork)?;
    let network = network.trim();
    if network.is_empty() {
        return Err(Unusable::MissingNetwork);
    }
    if !network
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(Unusable::Invalid { what: "network" });
    }
    let handle = handle.trim();
    let handle = handle.strip_prefix('@').unwrap_or(handle);
    if handle.is_empty() {
        return Err(Unusable::Empty);
    }
    if handle
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '/' | ':' | '\\'))
    {
        return Err(Unusable::Invalid { what: "handle" });
    }
    let mut out = String::with_capacity(s.len());
    for b in network.bytes() {
        out.push(char::from(b.to_ascii_lowercase()));
    }
    out.push(':');
    if handle.is_ascii() {
        for b in handle.bytes() {
            out.push(char::from(b.to_ascii_lowercase()));
        }
    } else {
        for c in handle.nfkc() {
            out.extend(c.to_lowercase());
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Names and free text
// ---------------------------------------------------------------------------

fn trimmed_text(raw: &str) -> Result<&str, Unusable> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(Unusable::Empty);
    }
    if s.len() > MAX_RAW_TEXT_BYTES {
        return Err(Unusable::TooLong {
            max: MAX_RAW_TEXT_BYTES,
        });
    }
    Ok(s)
}

/// Normalise a name for display: Unicode NFKC, trimmed, runs of whitespace
/// collapsed to one space, invisible characters removed; case, accents and
/// punctuation kept. Unusable when empty, made of digits only, without any
/// letter, containing a control character other than whitespace, or longer
/// than [`MAX_TEXT_CHARS`] characters.
pub fn name_display(raw: &str) -> Result<String, Unusable> {
    let s = trimmed_text(raw)?;
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    let mut has_alpha = false;
    let mut all_digits = true;
    let mut push = |c: char| -> Result<(), Unusable> {
        if c.is_whitespace() {
            pending_space = true;
        } else if c.is_control() {
            return Err(Unusable::ControlCharacter);
        } else if !is_invisible(c) {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            has_alpha |= c.is_alphabetic();
            all_digits &= c.is_numeric();
            out.push(c);
        }
        Ok(())
    };
    if s.is_ascii() {
        s.chars().try_for_each(&mut push)?;
    } else {
        s.nfkc().try_for_each(&mut push)?;
    }
    if out.is_empty() {
        return Err(Unusable::Empty);
    }
    if !has_alpha {
        return Err(if all_digits {
            Unusable::DigitsOnly
        } else {
            Unusable::NoLetters
        });
    }
    if too_many_chars(&out, MAX_TEXT_CHARS) {
        return Err(Unusable::TooLong {
            max: MAX_TEXT_CHARS,
        });
    }
    Ok(out)
}

/// Builds a match key one character at a time.
struct KeyBuilder {
    out: String,
    pending_space: bool,
    has_alpha: bool,
    last_was_digit: bool,
    /// Address mode: all punctuation separates words, and a number glued to
    /// letters is split from them (`12bis` → `12 bis`).
    address: bool,
}

impl KeyBuilder {
    fn new(capacity: usize, address: bool) -> Self {
        KeyBuilder {
            out: String::with_capacity(capacity),
            pending_space: false,
            has_alpha: false,
            last_was_digit: false,
            address,
        }
    }

    /// Push a raw character: lower-cased and accent-folded here.
    fn push_raw(&mut self, c: char) {
        if c.is_ascii() {
            self.push_folded(c.to_ascii_lowercase());
            return;
        }
        for lower in c.to_lowercase() {
            decompose_compatible(lower, |d| {
                if let Some(folded) = fold_special(d) {
                    folded.chars().for_each(|f| self.push_folded(f));
                } else if !is_combining_mark(d) {
                    self.push_folded(d);
                }
            });
        }
    }

    /// Push a character that is already lower-cased and accent-folded.
    fn push_folded(&mut self, c: char) {
        if c.is_alphanumeric() {
            let is_digit = c.is_numeric();
            if self.address && self.last_was_digit && !is_digit {
                self.pending_space = true;
            }
            if self.pending_space && !self.out.is_empty() {
                self.out.push(' ');
            }
            self.pending_space = false;
            self.last_was_digit = is_digit;
            self.has_alpha |= c.is_alphabetic();
            self.out.push(c);
        } else if is_invisible(c) || is_combining_mark(c) {
            // Removed without separating words.
        } else if c.is_whitespace() || is_word_separator(c) || self.address {
            self.pending_space = true;
            self.last_was_digit = false;
        }
        // Other punctuation and symbols are dropped.
    }

    fn finish(self) -> Result<String, Unusable> {
        if !self.has_alpha {
            return Err(Unusable::NoLetters);
        }
        if too_many_chars(&self.out, MAX_TEXT_CHARS) {
            return Err(Unusable::TooLong {
                max: MAX_TEXT_CHARS,
            });
        }
        Ok(self.out)
    }
}

fn fold_key(raw: &str, address: bool) -> Result<String, Unusable> {
    let s = trimmed_text(raw)?;
    let mut key = KeyBuilder::new(s.len(), address);
    if s.is_ascii() {
        s.chars().for_each(|c| key.push_raw(c));
    } else {
        s.nfkc().for_each(|c| key.push_raw(c));
    }
    key.finish()
}

/// Match key for a name: NFKC, lower-cased, accents folded (`é` → `e`,
/// `ß` → `ss`, `æ` → `ae`, `œ` → `oe`, `ø` → `o`, `ł` → `l`...), hyphens,
/// apostrophes, dots and underscores turned into spaces, other punctuation
/// dropped, whitespace collapsed and trimmed:
/// `"  Hélène-Marie  D'Arc "` gives `"helene marie d arc"`.
/// Unusable when no letter remains.
pub fn name_key(raw: &str) -> Result<String, Unusable> {
    fold_key(raw, false)
}

/// Rebuild a key from its words, mapping each through `expand`.
fn map_words<'a>(words: &[&'a str], expand: impl Fn(&'a str) -> &'a str) -> String {
    let mut out = String::with_capacity(words.iter().map(|w| w.len() + 4).sum());
    for word in words {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(expand(word));
    }
    out
}

fn is_all_digits(word: &str) -> bool {
    !word.is_empty() && word.bytes().all(|b| b.is_ascii_digit())
}

/// `02`, `3`, `3e`, `1er`, `16eme`, `2nd`: an arrondissement number.
fn is_arrondissement(word: &str) -> bool {
    let digits = word.bytes().take_while(u8::is_ascii_digit).count();
    let (number, suffix) = word.split_at(digits);
    (1..=2).contains(&number.len())
        && matches!(suffix, "" | "e" | "er" | "eme" | "ere" | "nd" | "nde")
}

/// Match key for a city: [`name_key`], then a trailing `cedex` (with its
/// optional number) and a trailing arrondissement (`paris 02`, `Lyon 3e`,
/// `Paris 1er arrondissement`) are dropped, and `st`/`ste` become
/// `saint`/`sainte`: `"Saint-Étienne"` and `"ST ETIENNE CEDEX 2"` both give
/// `"saint etienne"`.
pub fn city_key(raw: &str) -> Result<String, Unusable> {
    let key = name_key(raw)?;
    let mut words: Vec<&str> = key.split(' ').collect();
    // Trailing CEDEX, with or without its number.
    if let [.., "cedex", n] = words.as_slice() {
        if is_all_digits(n) {
            words.truncate(words.len() - 2);
        }
    }
    if let [.., "cedex"] = words.as_slice() {
        words.pop();
    }
    // Trailing arrondissement, never the whole name.
    if let [_, .., "arrondissement" | "arr" | "arrdt"] = words.as_slice() {
        if words.len() > 2
            && words
                .get(words.len() - 2)
                .is_some_and(|w| is_arrondissement(w))
        {
            words.truncate(words.len() - 2);
        }
    }
    if let [_, .., last] = words.as_slice() {
        if is_arrondissement(last) {
            words.pop();
        }
    }
    let out = map_words(&words, |w| match w {
        "st" => "saint",
        "ste" => "sainte",
        w => w,
    });
    if !out.chars().any(char::is_alphabetic) {
        return Err(Unusable::NoLetters);
    }
    Ok(out)
}

/// Match key for an address line: like [`name_key`], but every punctuation
/// mark separates words, a number glued to letters is split (`12bis` →
/// `12 bis`), and common French abbreviations are expanded as whole words
/// (`r` → `rue`, `av`/`ave` → `avenue`, `bd`/`bld`/`boul` → `boulevard`,
/// `pl` → `place`, `che`/`chem` → `chemin`, `imp` → `impasse`, `all` →
/// `allee`, `fbg` → `faubourg`, `rte` → `route`, `sq` → `square`, `qu` →
/// `quai`, `st`/`ste` → `saint`/`sainte`...). `bis` and `ter` are kept.
/// `"12, R. de la Paix"` and `"12 rue de la paix"` give the same key.
pub fn street_key(raw: &str) -> Result<String, Unusable> {
    let key = fold_key(raw, true)?;
    let words: Vec<&str> = key.split(' ').collect();
    Ok(map_words(&words, |w| match w {
        "r" => "rue",
        "av" | "ave" | "avn" => "avenue",
        "bd" | "bld" | "blvd" | "bvd" | "boul" => "boulevard",
        "pl" => "place",
        "che" | "chem" | "ch" => "chemin",
        "imp" => "impasse",
        "all" => "allee",
        "fbg" | "fg" => "faubourg",
        "rte" => "route",
        "sq" => "square",
        "qu" => "quai",
        "crs" => "cours",
        "st" => "saint",
        "ste" => "sainte",
        w => w,
    }))
}

/// Whether a normalised e-mail address is a placeholder: its local part, without
/// punctuation, is one of `junk_locals`, or the domain's own name (`a@a.fr`,
/// `test@test.com`).
pub fn is_placeholder_email(email: &str, junk_locals: &[String]) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else {
        return false;
    };
    let squeezed: String = local.chars().filter(|c| c.is_alphanumeric()).collect();
    junk_locals.contains(&squeezed) || domain.split('.').next() == Some(local)
}

/// Whether an E.164 number is a placeholder: its last nine digits are one digit
/// repeated, or a run (`123456789`, `987654321`), or its last eight one digit after a
/// mobile or area prefix (`04 0000 0000`, `06 00 00 00 00`).
pub fn is_placeholder_phone(e164: &str) -> bool {
    let digits: Vec<u8> = e164.bytes().filter(u8::is_ascii_digit).collect();
    let Some(tail) = digits.get(digits.len().saturating_sub(9)..) else {
        return false;
    };
    if tail.len() < 9 {
        return false;
    }
    let steps: Vec<i16> = tail
        .windows(2)
        .map(|w| i16::from(w[1]) - i16::from(w[0]))
        .collect();
    steps.iter().all(|d| *d == 0)
        || steps[1..].iter().all(|d| *d == 0)
        || steps.iter().all(|d| *d == 1)
        || steps.iter().all(|d| *d == -1)
}

/// Whether two first-name keys (from [`name_key`]) may be the same person's
/// first name. They are compatible unless clearly different: equal, one is
/// the initial of the other (`j` / `jean`, `j p` / `jean pierre`), same first
/// word (`marie` / `marie helene`), or close spelling: Jaro-Winkler ≥ 0.88 on
/// the keys, on their first words, or on their first words with spelling
/// variants folded (`ph` → `f`, `th` → `t`, `y` → `i`, doubled letters once:
/// `sophie` / `sofie`). An empty key carries no evidence and is compatible.
pub fn first_name_compatible(a_key: &str, b_key: &str) -> bool {
    const THRESHOLD: f64 = 0.88;
    let (a, b) = (a_key.trim(), b_key.trim());
    if a.is_empty() || b.is_empty() || a == b {
        return true;
    }
    if initials_of(a, b) || initials_of(b, a) {
        return true;
    }
    // A compound name and one of its parts: `marie helene` / `helene`.
    let shares_a_word = a
        .split_whitespace()
        .any(|w| w.len() >= 3 && b.split_whitespace().any(|v| v == w));
    let first_a = a.split_whitespace().next().unwrap_or(a);
    let first_b = b.split_whitespace().next().unwrap_or(b);
    if shares_a_word
        || first_a == first_b
        || strsim::jaro_winkler(a, b) >= THRESHOLD
        || strsim::jaro_winkler(first_a, first_b) >= THRESHOLD
    {
        return true;
    }
    let (sound_a, sound_b) = (spelling_key(first_a), spelling_key(first_b));
    sound_a == sound_b || strsim::jaro_winkler(&sound_a, &sound_b) >= THRESHOLD
}

/// Folds spelling variants that sound the same: `ph` → `f`, `th` → `t`,
/// `y` → `i`, doubled letters once (`sophie` / `sofie`, `matthieu` /
/// `mathieu`, `sylvie` / `silvie`).
fn spelling_key(word: &str) -> String {
    spelled(word).collect()
}

/// The letters of `word` as [`spelling_key`] folds them, one at a time: `ph` → `f`,
/// `th` → `t`, `y` → `i`, then each run of one letter once.
pub(crate) fn spelled(word: &str) -> impl Iterator<Item = char> + '_ {
    let mut chars = word.chars().peekable();
    let mut last = None;
    std::iter::from_fn(move || loop {
        let c = chars.next()?;
        let c = match (c, chars.peek()) {
            ('p', Some('h')) => {
                chars.next();
                'f'
            }
            ('t', Some('h')) => {
                chars.next();
                't'
            }
            ('y', _) => 'i',
            (c, _) => c,
        };
        if last != Some(c) {
            last = Some(c);
            return Some(c);
        }
    })
}

/// `initials` is made of single letters, each the initial of the matching word of `name`.
fn initials_of(initials: &str, name: &str) -> bool {
    let mut names = name.split_whitespace();
    let mut any = false;
    for initial in initials.split_whitespace() {
        let mut chars = initial.chars();
        let (Some(i), None) = (chars.next(), chars.next()) else {
            return false;
        };
        match names.next() {
            Some(word) if word.chars().count() > 1 && word.starts_with(i) => any = true,
            _ => return false,
        }
    }
    any
}

// ---------------------------------------------------------------------------
// Dates, countries, postal codes
// ---------------------------------------------------------------------------

fn parse_number(s: &str, lengths: std::ops::RangeInclusive<usize>) -> Option<u32> {
    if !lengths.contains(&s.len()) || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Normalise a birth date to `YYYY-MM-DD`.
///
/// Accepts `1985-04-12` (also with `/` or `.`), `12/04/1985`, `12.04.1985`,
/// `12-04-1985` (day first, the French order), one-digit days and months, and
/// a timestamp such as `1985-04-12T00:00:00Z` (its literal date part, without
/// time-zone conversion). Two-digit years are unusable (ambiguous), so are
/// impossible dates and years outside 1900..=2100; the caller checks the date
/// against the event time.
pub fn birth_date(raw: &str) -> Result<String, Unusable> {
    const WHAT: Unusable = Unusable::Invalid { what: "date" };
    let s = raw.trim();
    if s.is_empty() {
        return Err(Unusable::Empty);
    }
    if s.len() > 64 {
        return Err(Unusable::TooLong { max: 64 });
    }
    let (date, time) = match s.find(['T', 't', ' ']) {
        Some(at) => (
            s.get(..at).ok_or(WHAT)?,
            s.get(at + 1..).ok_or(WHAT)?.trim(),
        ),
        None => (s, ""),
    };
    let time_ok = time.starts_with(|c: char| c.is_ascii_digit())
        && time
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b':' | b'.' | b'+' | b'-' | b'Z' | b'z'));
    // A separator must be followed by a time.
    if date.len() != s.len() && !time_ok {
        return Err(WHAT);
    }
    let sep = date
        .chars()
        .find(|c| !c.is_ascii_digit())
        .filter(|c| matches!(c, '-' | '/' | '.'))
        .ok_or(WHAT)?;
    let mut parts = date.split(sep);
    let (Some(p1), Some(p2), Some(p3), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(WHAT);
    };
    let (year, month, day) = if p1.len() == 4 {
        (
            parse_number(p1, 4..=4),
            parse_number(p2, 1..=2),
            parse_number(p3, 1..=2),
        )
    } else {
        (
            parse_number(p3, 4..=4),
            parse_number(p2, 1..=2),
            parse_number(p1, 1..=2),
        )
    };
    let (Some(year), Some(month), Some(day)) = (year, month, day) else {
        return Err(WHAT);
    };
    if !(1900..=2100).contains(&year) {
        return Err(Unusable::OutOfRange { what: "year" });
    }
    let year = i32::try_from(year).map_err(|_| WHAT)?;
    chrono::NaiveDate::from_ymd_opt(year, month, day).ok_or(WHAT)?;
    let mut out = String::with_capacity(10);
    write!(out, "{year:04}-{month:02}-{day:02}").map_err(|_| WHAT)?;
    Ok(out)
}

/// ISO 3166-1 alpha-2 codes, sorted.
const ISO_3166_ALPHA2: [&str; 249] = [
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// Country names and alpha-3 codes of the retailer's markets, by name key.
fn country_by_name(key: &str) -> Option<&'static str> {
    Some(match key {
        "france" | "fra" | "republique francaise" => "FR",
        "belgique" | "belgium" | "belgie" | "belgien" | "bel" => "BE",
        "suisse" | "switzerland" | "schweiz" | "svizzera" | "che" => "CH",
        "luxembourg" | "luxemburg" | "lux" => "LU",
        "deutschland" | "germany" | "allemagne" | "deu" => "DE",
        "espana" | "spain" | "espagne" | "esp" => "ES",
        "italia" | "italy" | "italie" | "ita" => "IT",
        "united kingdom" | "great britain" | "royaume uni" | "u k" | "gbr" => "GB",
        "nederland" | "netherlands" | "the netherlands" | "pays bas" | "nld" => "NL",
        "portugal" | "prt" => "PT",
        "united states" | "united states of america" | "etats unis" | "u s" | "u s a" | "usa" => {
            "US"
        }
        _ => return None,
    })
}

/// Like [`country`], without allocating: the ISO 3166 alpha-2 code.
pub fn country_code(raw: &str) -> Result<&'static str, Unusable> {
    let s = raw.trim();
    if s.is_empty() {
        return Err(Unusable::Empty);
    }
    if let &[a, b] = s.as_bytes() {
        if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() {
            let up = [a.to_ascii_uppercase(), b.to_ascii_uppercase()];
            let code = match &up {
                b"UK" => b"GB",
                other => other,
            };
            return std::str::from_utf8(code)
                .ok()
                .and_then(|c| ISO_3166_ALPHA2.binary_search(&c).ok())
                .and_then(|i| ISO_3166_ALPHA2.get(i).copied())
                .ok_or(Unusable::UnknownCountry);
        }
    }
    if s.len() > 64 {
        return Err(Unusable::UnknownCountry);
    }
    let key = name_key(s).map_err(|_| Unusable::UnknownCountry)?;
    country_by_name(&key).ok_or(Unusable::UnknownCountry)
}

/// Normalise a country to its ISO 3166-1 alpha-2 code, upper-case.
///
/// Accepts any ISO alpha-2 code in any case (`UK` is taken as `GB`), and the
/// names and alpha-3 codes of the retailer's markets (France/FRA,
/// Belgique/Belgium/BEL, Suisse/Switzerland/CHE, Luxembourg/LUX,
/// Deutschland/Germany/DEU, España/Spain/ESP, Italia/Italy/ITA, United
/// Kingdom/GBR, Nederland/Netherlands/NLD, Portugal/PRT, United States/USA),
/// matched on their name key. Anything else is unusable.
pub fn country(raw: &str) -> Result<String, Unusable> {
    country_code(raw).map(str::to_owned)
}

fn digits_of_len(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit())
}

/// A British postcode in its canonical form (`SW1A 1AA`), from its compact form.
fn gb_postcode(compact: &str) -> Option<String> {
    if compact == "GIR0AA" {
        return Some("GIR 0AA".to_owned());
    }
    if !(5..=7).contains(&compact.len()) {
        return None;
    }
    let (outward, inward) = compact.split_at(compact.len() - 3);
    let shape = |s: &str| -> String {
        s.bytes()
            .map(|b| if b.is_ascii_digit() { '9' } else { 'A' })
            .collect()
    };
    if shape(inward) != "9AA" {
        return None;
    }
    if !matches!(
        shape(outward).as_str(),
        "A9" | "A99" | "A9A" | "AA9" | "AA99" | "AA9A"
    ) {
        return None;
    }
    let mut out = String::with_capacity(compact.len() + 1);
    out.push_str(outward);
    out.push(' ');
    out.push_str(inward);
    Some(out)
}

/// Normalise a postal code, for the country it belongs to when known.
///
/// Trimmed and upper-cased; spaces and hyphens are removed, and any other
/// character that is not an ASCII letter or digit makes it unusable. Then, by
/// country (`country` is normalised with [`country_code`]; an unusable country
/// counts as unknown):
///
/// * FR, DE, IT: 5 digits (FR and DE never start with `00`); ES: 5 digits,
///   province 01–52;
/// * BE, CH, LU, AT, DK, NO: 4 digits (BE, CH, AT, DK never start with `0`);
/// * NL: 4 digits and 2 letters, compact: `1234 AB` gives `1234AB`;
/// * PT: 4 or 7 digits, compact (`1000-001` gives `1000001`);
/// * US: 5 or 9 digits, compact;
/// * GB: canonical form with one space before the last three characters:
///   `sw1a1aa` gives `SW1A 1AA`;
/// * any other or no country: 2 to 10 letters and digits.
///
/// A leading country prefix (`F-75002`, `FR 75002`, `L-1234`, `D-10115`) is
/// removed. A 4-digit French code such as `7502` is unusable: the missing digit
/// is not guessed.
pub fn postal_code(raw: &str, country: Option<&str>) -> Result<String, Unusable> {
    const WHAT: Unusable = Unusable::Invalid {
        what: "postal code",
    };
    let s = raw.trim();
    if s.is_empty() {
        return Err(Unusable::Empty);
    }
    if s.len() > MAX_POSTAL_BYTES {
        return Err(Unusable::TooLong {
            max: MAX_POSTAL_BYTES,
        });
    }
    let mut compact = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_ascii_alphanumeric() {
            compact.push(c.to_ascii_uppercase());
        } else if c.is_control() {
            return Err(Unusable::ControlCharacter);
        } else if !(c.is_whitespace() || matches!(c, '-' | '\u{2010}'..='\u{2015}')) {
            return Err(WHAT);
        }
    }
    if compact.is_empty() {
        return Err(Unusable::Empty);
    }
    let country = country.and_then(|c| country_code(c).ok());

    let four = |p: &str| digits_of_len(p, 4);
    let four_no_zero = |p: &str| digits_of_len(p, 4) && !p.starts_with('0');
    let five = |p: &str| digits_of_len(p, 5);
    let five_no_00 = |p: &str| digits_of_len(p, 5) && !p.starts_with("00");
    let spain = |p: &str| {
        digits_of_len(p, 5)
            && p.get(..2)
                .and_then(|d| d.parse::<u8>().ok())
                .is_some_and(|province| (1..=52).contains(&province))
    };
    let netherlands = |p: &str| {
        p.len() == 6
            && p.get(..4).is_some_and(four_no_zero)
            && p.get(4..)
                .is_some_and(|l| l.bytes().all(|b| b.is_ascii_alphabetic()))
    };
    let portugal = |p: &str| digits_of_len(p, 4) || digits_of_len(p, 7);
    let united_states = |p: &str| digits_of_len(p, 5) || digits_of_len(p, 9);

    type Check<'a> = &'a dyn Fn(&str) -> bool;
    let (valid, prefixes): (Check, &[&str]) = match country {
        Some("GB") => return gb_postcode(&compact).ok_or(WHAT),
        Some("FR") => (&five_no_00, &["FR", "F"]),
        Some("DE") => (&five_no_00, &["DE", "D"]),
        Some("IT") => (&five, &["IT", "I"]),
        Some("ES") => (&spain, &["ES", "E"]),
        Some("BE") => (&four_no_zero, &["BE", "B"]),
        Some("CH") => (&four_no_zero, &["CH"]),
        Some("AT") => (&four_no_zero, &["AT", "A"]),
        Some("DK") => (&four_no_zero, &["DK"]),
        Some("LU") => (&four, &["LU", "L"]),
        Some("NO") => (&four, &["NO", "N"]),
        Some("NL") => (&netherlands, &["NL"]),
        Some("PT") => (&portugal, &["PT", "P"]),
        Some("US") => (&united_states, &[]),
        _ => {
            return if (2..=10).contains(&compact.len()) {
                Ok(compact)
            } else {
                Err(WHAT)
            }
        }
    };
    if valid(&compact) {
        return Ok(compact);
    }
    prefixes
        .iter()
        .find_map(|p| compact.strip_prefix(p).filter(|rest| valid(rest)))
        .map(str::to_owned)
        .ok_or(WHAT)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_phone_memo_is_bounded_keeps_what_is_used_and_answers_as_parsing_does() {
        let mut memo = super::Generations::with_entries(2);
        let mut made = 0;
        let mut get = |memo: &mut super::Generations<String, u32>, k: &str| {
            memo.get_or_insert_with(k.to_string(), || {
                made += 1;
                k.len() as u32
            })
        };
        for k in ["a", "bb", "a", "ccc", "a", "dddd", "eeeee", "a"] {
            assert_eq!(get(&mut memo, k), k.len() as u32);
        }
        // "a" was asked for all along: made once; each other key once.
        assert_eq!(made, 5);
        assert!(memo.held() <= 4);
        // Through the memo or not, the same answers, errors included.
        for raw in [
            "06 12 34 56 78",
            "+33 6 12 34 56 78",
            "0612",
            "06 12 34 56 78",
        ] {
            assert_eq!(super::phone(raw, "FR"), super::phone(raw, "FR"));
            let cleaned: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
            assert_eq!(
                super::phone(raw, "FR"),
                super::parse_phone(&cleaned, "FR"),
                "{raw}"
            );
        }
    }

    use super::*;

    #[test]
    fn placeholders_typed_for_people_without_an_email_or_phone_are_recognised() {
        let locals: Vec<String> = ["pasdemail", "client"].map(String::from).to_vec();
        for junk in [
            "pas.de.mail@gmail.com",
            "pasdemail@orange.fr",
            "client@magasin.fr",
            "a@a.fr",
            "test@test.com",
        ] {
            assert!(is_placeholder_email(junk, &locals), "{junk}");
        }
        for real in ["a@b.fr", "sophie.dupont@gmail.com", "clientele.pro@free.fr"] {
            assert!(!is_placeholder_email(real, &locals), "{real}");
        }
        assert!(is_placeholder_phone("+33999999999"));
        assert!(is_placeholder_phone("+33123456789"));
        assert!(is_placeholder_phone("+33987654321"));
        assert!(!is_placeholder_phone("+33612345678"));
        assert!(is_placeholder_phone("+33400000000"));
        assert!(is_placeholder_phone("+61400000000"));
        assert!(!is_placeholder_phone("+61400000001"));
        assert!(!is_placeholder_phone("+331234"));
    }

    #[test]
    fn a_compound_first_name_is_compatible_with_its_parts() {
        let k = |s: &str| name_key(s).unwrap();
        assert!(first_name_compatible(&k("Marie-Hélène"), &k("Hélène")));
        assert!(first_name_compatible(&k("Jean-Pierre"), &k("Pierre")));
        assert!(!first_name_compatible(&k("Marie"), &k("Hélène")));
    }

    // ----- email -----

    #[test]
    fn email_is_trimmed_and_lower_cased() {
        assert_eq!(
            email("  Sophie.Durand@Example.FR ").unwrap(),
            "sophie.durand@example.fr"
        );
    }

    #[test]
    fn email_keeps_dots_and_plus_tags() {
        assert_eq!(
            email("sophie.d+promo@gmail.com").unwrap(),
            "sophie.d+promo@gmail.com"
        );
        assert_ne!(
            email("sophie.d@gmail.com").unwrap(),
            email("sophied@gmail.com").unwrap()
        );
    }

    #[test]
    fn email_mailto_prefix_is_removed() {
        assert_eq!(email("MAILTO:a.b@c.fr").unwrap(), "a.b@c.fr");
        assert_eq!(email("mailto: a@b.co").unwrap(), "a@b.co");
    }

    #[test]
    fn email_without_one_at_sign_is_unusable() {
        for raw in ["sophie.example.fr", "a@b@c.fr", "@example.fr", "a@", "@"] {
            assert!(email(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn email_domain_needs_a_dot_and_real_labels() {
        for raw in [
            "a@localhost",
            "a@.fr",
            "a@b..fr",
            "a@b.",
            "a@-b.fr",
            "a@b-.fr",
            "a@b_c.fr",
            "a@1.2.3.4",
            "a@b.fr?subject=x",
        ] {
            assert_eq!(
                email(raw),
                Err(Unusable::Invalid { what: "email" }),
                "{raw}"
            );
        }
    }

    #[test]
    fn email_with_inner_whitespace_or_list_is_unusable() {
        assert!(email("sophie durand@example.fr").is_err());
        assert!(email("a@b.fr, c@d.fr").is_err());
        assert!(email("Sophie <a@b.fr>").is_err());
        assert_eq!(email("a\u{0}b@c.fr"), Err(Unusable::ControlCharacter));
    }

    #[test]
    fn email_empty_or_too_long_is_unusable() {
        assert_eq!(email("   "), Err(Unusable::Empty));
        assert_eq!(email("mailto:"), Err(Unusable::Empty));
        let long_local = format!("{}@b.fr", "a".repeat(65));
        assert_eq!(email(&long_local), Err(Unusable::TooLong { max: 64 }));
        let long = format!("a@{}.fr", "b".repeat(260));
        assert_eq!(email(&long), Err(Unusable::TooLong { max: 254 }));
    }

    #[test]
    fn email_non_ascii_is_lower_cased() {
        assert_eq!(email("ÉLODIE@Exemple.FR").unwrap(), "élodie@exemple.fr");
    }

    // ----- phone -----

    #[test]
    fn french_phone_formats_are_one_e164_number() {
        for raw in [
            "06 12 34 56 78",
            "+33 6 12 34 56 78",
            "0033612345678",
            "06.12.34.56.78",
            "(+33) 6-12-34-56-78",
            "0612345678",
            "+33612345678",
            "+33 (0)6 12 34 56 78",
            "tel:+33-6-12-34-56-78",
            " 06/12/34/56/78 ",
            "０６１２３４５６７８",
        ] {
            assert_eq!(phone(raw, "FR").as_deref(), Ok("+33612345678"), "{raw}");
        }
    }

    #[test]
    fn phone_garbage_is_unusable() {
        for raw in [
            "0000000000",
            "123",
            "abc",
            "",
            "   ",
            "06 12 34",
            "0612345678 ext 12",
            "06+12345678",
            "++33612345678",
            "9999999999999999999",
        ] {
            assert!(phone(raw, "FR").is_err(), "{raw}");
        }
        assert_eq!(phone("", "FR"), Err(Unusable::Empty));
        assert_eq!(
            phone(&"1".repeat(100), "FR"),
            Err(Unusable::TooLong { max: 64 })
        );
    }

    #[test]
    fn phone_region_is_case_insensitive() {
        assert_eq!(phone("06 12 34 56 78", "fr").unwrap(), "+33612345678");
        assert_eq!(phone("06 12 34 56 78", " Fr ").unwrap(), "+33612345678");
    }

    #[test]
    fn phone_default_region_applies_only_without_country_code() {
        assert_eq!(phone("030 1234567", "DE").unwrap(), "+49301234567");
        assert_eq!(phone("+33 6 12 34 56 78", "DE").unwrap(), "+33612345678");
        assert_eq!(phone("020 7946 0018", "GB").unwrap(), "+442079460018");
        assert_eq!(phone("020 7946 0018", "UK").unwrap(), "+442079460018");
    }

    #[test]
    fn phone_with_invalid_region_only_accepts_international_numbers() {
        for region in ["", "ZZ", "France", "F", "123", "é"] {
            assert_eq!(
                phone("+33 6 12 34 56 78", region).as_deref(),
                Ok("+33612345678"),
                "{region}"
            );
            assert!(phone("06 12 34 56 78", region).is_err(), "{region}");
        }
        assert!(region("ZZ").is_none());
        assert_eq!(region("fr"), Some(phonenumber::country::Id::FR));
    }

    #[test]
    fn french_overseas_national_numbers_get_their_country_code() {
        assert_eq!(phone("0690 12 34 56", "FR").unwrap(), "+590690123456");
        assert_eq!(phone("0692 12 34 56", "FR").unwrap(), "+262692123456");
        assert_eq!(phone("0696 12 34 56", "FR").unwrap(), "+596696123456");
        // The same numbers written internationally.
        assert_eq!(phone("+590 690 12 34 56", "FR").unwrap(), "+590690123456");
    }

    // ----- id -----

    #[test]
    fn id_is_trimmed_and_keeps_case() {
        assert_eq!(id("  Cust-00042AbC ").unwrap(), "Cust-00042AbC");
    }

    #[test]
    fn id_empty_control_or_too_long_is_unusable() {
        assert_eq!(id(""), Err(Unusable::Empty));
        assert_eq!(id(" \t "), Err(Unusable::Empty));
        assert_eq!(id("ab\u{7}c"), Err(Unusable::ControlCharacter));
        assert_eq!(id("a\nb"), Err(Unusable::ControlCharacter));
        assert_eq!(id(&"x".repeat(257)), Err(Unusable::TooLong { max: 256 }));
        assert!(id(&"x".repeat(256)).is_ok());
    }

    #[test]
    fn case_insensitive_id_is_lower_cased() {
        assert_eq!(
            id_case_insensitive(" 3F2A9C0D-BEEF ").unwrap(),
            "3f2a9c0d-beef"
        );
        assert_eq!(
            id_case_insensitive("3f2a9c0d-beef").unwrap(),
            id_case_insensitive("3F2A9C0D-BEEF").unwrap()
        );
        assert_eq!(id_case_insensitive("ÀB").unwrap(), "àb");
        assert_eq!(id_case_insensitive(""), Err(Unusable::Empty));
    }

    // ----- social handle -----

    #[test]
    fn social_handle_is_network_and_lower_cased_handle() {
        assert_eq!(
            social_handle("Twitter:@Sophie_D").unwrap(),
            "twitter:sophie_d"
        );
        assert_eq!(
            social_handle(" Instagram : sophie.d ").unwrap(),
            "instagram:sophie.d"
        );
        assert_eq!(
            social_handle("twitter:sophie_d").unwrap(),
            social_handle("TWITTER:@SOPHIE_D").unwrap()
        );
        assert_eq!(
            social_handle("mastodon:@Sophie@Mastodon.Social").unwrap(),
            "mastodon:sophie@mastodon.social"
        );
    }

    #[test]
    fn social_handle_without_network_is_unusable() {
        assert_eq!(social_handle("@sophie_d"), Err(Unusable::MissingNetwork));
        assert_eq!(social_handle(":sophie_d"), Err(Unusable::MissingNetwork));
        assert_eq!(social_handle("sophie_d"), Err(Unusable::MissingNetwork));
    }

    #[test]
    fn social_handle_malformed_is_unusable() {
        assert_eq!(social_handle("twitter:@"), Err(Unusable::Empty));
        assert_eq!(social_handle("twitter:"), Err(Unusable::Empty));
        assert_eq!(social_handle(""), Err(Unusable::Empty));
        assert!(social_handle("https://twitter.com/sophie").is_err());
        assert!(social_handle("twitter:sophie d").is_err());
        assert!(social_handle("my network:sophie").is_err());
    }

    // ----- names -----

    #[test]
    fn display_name_keeps_case_and_accents_and_collapses_whitespace() {
        assert_eq!(
            name_display("  Hélène-Marie \t D'Arc  ").unwrap(),
            "Hélène-Marie D'Arc"
        );
        assert_eq!(name_display("Sophie").unwrap(), "Sophie");
    }

    #[test]
    fn display_name_is_nfkc() {
        // Decomposed é becomes the composed form; full-width letters become ASCII.
        assert_eq!(name_display("He\u{301}le\u{300}ne").unwrap(), "Hélène");
        assert_eq!(name_display("Ｓｏｐｈｉｅ").unwrap(), "Sophie");
        assert_eq!(
            name_display("Sophie\u{00A0}\u{3000}Durand").unwrap(),
            "Sophie Durand"
        );
    }

    #[test]
    fn display_name_unusable_inputs() {
        assert_eq!(name_display(""), Err(Unusable::Empty));
        assert_eq!(name_display(" \u{200B} "), Err(Unusable::Empty));
        assert_eq!(name_display("12345"), Err(Unusable::DigitsOnly));
        assert_eq!(name_display("12 34"), Err(Unusable::DigitsOnly));
        assert_eq!(name_display("--"), Err(Unusable::NoLetters));
        assert_eq!(name_display("So\u{1}phie"), Err(Unusable::ControlCharacter));
        assert_eq!(
            name_display(&"a".repeat(257)),
            Err(Unusable::TooLong { max: 256 })
        );
        assert!(name_display(&"é".repeat(256)).is_ok());
    }

    #[test]
    fn name_key_folds_case_accents_and_punctuation() {
        assert_eq!(
            name_key("  Hélène-Marie  D'Arc ").unwrap(),
            "helene marie d arc"
        );
        assert_eq!(name_key("O’Brien").unwrap(), "o brien");
        assert_eq!(
            name_key("J.-P. Dupont_Martin").unwrap(),
            "j p dupont martin"
        );
        assert_eq!(
            name_key("Dupont (née Martin)").unwrap(),
            "dupont nee martin"
        );
    }

    #[test]
    fn name_key_special_letters() {
        assert_eq!(name_key("Straße").unwrap(), "strasse");
        assert_eq!(name_key("Lætitia").unwrap(), "laetitia");
        assert_eq!(name_key("Œdipe").unwrap(), "oedipe");
        assert_eq!(name_key("Søren").unwrap(), "soren");
        assert_eq!(name_key("Łukasz").unwrap(), "lukasz");
        assert_eq!(name_key("ÇÀÉÎÕÜ").unwrap(), "caeiou");
    }

    #[test]
    fn name_key_composed_and_decomposed_are_equal() {
        assert_eq!(
            name_key("Hélène").unwrap(),
            name_key("He\u{301}le\u{300}ne").unwrap()
        );
        assert_eq!(name_key("HÉLÈNE").unwrap(), name_key("helene").unwrap());
        assert_eq!(name_key("ﬁfi").unwrap(), "fifi");
        assert_eq!(name_key("Ǽ").unwrap(), name_key("Æ").unwrap());
    }

    #[test]
    fn name_key_keeps_other_scripts() {
        assert_eq!(name_key("Иван Петров").unwrap(), "иван петров");
        assert_eq!(name_key("山田 太郎").unwrap(), "山田 太郎");
    }

    #[test]
    fn name_key_without_letters_is_unusable() {
        assert_eq!(name_key("1234"), Err(Unusable::NoLetters));
        assert_eq!(name_key("-- ' ."), Err(Unusable::NoLetters));
        assert_eq!(name_key(""), Err(Unusable::Empty));
        assert_eq!(name_key("\u{301}"), Err(Unusable::NoLetters));
    }

    // ----- city / street -----

    #[test]
    fn city_saint_abbreviations_give_one_key() {
        let expected = "saint etienne";
        for raw in [
            "Saint-Étienne",
            "St Etienne",
            "ST-ETIENNE",
            "St. Étienne",
            "SAINT ETIENNE CEDEX 2",
        ] {
            assert_eq!(city_key(raw).unwrap(), expected, "{raw}");
        }
        assert_eq!(city_key("Ste-Foy-lès-Lyon").unwrap(), "sainte foy les lyon");
    }

    #[test]
    fn city_cedex_and_arrondissement_are_dropped() {
        for raw in [
            "Paris",
            "paris 02",
            "PARIS CEDEX 08",
            "Paris 16ème",
            "Paris 1er arrondissement",
            "Paris Cedex",
        ] {
            assert_eq!(city_key(raw).unwrap(), "paris", "{raw}");
        }
        assert_eq!(city_key("Lyon 3e").unwrap(), "lyon");
        assert_eq!(city_key("Marseille 13").unwrap(), "marseille");
    }

    #[test]
    fn city_key_unusable_inputs() {
        assert_eq!(city_key("CEDEX"), Err(Unusable::NoLetters));
        assert_eq!(city_key("75002"), Err(Unusable::NoLetters));
        assert_eq!(city_key(""), Err(Unusable::Empty));
    }

    #[test]
    fn street_abbreviations_give_one_key() {
        assert_eq!(
            street_key("12, R. de la Paix").unwrap(),
            street_key("12 rue de la paix").unwrap()
        );
        assert_eq!(
            street_key("12, R. de la Paix").unwrap(),
            "12 rue de la paix"
        );
        let pairs = [
            ("3 av. Foch", "3 avenue foch"),
            ("3 AVE FOCH", "3 avenue foch"),
            ("5 bd Haussmann", "5 boulevard haussmann"),
            ("5 Bld Haussmann", "5 boulevard haussmann"),
            ("5 boul. Haussmann", "5 boulevard haussmann"),
            ("1 pl. de la Concorde", "1 place de la concorde"),
            ("7 chem. des Vignes", "7 chemin des vignes"),
            ("7 che des Vignes", "7 chemin des vignes"),
            ("2 imp. des Lilas", "2 impasse des lilas"),
            ("4 all. des Tilleuls", "4 allee des tilleuls"),
            ("10 fbg St-Honoré", "10 faubourg saint honore"),
            ("8 rte de Lyon", "8 route de lyon"),
            ("9 sq. Monge", "9 square monge"),
            ("11 qu. des Orfèvres", "11 quai des orfevres"),
        ];
        for (raw, expected) in pairs {
            assert_eq!(street_key(raw).unwrap(), expected, "{raw}");
        }
    }

    #[test]
    fn street_bis_and_ter_are_kept() {
        assert_eq!(
            street_key("12 bis rue de la Paix").unwrap(),
            "12 bis rue de la paix"
        );
        assert_eq!(
            street_key("12bis, r. de la Paix").unwrap(),
            "12 bis rue de la paix"
        );
        assert_eq!(
            street_key("12 TER rue de la Paix").unwrap(),
            "12 ter rue de la paix"
        );
        assert_ne!(
            street_key("12 bis rue de la Paix").unwrap(),
            street_key("12 rue de la Paix").unwrap()
        );
    }

    #[test]
    fn street_abbreviations_only_expand_whole_words() {
        assert_eq!(street_key("3 Allée Bdroit").unwrap(), "3 allee bdroit");
        assert_eq!(street_key("1 rue Avril").unwrap(), "1 rue avril");
    }

    #[test]
    fn street_without_letters_is_unusable() {
        assert_eq!(street_key("12"), Err(Unusable::NoLetters));
        assert_eq!(street_key(",,,"), Err(Unusable::NoLetters));
    }

    // ----- first names -----

    #[test]
    fn first_names_compatible_unless_clearly_different() {
        assert!(first_name_compatible("sophie", "sophie"));
        assert!(first_name_compatible("sophie", "sofie"));
        assert!(first_name_compatible("matthieu", "mathieu"));
        assert!(first_name_compatible("sylvie", "silvie"));
        assert!(first_name_compatible("stephane", "stefane"));
        assert!(first_name_compatible("marie", "marie helene"));
        assert!(first_name_compatible("marie helene", "marie"));
        assert!(first_name_compatible("j", "jean"));
        assert!(first_name_compatible("jean", "j"));
        assert!(first_name_compatible("j p", "jean pierre"));
        assert!(first_name_compatible("", "jean"));
        assert!(!first_name_compatible("marie", "lea"));
        assert!(!first_name_compatible("j", "pierre"));
        assert!(!first_name_compatible("sophie", "isabelle"));
        assert!(!first_name_compatible("jean", "paul"));
    }

    #[test]
    fn first_name_keys_from_name_key_are_compatible() {
        let a = name_key("Marie-Hélène").unwrap();
        let b = name_key("MARIE").unwrap();
        assert!(first_name_compatible(&a, &b));
    }

    // ----- birth date -----

    #[test]
    fn birth_date_formats_are_one_iso_date() {
        for raw in [
            "1985-04-12",
            "12/04/1985",
            "12.04.1985",
            "12-04-1985",
            "1985-04-12T00:00:00Z",
            "1985-04-12T00:00:00.000+02:00",
            "1985-04-12 00:00:00",
            "12/4/1985",
            "1985/04/12",
            " 1985-4-12 ",
        ] {
            assert_eq!(birth_date(raw).as_deref(), Ok("1985-04-12"), "{raw}");
        }
    }

    #[test]
    fn birth_date_is_day_first() {
        assert_eq!(birth_date("01/02/2000").unwrap(), "2000-02-01");
        assert!(birth_date("04/13/1985").is_err());
    }

    #[test]
    fn birth_date_impossible_or_ambiguous_is_unusable() {
        for raw in [
            "1985-02-30",
            "31/04/1985",
            "29/02/1985",
            "12/04/85",
            "1985-13-01",
            "1985-00-10",
            "12041985",
            "1985-04",
            "hier",
            "12/04.1985",
            "1985-04-12Tnoon",
            "1985-04-12T",
            "",
        ] {
            assert!(birth_date(raw).is_err(), "{raw}");
        }
        assert_eq!(birth_date("29/02/2000").unwrap(), "2000-02-29");
    }

    #[test]
    fn birth_date_year_outside_1900_2100_is_unusable() {
        assert_eq!(
            birth_date("1899-12-31"),
            Err(Unusable::OutOfRange { what: "year" })
        );
        assert_eq!(
            birth_date("01/01/2101"),
            Err(Unusable::OutOfRange { what: "year" })
        );
        assert!(birth_date("1900-01-01").is_ok());
        assert!(birth_date("2100-12-31").is_ok());
    }

    // ----- country -----

    #[test]
    fn country_alpha2_any_case() {
        assert_eq!(country("fr").unwrap(), "FR");
        assert_eq!(country(" Be ").unwrap(), "BE");
        assert_eq!(country("jp").unwrap(), "JP");
        assert_eq!(country("uk").unwrap(), "GB");
    }

    #[test]
    fn country_names_and_alpha3_of_markets() {
        let cases = [
            ("France", "FR"),
            ("FRA", "FR"),
            ("Belgique", "BE"),
            ("Belgium", "BE"),
            ("bel", "BE"),
            ("Suisse", "CH"),
            ("Switzerland", "CH"),
            ("CHE", "CH"),
            ("Luxembourg", "LU"),
            ("LUX", "LU"),
            ("Deutschland", "DE"),
            ("Germany", "DE"),
            ("DEU", "DE"),
            ("España", "ES"),
            ("ESPANA", "ES"),
            ("Spain", "ES"),
            ("ESP", "ES"),
            ("Italia", "IT"),
            ("Italy", "IT"),
            ("ITA", "IT"),
            ("United Kingdom", "GB"),
            ("UK", "GB"),
            ("GBR", "GB"),
            ("Royaume-Uni", "GB"),
            ("Nederland", "NL"),
            ("Netherlands", "NL"),
            ("NLD", "NL"),
            ("Portugal", "PT"),
            ("PRT", "PT"),
            ("United States", "US"),
            ("USA", "US"),
            ("U.S.A.", "US"),
            ("  FRANCE ", "FR"),
        ];
        for (raw, expected) in cases {
            assert_eq!(country(raw).as_deref(), Ok(expected), "{raw}");
        }
    }

    #[test]
    fn unknown_country_is_unusable() {
        for raw in ["XX", "ZZ", "Atlantis", "F", "12", "FRANC", "!!"] {
            assert_eq!(country(raw), Err(Unusable::UnknownCountry), "{raw}");
        }
        assert_eq!(country(""), Err(Unusable::Empty));
    }

    #[test]
    fn iso_table_is_sorted_and_well_formed() {
        assert!(ISO_3166_ALPHA2.windows(2).all(|w| w[0] < w[1]));
        assert!(ISO_3166_ALPHA2
            .iter()
            .all(|c| c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase())));
    }

    // ----- postal code -----

    #[test]
    fn french_postal_codes() {
        for raw in [
            "75002", " 75 002 ", "75-002", "F-75002", "FR 75002", "f75002",
        ] {
            assert_eq!(
                postal_code(raw, Some("FR")).as_deref(),
                Ok("75002"),
                "{raw}"
            );
        }
        assert_eq!(postal_code("01000", Some("fr")).unwrap(), "01000");
        for raw in ["7502", "750020", "00123", "75OO2", "75002 Paris", "7500Z"] {
            assert!(postal_code(raw, Some("FR")).is_err(), "{raw}");
        }
    }

    #[test]
    fn postal_codes_of_other_markets_are_compact() {
        assert_eq!(postal_code("1000", Some("BE")).unwrap(), "1000");
        assert_eq!(postal_code("B-1000", Some("BE")).unwrap(), "1000");
        assert_eq!(postal_code("CH-1200", Some("Suisse")).unwrap(), "1200");
        assert_eq!(postal_code("L-1234", Some("LU")).unwrap(), "1234");
        assert_eq!(postal_code("D-10115", Some("DE")).unwrap(), "10115");
        assert_eq!(postal_code("28013", Some("ES")).unwrap(), "28013");
        assert_eq!(postal_code("00184", Some("IT")).unwrap(), "00184");
        assert_eq!(postal_code("1000-001", Some("PT")).unwrap(), "1000001");
        assert_eq!(postal_code("10001", Some("US")).unwrap(), "10001");
        assert_eq!(postal_code("10001-0001", Some("US")).unwrap(), "100010001");
        assert!(postal_code("0999", Some("BE")).is_err());
        assert!(postal_code("99000", Some("ES")).is_err());
        assert!(postal_code("1234", Some("DE")).is_err());
    }

    #[test]
    fn dutch_postal_code_is_compact() {
        for raw in ["1234 AB", "1234ab", "1234-AB", "NL-1234 AB"] {
            assert_eq!(
                postal_code(raw, Some("NL")).as_deref(),
                Ok("1234AB"),
                "{raw}"
            );
        }
        assert!(postal_code("0123 AB", Some("NL")).is_err());
        assert!(postal_code("1234 A1", Some("NL")).is_err());
    }

    #[test]
    fn british_postcode_keeps_canonical_space() {
        for raw in ["SW1A 1AA", "sw1a1aa", " SW1A  1AA ", "sw1a-1aa"] {
            assert_eq!(
                postal_code(raw, Some("GB")).as_deref(),
                Ok("SW1A 1AA"),
                "{raw}"
            );
        }
        assert_eq!(postal_code("m1 1ae", Some("UK")).unwrap(), "M1 1AE");
        assert_eq!(postal_code("B33 8TH", Some("GB")).unwrap(), "B33 8TH");
        assert_eq!(postal_code("CR2 6XH", Some("GB")).unwrap(), "CR2 6XH");
        assert_eq!(postal_code("W1A 0AX", Some("GB")).unwrap(), "W1A 0AX");
        assert_eq!(postal_code("gir 0aa", Some("GB")).unwrap(), "GIR 0AA");
        for raw in ["SW1A", "12345", "SW1A 1A1", "1W1A 1AA"] {
            assert!(postal_code(raw, Some("GB")).is_err(), "{raw}");
        }
    }

    #[test]
    fn postal_code_unknown_country_is_alphanumeric_cleanup() {
        assert_eq!(postal_code(" 100-0001 ", None).unwrap(), "1000001");
        assert_eq!(postal_code("d02 x285", Some("IE")).unwrap(), "D02X285");
        assert_eq!(postal_code("75002", Some("Atlantis")).unwrap(), "75002");
        assert!(postal_code("7", None).is_err());
        assert!(postal_code("75002/3", None).is_err());
        assert_eq!(postal_code("  ", None), Err(Unusable::Empty));
        assert_eq!(postal_code(" - ", None), Err(Unusable::Empty));
    }

    // ----- Normaliser -----

    #[test]
    fn normaliser_dispatches_to_each_function() {
        assert_eq!(Normaliser::Email.apply(" A@B.FR ", "FR").unwrap(), "a@b.fr");
        assert_eq!(
            Normaliser::Phone.apply("06 12 34 56 78", "FR").unwrap(),
            "+33612345678"
        );
        assert_eq!(Normaliser::Id.apply(" AbC ", "FR").unwrap(), "AbC");
        assert_eq!(
            Normaliser::IdCaseInsensitive.apply(" AbC ", "FR").unwrap(),
            "abc"
        );
        assert_eq!(
            Normaliser::SocialHandle.apply("Twitter:@X", "FR").unwrap(),
            "twitter:x"
        );
    }

    #[test]
    fn normaliser_serde_names_are_snake_case() {
        let all = [
            (Normaliser::Email, "\"email\""),
            (Normaliser::Phone, "\"phone\""),
            (Normaliser::Id, "\"id\""),
            (Normaliser::IdCaseInsensitive, "\"id_case_insensitive\""),
            (Normaliser::SocialHandle, "\"social_handle\""),
        ];
        for (n, json) in all {
            assert_eq!(serde_json::to_string(&n).unwrap(), json);
            assert_eq!(serde_json::from_str::<Normaliser>(json).unwrap(), n);
        }
    }

    #[test]
    fn error_messages_are_lower_case() {
        let all = [
            Unusable::Empty,
            Unusable::TooLong { max: 3 },
            Unusable::ControlCharacter,
            Unusable::Invalid { what: "email" },
            Unusable::OutOfRange { what: "year" },
            Unusable::DigitsOnly,
            Unusable::NoLetters,
            Unusable::MissingNetwork,
            Unusable::UnknownCountry,
        ];
        for e in all {
            let msg = e.to_string();
            assert_eq!(msg, msg.to_lowercase());
        }
    }

    // ----- robustness -----

    fn run_all(s: &str) {
        let _ = email(s);
        let _ = phone(s, "FR");
        let _ = phone(s, s);
        let _ = id(s);
        let _ = id_case_insensitive(s);
        let _ = social_handle(s);
        let _ = name_display(s);
        let _ = name_key(s);
        let _ = birth_date(s);
        let _ = country(s);
        let _ = postal_code(s, Some("GB"));
        let _ = postal_code(s, Some("NL"));
        let _ = postal_code(s, Some("FR"));
        let _ = postal_code(s, None);
        let _ = city_key(s);
        let _ = street_key(s);
        let _ = first_name_compatible(s, "jean");
        let _ = first_name_compatible("j", s);
    }

    #[test]
    fn tricky_inputs_never_panic() {
        for s in [
            "",
            " ",
            "@",
            ":",
            "::",
            "+",
            "+++",
            "(",
            "tel:",
            "mailto:",
            "é",
            "\u{301}",
            "T",
            "1985-04-12T",
            "//",
            "..",
            "-1",
            "  2 22#:",
            "003-836-4618x3001",
            "\u{FEFF}",
            "ǅ",
            "İ",
            "ﷺ",
            "ß",
            "\u{10FFFF}",
            "0",
            "00",
            "+0",
            "+999999999999999",
            "cedex 1",
            "st",
            "1er",
            "GIR0AA",
            "é@é.é",
            "1985-4-1é",
        ] {
            run_all(s);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            failure_persistence: None,
            ..proptest::prelude::ProptestConfig::default()
        })]

        #[test]
        fn arbitrary_strings_never_panic(s in "\\PC{0,40}") {
            run_all(&s);
        }

        #[test]
        fn phone_like_strings_never_panic(s in "[0-9 +().\\-/x#:*]{0,30}") {
            let _ = phone(&s, "FR");
            let _ = phone(&s, "CH");
            let _ = phone(&s, "");
        }

        #[test]
        fn name_key_is_idempotent(s in "\\PC{1,30}") {
            if let Ok(k) = name_key(&s) {
                let again = name_key(&k);
                proptest::prop_assert_eq!(again, Ok(k));
            }
        }
    }
}
