//! Special-category keys (GDPR art. 9): each key is brought to a normal form that a
//! disguise does not survive, split into words, and matched against the configured terms.
//!
//! The normal form of a key, in order:
//! 1. Unicode NFKC (full-width and other compatibility forms become plain letters);
//! 2. outside ASCII, each character goes to its confusable skeleton (Unicode TS #39, by
//!    `unicode-security`), which also drops default-ignorable characters (zero-width
//!    spaces, joiners, variation selectors) and decomposes; combining marks are then
//!    dropped, which folds accents (`é` → `e`);
//! 3. the key is split into words, four ways, and it matches when any way does: on every
//!    character that is not a letter or a digit, or only on ASCII punctuation and spaces
//!    (other characters, such as format characters, are dropped: `heal·th` is one word);
//!    each with or without a split at a lower-to-upper case change (`healthCondition`);
//! 4. each word is lower-cased and mapped to its confusable skeleton, ASCII included
//!    (`1` and `l`, `0` and `o`, `rn` and `m` compare equal), then lower-cased again.
//!
//! A term matches a key when its words appear consecutively among the key's words: whole
//! words only, so `healthy_snacks` and `trace_id` are not `health` or `race`.

use std::collections::HashMap;
use std::sync::OnceLock;

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// The configured terms in normal form, by their first word: each entry lists the words
/// that must follow it (none for a one-word term).
#[derive(Debug, Clone, Default)]
pub(crate) struct SpecialTerms {
    by_first: HashMap<String, Vec<Vec<String>>>,
}

/// Keys of at most this many words and bytes take the fast path (no allocation).
const FAST_WORDS: usize = 8;
const FAST_BYTES: usize = 64;

impl SpecialTerms {
    pub(crate) fn new(terms: &[String]) -> Self {
        let mut by_first: HashMap<String, Vec<Vec<String>>> = HashMap::new();
        for term in terms {
            let mut words = words(&prepare(term), Split::AnyNonAlphanumeric, false)
                .iter()
                .map(|w| fold_word(w))
                .collect::<Vec<_>>()
                .into_iter();
            if let Some(first) = words.next() {
                by_first.entry(first).or_default().push(words.collect());
            }
        }
        Self { by_first }
    }

    /// Whether `key` names a special category.
    pub(crate) fn matches(&self, key: &str) -> bool {
        if let Some(found) = self.matches_snake_case(key) {
            return found;
        }
        let prepared = prepare(key);
        [Split::AnyNonAlphanumeric, Split::AsciiSeparators]
            .into_iter()
            .flat_map(|split| [(split, false), (split, true)])
            .any(|(split, camel)| {
                let folded: Vec<String> = words(&prepared, split, camel)
                    .iter()
                    .map(|w| fold_word(w))
                    .collect();
                let refs: Vec<&str> = folded.iter().map(String::as_str).collect();
                self.any_term_in(&refs)
            })
    }

    /// The usual key, short snake_case ASCII, folded on the stack; `None` for any other.
    fn matches_snake_case(&self, key: &str) -> Option<bool> {
        if key.len() > FAST_BYTES
            || !key
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return None;
        }
        let mut folded = [0u8; FAST_BYTES * ASCII_FOLD_MAX];
        let mut bounds = [(0usize, 0usize); FAST_WORDS];
        let (mut len, mut n) = (0, 0);
        for part in key.split('_').filter(|w| !w.is_empty()) {
            if n == FAST_WORDS {
                return None;
            }
            let start = len;
            for b in part.bytes() {
                let fold = ascii_fold(b)?;
                folded[len..len + fold.len()].copy_from_slice(fold);
                len += fold.len();
            }
            bounds[n] = (start, len);
            n += 1;
        }
        let mut words = [""; FAST_WORDS];
        for (word, &(start, end)) in words.iter_mut().zip(&bounds[..n]) {
            *word = std::str::from_utf8(&folded[start..end]).ok()?;
        }
        Some(self.any_term_in(&words[..n]))
    }

    /// Whether a term's words appear consecutively among `words`.
    fn any_term_in(&self, words: &[&str]) -> bool {
        (0..words.len()).any(|i| {
            self.by_first.get(words[i]).is_some_and(|rests| {
                rests.iter().any(|rest| {
                    words.len() - i > rest.len()
                        && words[i + 1..].iter().zip(rest).all(|(a, b)| a == b)
                })
            })
        })
    }
}

