//! The contract's consent vocabulary: the purposes a person decides on, the channels a
//! customer is reached on, and the channels a decision covers (those, or `all`).
//!
//! Each word is written as the contract's string everywhere: in events, configuration,
//! output records and the store (serialised as a string, so a stored key reads the same
//! as when it was one). Words are ordered by that string, as they were when they were
//! strings: the order of `consent.changes` records depends on it.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// A string that is not a word of the consent vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not {what} (one of {allowed})")]
pub struct UnknownWord {
    /// What was expected: `a consent purpose`, `a consent channel`, ...
    pub what: &'static str,
    pub value: String,
    /// The words allowed, in the contract's order, separated by `, `.
    pub allowed: String,
}

/// What a consent decision allows or denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Purpose {
    Marketing,
    Personalization,
    Remarketing,
    AbTesting,
    Analytics,
    Profiling,
}

impl Purpose {
    /// Every purpose, in the contract's order.
    pub const ALL: [Purpose; 6] = [
        Purpose::Marketing,
        Purpose::Personalization,
        Purpose::Remarketing,
        Purpose::AbTesting,
        Purpose::Analytics,
        Purpose::Profiling,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Purpose::Marketing => "marketing",
            Purpose::Personalization => "personalization",
            Purpose::Remarketing => "remarketing",
            Purpose::AbTesting => "ab_testing",
            Purpose::Analytics => "analytics",
            Purpose::Profiling => "profiling",
        }
    }
}

impl FromStr for Purpose {
    type Err = UnknownWord;

    fn from_str(s: &str) -> Result<Self, UnknownWord> {
        find(&Purpose::ALL, Purpose::as_str, s, "a consent purpose")
    }
}

/// A channel a customer can be reached on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    Email,
    Sms,
    Push,
    Phone,
    Post,
    Web,
}

impl Channel {
    /// Every channel, in the contract's order.
    pub const ALL: [Channel; 6] = [
        Channel::Email,
        Channel::Sms,
        Channel::Push,
        Channel::Phone,
        Channel::Post,
        Channel::Web,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::Phone => "phone",
            Channel::Post => "post",
            Channel::Web => "web",
        }
    }
}

impl FromStr for Channel {
    type Err = UnknownWord;

    fn from_str(s: &str) -> Result<Self, UnknownWord> {
        find(
            &Channel::ALL,
            Channel::as_str,
            s,
            "a consent channel a customer can be reached on",
        )
    }
}

/// What channels a consent decision covers: one, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsentChannel {
    One(Channel),
    All,
}

impl ConsentChannel {
    /// Every consent channel, in the contract's order (`all` last).
    pub const ALL: [ConsentChannel; 7] = [
        ConsentChannel::One(Channel::Email),
        ConsentChannel::One(Channel::Sms),
        ConsentChannel::One(Channel::Push),
        ConsentChannel::One(Channel::Phone),
        ConsentChannel::One(Channel::Post),
        ConsentChannel::One(Channel::Web),
        ConsentChannel::All,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            ConsentChannel::One(c) => c.as_str(),
            ConsentChannel::All => "all",
        }
    }
}

impl From<Channel> for ConsentChannel {
    fn from(c: Channel) -> Self {
        ConsentChannel::One(c)
    }
}

impl FromStr for ConsentChannel {
    type Err = UnknownWord;

    fn from_str(s: &str) -> Result<Self, UnknownWord> {
        find(
            &ConsentChannel::ALL,
            ConsentChannel::as_str,
            s,
            "a consent channel",
        )
    }
}

/// The word of `all` named `s`.
fn find<T: Copy>(
    all: &[T],
    name: fn(T) -> &'static str,
    s: &str,
    what: &'static str,
) -> Result<T, UnknownWord> {
    all.iter()
        .copied()
        .find(|w| name(*w) == s)
        .ok_or_else(|| UnknownWord {
            what,
            value: s.to_string(),
            allowed: all.iter().map(|w| name(*w)).collect::<Vec<_>>().join(", "),
        })
}

