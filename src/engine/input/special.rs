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

use std::sync::OnceLock;

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::UnicodeNormalization;

/// The configured terms, each as its words in normal form.
#[derive(Debug, Clone, Default)]
pub(crate) struct SpecialTerms {
    terms: Vec<Vec<String>>,
}

impl SpecialTerms {
    pub(crate) fn new(terms: &[String]) -> Self {
        Self {
            terms: terms
                .iter()
                .map(|t| {
                    words(&prepare(t), Split::AnyNonAlphanumeric, false)
                        .iter()
                        .map(|w| fold_word(w))
                        .collect::<Vec<_>>()
                })
                .filter(|t| !t.is_empty())
                .collect(),
        }
    }

    /// Whether `key` names a special category.
    pub(crate) fn matches(&self, key: &str) -> bool {
        // Fast path without allocation: the usual snake_case ascii key of few words.
        if key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            let mut parts = [""; 8];
            let mut n = 0;
            for w in key.split('_').filter(|w| !w.is_empty()) {
                if n == parts.len() {
                    n = usize::MAX;
                    break;
                }
                parts[n] = w;
                n += 1;
            }
            if n != usize::MAX {
                return self.any_term_in(&parts[..n], |part, folded| {
                    part.chars().flat_map(ascii_skeleton).eq(folded.chars())
                });
            }
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
                self.any_term_in(&folded, |word, term_word| word == term_word)
            })
    }

    /// Whether a term's words appear consecutively among `words` (compared by `same`).
    fn any_term_in<W>(&self, words: &[W], same: impl Fn(&W, &str) -> bool) -> bool {
        self.terms.iter().any(|term| {
            term.len() <= words.len()
                && words
                    .windows(term.len())
                    .any(|w| w.iter().zip(term).all(|(a, b)| same(a, b)))
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
        if c.is_ascii() {
            out.extend(ascii_skeleton(c));
        } else {
            out.extend(skeleton_of(c).flat_map(char::to_lowercase));
        }
    }
    out
}

/// The lower-cased skeleton of an ASCII character, from a table built once.
fn ascii_skeleton(c: char) -> std::str::Chars<'static> {
    static TABLE: OnceLock<Vec<String>> = OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0u8..128)
            .map(|b| {
                let mut buf = [0u8; 4];
                unicode_security::skeleton(char::from(b).encode_utf8(&mut buf))
                    .flat_map(char::to_lowercase)
                    .collect()
            })
            .collect()
    });
    table[c as usize].chars()
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