/// Steps 1 and 2: NFKC, then the skeleton of each non-ASCII character without its marks.
fn prepare(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.nfkc() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.extend(skeleton_of(c));
        }
    }
    out
}

/// The confusable skeleton of one character, combining marks dropped (empty for a
/// default-ignorable character).
fn skeleton_of(c: char) -> impl Iterator<Item = char> {
    let mut buf = [0u8; 4];
    let sk: Vec<char> = unicode_security::skeleton(c.encode_utf8(&mut buf)).collect();
    sk.into_iter().filter(|d| !is_combining_mark(*d))
}

#[derive(Debug, Clone, Copy)]
enum Split {
    /// Every character that is neither a letter nor a digit separates words.
    AnyNonAlphanumeric,
    /// ASCII punctuation and whitespace separate words; other non-alphanumeric
    /// characters are dropped.
    AsciiSeparators,
}

/// Step 3: the words of a prepared key, as written (case kept).
fn words(prepared: &str, split: Split, camel: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut prev_lower = false;
    for c in prepared.chars() {
        if c.is_alphanumeric() {
            if camel && c.is_uppercase() && prev_lower && !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
            prev_lower = c.is_lowercase() || c.is_numeric();
            current.push(c);
            continue;
        }
        let separates = match split {
            Split::AnyNonAlphanumeric => true,
            Split::AsciiSeparators => c.is_ascii() || c.is_whitespace(),
        };
        if separates {
            prev_lower = false;
            if !current.is_empty() {
                out.push(std::mem::take(&mut current));
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Step 4: a word lower-cased, mapped to its skeleton, lower-cased again.
fn fold_word(word: &str) -> String {
    let mut out = String::with_capacity(word.len());
    for c in word.chars().flat_map(char::to_lowercase) {
        match u8::try_from(c).ok().and_then(ascii_fold) {
            Some(fold) => out.extend(fold.iter().map(|&b| char::from(b))),
            None => out.extend(skeleton_of(c).flat_map(char::to_lowercase)),
        }
    }
    out
}

/// The longest fold of an ASCII character (`m` gives `rn`).
const ASCII_FOLD_MAX: usize = 4;

/// The fold of an ASCII byte (its lower-cased skeleton), from a table built once; `None`
/// if it is not ASCII of at most [`ASCII_FOLD_MAX`] bytes (none is, in Unicode 18).
fn ascii_fold(b: u8) -> Option<&'static [u8]> {
    static TABLE: OnceLock<Vec<Option<String>>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0u8..128)
            .map(|b| {
                let fold: String = skeleton_of(char::from(b))
                    .flat_map(char::to_lowercase)
                    .collect();
                (fold.is_ascii() && fold.len() <= ASCII_FOLD_MAX).then_some(fold)
            })
            .collect()
    });
    table.get(usize::from(b))?.as_deref().map(str::as_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config::EngineConfig;

    fn defaults() -> SpecialTerms {
        SpecialTerms::new(&EngineConfig::default().special_categories)
    }

    #[test]
    fn disguised_keys_are_found() {
        let terms = defaults();
        for key in [
            "health",
            "\u{ff48}\u{ff45}\u{ff41}\u{ff4c}\u{ff54}\u{ff48}", // full-width
            "heal\u{200b}th",                                   // zero-width space
            "h\u{0435}alth",                                    // Cyrillic е
            "H\u{c9}ALTH",                                      // HÉALTH
            "he\u{301}alth",                                    // combining acute
            "HeALTH",
            "heal\u{00b7}th_status", // middle dot inside the word
            "re1igion",
            "sant\u{e9}",
            "SANTE",
            "opinions_politiques",
            "OrigineEthnique",
            "orientation-sexuelle",
            "syndicat",
            "donn\u{e9}es g\u{e9}n\u{e9}tiques",
            "biom\u{e9}triques",
            "customer.health",
        ] {
            assert!(terms.matches(key), "{key:?}");
        }
    }

    #[test]
    fn near_misses_are_not_found() {
        let terms = defaults();
        for key in [
            "healthy_snacks",
            "trace_id",
            "politique_de_prix",
            "sant",
            "wealth",
            "unionized_price",
            "gene",
            "preferred_store",
        ] {
            assert!(!terms.matches(key), "{key:?}");
        }
    }

    #[test]
    fn the_normal_form_keeps_plain_words_readable() {
        assert_eq!(fold_word("Sant\u{e9}"), "sante");
        assert_eq!(
            words(&prepare("healthCondition"), Split::AnyNonAlphanumeric, true),
            ["health", "Condition"]
        );
    }
}