/// What every word has: its string for display and comparison, ordered by it, and
/// serialised as it.
macro_rules! word_traits {
    ($t:ty, $expecting:literal) => {
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Ord for $t {
            fn cmp(&self, other: &Self) -> Ordering {
                self.as_str().cmp(other.as_str())
            }
        }

        impl PartialOrd for $t {
            fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
                Some(self.cmp(other))
            }
        }

        impl PartialEq<str> for $t {
            fn eq(&self, other: &str) -> bool {
                self.as_str() == other
            }
        }

        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }

        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Word;
                impl de::Visitor<'_> for Word {
                    type Value = $t;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$t, E> {
                        s.parse().map_err(E::custom)
                    }
                }
                d.deserialize_str(Word)
            }
        }
    };
}

word_traits!(Purpose, "a consent purpose");
word_traits!(Channel, "a consent channel a customer can be reached on");
word_traits!(ConsentChannel, "a consent channel");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_read_back_from_their_strings() {
        for p in Purpose::ALL {
            assert_eq!(p.as_str().parse::<Purpose>(), Ok(p));
        }
        for c in ConsentChannel::ALL {
            assert_eq!(c.as_str().parse::<ConsentChannel>(), Ok(c));
        }
        for c in Channel::ALL {
            assert_eq!(c.as_str().parse::<Channel>(), Ok(c));
            assert_eq!(ConsentChannel::from(c).as_str(), c.as_str());
        }
        assert_eq!(
            "all".parse::<Channel>().unwrap_err().to_string(),
            "`all` is not a consent channel a customer can be reached on \
             (one of email, sms, push, phone, post, web)"
        );
        assert_eq!(
            "spam".parse::<Purpose>().unwrap_err().to_string(),
            "`spam` is not a consent purpose (one of marketing, personalization, \
             remarketing, ab_testing, analytics, profiling)"
        );
        assert!("Email".parse::<ConsentChannel>().is_err());
    }

    #[test]
    fn words_are_ordered_as_their_strings() {
        let mut purposes = Purpose::ALL;
        purposes.sort();
        let mut names = Purpose::ALL.map(Purpose::as_str);
        names.sort();
        assert_eq!(purposes.map(Purpose::as_str), names);
        let mut channels = ConsentChannel::ALL;
        channels.sort();
        let mut names = ConsentChannel::ALL.map(ConsentChannel::as_str);
        names.sort();
        assert_eq!(channels.map(ConsentChannel::as_str), names);
        assert_eq!(channels[0], ConsentChannel::All);
    }

    #[test]
    fn words_serialise_as_their_strings_in_json_and_postcard() {
        let json = serde_json::to_string(&(Purpose::AbTesting, ConsentChannel::All)).unwrap();
        assert_eq!(json, r#"["ab_testing","all"]"#);
        let back: (Purpose, ConsentChannel) = serde_json::from_str(&json).unwrap();
        assert_eq!(back, (Purpose::AbTesting, ConsentChannel::All));
        // The store's encoding of a word is that of its string.
        let typed = postcard::to_allocvec(&(Purpose::Marketing, Channel::Sms)).unwrap();
        let text = postcard::to_allocvec(&("marketing", "sms")).unwrap();
        assert_eq!(typed, text);
        let back: (Purpose, Channel) = postcard::from_bytes(&text).unwrap();
        assert_eq!(back, (Purpose::Marketing, Channel::Sms));
        let err = serde_json::from_str::<Channel>(r#""all""#).unwrap_err();
        assert!(
            err.to_string().contains("`all` is not a consent channel"),
            "{err}"
        );
        let err = serde_json::from_str::<Purpose>("3").unwrap_err();
        assert!(
            err.to_string().contains("expected a consent purpose"),
            "{err}"
        );
    }
}
