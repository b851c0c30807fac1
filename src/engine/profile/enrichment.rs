//! Enrichment (`[engine.enrichment]`): what the golden record infers beyond what the
//! events state, joined with the reference data.
//!
//! - **Affinities** for categories (the narrowest of a product's `category_path`) and
//!   brands of `reference.products`: a product view weighs 1, each SKU of a `cart_add`'s
//!   cart 3, each item bought 5 per unit (at most 10 units); weights decay by half every
//!   `half_life_days`, by event time.
//! - **Home store**: the store of `reference.stores` (an event's `source`) with the most
//!   events, then the latest; **home region**: the région of the address's postal code,
//!   else the home store's.
//! - **Price band**: the mean price of the items bought (else put in carts, else viewed)
//!   in the base currency, placed among `price_band_limits`.
//! - **Contact** per purpose that contacts (marketing, personalization, remarketing):
//!   among the channels the purpose is allowed and reachable on,
//!   the one with the most (decayed) engagement, and its hour of day (UTC) with the
//!   most. Engagement is any event of the touchpoint channel of the same name (`email`,
//!   `web`, `sms`, `push`, `phone`, `post`), of `app` (push) and of `service` (phone).
//! - **Next purchase**: the latest order time plus the median time between orders (two
//!   orders at least).
//!
//! Each value is `{value, source, at}` like the golden record's stated fields, so that
//! audiences read them (`enrichment.price_band == "high"`, `enrichment.home_store.city`).
//!
//! With `profiling` denied, nothing is inferred: the customer's facts are forgotten at its
//! next event and not kept while the denial holds.
//!
//! Facts are kept per source profile (a split takes its own along, a merge adds both
//! sides up) in `p/en/`, bounded: [`MAX_NAMES`] categories and brands, [`MAX_STORES`]
//! stores and [`MAX_PURCHASES`] order times per source profile. A decayed weight is kept
//! as its value at its latest contribution, so the same events in any order give the
//! same weights (up to rounding; scores are shown to three decimals). Only past a bound
//! does order matter: the weakest entry is forgotten.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::engine::config::EngineConfig;
use crate::engine::geography;
use crate::engine::reference::{Product, StoreInfo};
use crate::model::event::Address;
use crate::model::output::{Time, DAY_MS};
use crate::model::{Channel, Purpose};

use super::event::ProfileEvent;

/// Categories, and brands, kept per source profile.
pub const MAX_NAMES: usize = 16;
/// Stores kept per source profile.
pub const MAX_STORES: usize = 8;
/// Order times kept per source profile (and read for the next purchase).
pub const MAX_PURCHASES: usize = 16;
/// SKUs of one event looked up in the catalogue.
pub const MAX_SKUS_PER_EVENT: usize = 32;

const VIEW_WEIGHT: f64 = 1.0;
const CART_WEIGHT: f64 = 3.0;
const PURCHASE_WEIGHT: f64 = 5.0;
const MAX_UNITS: f64 = 10.0;
const HOUR_MS: i64 = 3_600_000;
/// The purposes a customer is contacted for (the others measure or profile).
const CONTACT_PURPOSES: [Purpose; 3] = [
    Purpose::Marketing,
    Purpose::Personalization,
    Purpose::Remarketing,
];

/// The compiled `[engine.enrichment]`.
#[derive(Debug, Clone)]
pub struct Settings {
    half_life_ms: i64,
    band_limits: Vec<f64>,
    band_names: Vec<String>,
    top: usize,
    currency: String,
}

impl Settings {
    /// `None` when enrichment is off.
    pub fn of(config: &EngineConfig) -> Option<Self> {
        let e = &config.enrichment;
        e.enabled.then(|| Self {
            half_life_ms: i64::from(e.half_life_days.max(1)) * DAY_MS,
            band_limits: e.price_band_limits.clone(),
            band_names: e.price_band_names.clone(),
            top: e.top,
            currency: config.lifecycle.base_currency.clone(),
        })
    }
}

/// A weight that decays by half every half-life: its value at `at`, the time of its
/// latest contribution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Decayed {
    pub score: f64,
    pub at: i64,
}

impl Decayed {
    fn add(&mut self, weight: f64, at: i64, half_life_ms: i64) {
        if self.score == 0.0 || at >= self.at {
            self.score = self.value_at(at, half_life_ms) + weight;
            self.at = at;
        } else {
            self.score += weight * decay(self.at - at, half_life_ms);
        }
    }

    /// Its value at `t` (as it is at its own time for an earlier `t`).
    fn value_at(&self, t: i64, half_life_ms: i64) -> f64 {
        self.score * decay(t.saturating_sub(self.at).max(0), half_life_ms)
    }
}

fn decay(elapsed_ms: i64, half_life_ms: i64) -> f64 {
    (-(elapsed_ms as f64) / half_life_ms as f64).exp2()
}

/// A category or brand and its weight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Named {
    pub name: String,
    pub weight: Decayed,
}

/// Engagement on a contact channel (its index in [`Channel::ALL`]) at an hour of day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Engaged {
    pub channel: u8,
    pub hour: u8,
    pub weight: Decayed,
}

/// Events at a store, and what the reference data said of it at the latest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Visited {
    pub store: String,
    pub events: u32,
    pub last_at: i64,
    pub name: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
}

/// Item prices summed, in cents of the base currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Prices {
    pub cents: i64,
    pub items: u32,
    pub last_at: i64,
}

impl Prices {
    fn add(&mut self, price: f64, units: f64, at: i64) {
        let units = units.clamp(1.0, MAX_UNITS);
        self.cents = self
            .cents
            .saturating_add((price * 100.0 * units).round() as i64);
        self.items = self.items.saturating_add(units as u32);
        self.last_at = self.last_at.max(at);
    }
}

/// What one source profile's events told.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SourceEnrichment {
    pub categories: Vec<Named>,
    pub brands: Vec<Named>,
    pub engagement: Vec<Engaged>,
    pub stores: Vec<Visited>,
    /// Items bought, put in carts, viewed.
    pub prices: [Prices; 3],
    /// Times of orders, increasing.
    pub purchases: Vec<i64>,
}

const BOUGHT: usize = 0;
const CARTED: usize = 1;
const VIEWED: usize = 2;

/// A customer's enrichment facts, per source profile.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EnrichmentState {
    pub sources: BTreeMap<u64, SourceEnrichment>,
}

impl EnrichmentState {
    /// Adds another customer's facts (a merge).
    pub fn absorb(&mut self, other: EnrichmentState) {
        self.sources.extend(other.sources);
    }

    /// Takes the facts of `source_profiles` away (a split, a detach).
    pub fn split_off(&mut self, source_profiles: &[u64]) -> EnrichmentState {
        let moved = source_profiles
            .iter()
            .filter_map(|sp| Some((*sp, self.sources.remove(sp)?)))
            .collect();
        EnrichmentState { sources: moved }
    }

    /// Records an event of `source_profile`. `product` looks a SKU up in the catalogue;
    /// `store` is the reference data of the event's source, if it is a store.
    pub fn record<E>(
        &mut self,
        settings: &Settings,
        source_profile: u64,
        event: &ProfileEvent,
        mut product: impl FnMut(&str) -> Result<Option<Product>, E>,
        store: Option<StoreInfo>,
    ) -> Result<(), E> {
        let at = event.occurred_at;
        let hl = settings.half_life_ms;
        let facts = self.sources.entry(source_profile).or_default();
        for (sku, weight, level, price, units) in contributions(event, &settings.currency) {
            let found = product(sku)?;
            let Some(found) = found else {
                if let Some(price) = price {
                    facts.prices[level].add(price, units, at);
                }
                continue;
            };
            if let Some(category) = found.category_path.last() {
                add_named(&mut facts.categories, category, weight, at, hl);
            }
            if let Some(brand) = &found.brand {
                add_named(&mut facts.brands, brand, weight, at, hl);
            }
            let catalogue_price = found.price.filter(|_| {
                found
                    .currency
                    .as_ref()
                    .is_none_or(|c| *c == settings.currency)
            });
            if let Some(price) = price.or(catalogue_price) {
                facts.prices[level].add(price, units, at);
            }
        }
        if let Some(channel) = contact_channel(&event.channel) {
            let hour = (at.rem_euclid(DAY_MS) / HOUR_MS) as u8;
            match facts
                .engagement
                .iter_mut()
                .find(|e| e.channel == channel && e.hour == hour)
            {
                Some(e) => e.weight.add(1.0, at, hl),
                None => facts.engagement.push(Engaged {
                    channel,
                    hour,
                    weight: Decayed { score: 1.0, at },
                }),
            }
        }
        if let (Some(source), Some(info)) = (&event.source, store) {
            visit(&mut facts.stores, source, info, at);
        }
        if event.purchase.is_some() {
            if let Err(i) = facts.purchases.binary_search(&at) {
                facts.purchases.insert(i, at);
                if facts.purchases.len() > MAX_PURCHASES {
                    facts.purchases.remove(0);
                }
            }
        }
        Ok(())
    }

    /// What the golden record shows as of `as_of`: `address` is the person's surviving
    /// address and its time, `allowed` the channels allowed and reachable per purpose.
    pub fn view(
        &self,
        settings: &Settings,
        as_of: i64,
        address: Option<(&Address, i64)>,
        allowed: &BTreeMap<Purpose, Vec<Channel>>,
    ) -> Enriched {
        let hl = settings.half_life_ms;
        let sources = || self.sources.values();
        let categories = strongest(
            sources().flat_map(|s| &s.categories),
            as_of,
            hl,
            settings.top,
        );
        let brands = strongest(sources().flat_map(|s| &s.brands), as_of, hl, settings.top);
        let top = |list: &[Affinity]| {
            list.first().map(|a| Stated {
                value: a.name.clone(),
                source: "affinity",
                at: a.at,
            })
        };
        let home_store = home_store(sources().flat_map(|s| &s.stores));
        let home_region = address
            .and_then(|(address, at)| {
                let country = address.country.as_deref();
                if country.is_some_and(|c| c != "FR") {
                    return None;
                }
                let place = geography::place(address.postal_code.as_deref()?)?;
                Some(Stated {
                    value: place.region.to_string(),
                    source: "address",
                    at: Time(at),
                })
            })
            .or_else(|| {
                let home = home_store.as_ref()?;
                Some(Stated {
                    value: home.value.region.clone()?,
                    source: "home_store",
                    at: home.at,
                })
            });
        Enriched {
            top_category: top(&categories),
            top_brand: top(&brands),
            categories,
            brands,
            home_store,
            home_region,
            price_band: self.price_band(settings),
            contact: self.contact(allowed, as_of, hl),
            next_purchase: self.next_purchase(),
        }
    }

    fn price_band(&self, settings: &Settings) -> Option<PriceBand> {
        let (level, sums) = [BOUGHT, CARTED, VIEWED].into_iter().find_map(|level| {
            let mut sum = Prices::default();
            for s in self.sources.values() {
                let p = &s.prices[level];
                sum.cents = sum.cents.saturating_add(p.cents);
                sum.items = sum.items.saturating_add(p.items);
                sum.last_at = sum.last_at.max(p.last_at);
            }
            (sum.items > 0).then_some((level, sum))
        })?;
        let mean = sums.cents as f64 / 100.0 / f64::from(sums.items);
        let band = settings
            .band_limits
            .iter()
            .position(|limit| mean < *limit)
            .unwrap_or(settings.band_limits.len());
        Some(PriceBand {
            value: settings.band_names.get(band)?.clone(),
            source: ["purchases", "carts", "views"][level],
            at: Time(sums.last_at),
            average_price: (mean * 100.0).round() / 100.0,
            items: sums.items,
        })
    }

    fn contact(
        &self,
        allowed: &BTreeMap<Purpose, Vec<Channel>>,
        as_of: i64,
        hl: i64,
    ) -> BTreeMap<Purpose, Contact> {
        // Engagement per channel and hour, all source profiles together.
        let mut by_hour: BTreeMap<(u8, u8), (f64, i64)> = BTreeMap::new();
        for e in self.sources.values().flat_map(|s| &s.engagement) {
            let slot = by_hour.entry((e.channel, e.hour)).or_default();
            slot.0 += e.weight.value_at(as_of, hl);
            slot.1 = slot.1.max(e.weight.at);
        }
        let mut contact = BTreeMap::new();
        for (purpose, channels) in allowed.iter().filter(|(p, _)| CONTACT_PURPOSES.contains(p)) {
            let Some(first) = channels.first() else {
                continue;
            };
            let engaged = channels.iter().filter_map(|c| {
                let index = channel_index(*c)?;
                let hours: Vec<(u8, f64, i64)> = by_hour
                    .range((index, 0)..=(index, 23))
                    .map(|((_, hour), (score, at))| (*hour, rounded(*score), *at))
                    .collect();
                let total = rounded(hours.iter().map(|h| h.1).sum());
                let at = hours.iter().map(|h| h.2).max()?;
                // The strongest hour, the earliest among equals.
                let hour = hours
                    .iter()
                    .fold(None::<(u8, f64)>, |best, h| match best {
                        Some((_, s)) if s >= h.1 => best,
                        _ => Some((h.0, h.1)),
                    })
                    .map(|(hour, _)| hour);
                Some((*c, total, at, hour))
            });
            // The most engaged channel, the first allowed among equals.
            let best = engaged.fold(
                None::<(Channel, f64, i64, Option<u8>)>,
                |best, e| match best {
                    Some(b) if b.1 >= e.1 => Some(b),
                    _ => Some(e),
                },
            );
            let chosen = match best {
                Some((channel, score, at, hour)) => Contact {
                    value: channel,
                    source: "engagement",
                    at: Some(Time(at)),
                    hour,
                    score,
                },
                None => Contact {
                    value: *first,
                    source: "consent",
                    at: None,
                    hour: None,
                    score: 0.0,
                },
            };
            contact.insert(*purpose, chosen);
        }
        contact
    }

    fn next_purchase(&self) -> Option<NextPurchase> {
        let mut times: Vec<i64> = self
            .sources
            .values()
            .flat_map(|s| s.purchases.iter().copied())
            .collect();
        times.sort_unstable();
        times.dedup();
        if times.len() > MAX_PURCHASES {
            times.drain(..times.len() - MAX_PURCHASES);
        }
        let last = *times.last()?;
        let mut gaps: Vec<i64> = times.windows(2).map(|w| w[1] - w[0]).collect();
        if gaps.is_empty() {
            return None;
        }
        gaps.sort_unstable();
        let mid = gaps.len() / 2;
        let median = if gaps.len() % 2 == 0 {
            (gaps[mid - 1] + gaps[mid]) / 2
        } else {
            gaps[mid]
        };
        Some(NextPurchase {
            value: Time(last.saturating_add(median)),
            source: "orders",
            at: Time(last),
            orders: times.len(),
            interval_days: (median as f64 / DAY_MS as f64 * 10.0).round() / 10.0,
        })
    }
}

/// The products an event is about, each with its weight, the prices it counts in, the
/// price it states (if in the base currency) and its units.
fn contributions<'a>(
    event: &'a ProfileEvent,
    currency: &str,
) -> Vec<(&'a str, f64, usize, Option<f64>, f64)> {
    let mut out = Vec::new();
    if let Some(sku) = &event.product_sku {
        out.push((sku.as_str(), VIEW_WEIGHT, VIEWED, None, 1.0));
    }
    if let (Some(order), true) = (&event.purchase, event.kind == "purchase") {
        let in_currency = order.currency == currency;
        for item in &order.items {
            let units = if item.quantity.is_finite() && item.quantity >= 1.0 {
                item.quantity.min(MAX_UNITS)
            } else {
                1.0
            };
            let price = item
                .unit_price
                .filter(|p| in_currency && p.is_finite() && *p >= 0.0);
            out.push((
                item.sku.as_str(),
                PURCHASE_WEIGHT * units,
                BOUGHT,
                price,
                units,
            ));
        }
    }
    if let (Some(cart), "cart_add") = (&event.cart, event.kind.as_str()) {
        for item in &cart.items {
            // Cart items state no currency: their price is taken as the base currency's.
            let price = item.unit_price.filter(|p| p.is_finite() && *p >= 0.0);
            out.push((item.sku.as_str(), CART_WEIGHT, CARTED, price, 1.0));
        }
    }
    out.retain(|c| !c.0.is_empty());
    out.truncate(MAX_SKUS_PER_EVENT);
    out
}

/// The contact channel an event of touchpoint channel `channel` engages on.
fn contact_channel(channel: &str) -> Option<u8> {
    let contact = match channel {
        "app" => Channel::Push,
        "service" => Channel::Phone,
        other => *Channel::ALL.iter().find(|c| c.as_str() == other)?,
    };
    channel_index(contact)
}

fn channel_index(channel: Channel) -> Option<u8> {
    Channel::ALL
        .iter()
        .position(|c| *c == channel)
        .map(|i| i as u8)
}

fn add_named(list: &mut Vec<Named>, name: &str, weight: f64, at: i64, hl: i64) {
    if let Some(n) = list.iter_mut().find(|n| n.name == name) {
        n.weight.add(weight, at, hl);
        return;
    }
    if list.len() >= MAX_NAMES {
        // The weakest as of this event goes (the greatest name among equals).
        let weakest = list
            .iter()
            .enumerate()
            .min_by(|(_, a), (_, b)| {
                let (va, vb) = (a.weight.value_at(at, hl), b.weight.value_at(at, hl));
                va.total_cmp(&vb).then_with(|| b.name.cmp(&a.name))
            })
            .map(|(i, _)| i);
        if let Some(i) = weakest {
            list.swap_remove(i);
        }
    }
    list.push(Named {
        name: name.to_string(),
        weight: Decayed { score: weight, at },
    });
}

fn visit(stores: &mut Vec<Visited>, source: &str, info: StoreInfo, at: i64) {
    let region = info.region.clone().or_else(|| {
        info.postal_code
            .as_deref()
            .and_then(geography::place)
            .map(|p| p.region.to_string())
    });
    let index = match stores.iter().position(|s| s.store == source) {
        Some(i) => i,
        None => {
            if stores.len() >= MAX_STORES {
                // The least visited goes, the least recent among equals.
                if let Some(i) = (0..stores.len())
                    .min_by_key(|i| (stores[*i].events, stores[*i].last_at, &stores[*i].store))
                {
                    stores.swap_remove(i);
                }
            }
            stores.push(Visited {
                store: source.to_string(),
                events: 0,
                last_at: at,
                name: None,
                city: None,
                region: None,
            });
            stores.len() - 1
        }
    };
    let s = &mut stores[index];
    s.events = s.events.saturating_add(1);
    if at >= s.last_at {
        s.last_at = at;
        (s.name, s.city, s.region) = (info.name, info.city, region);
    } else if s.name.is_none() && s.city.is_none() && s.region.is_none() {
        (s.name, s.city, s.region) = (info.name, info.city, region);
    }
}

fn rounded(score: f64) -> f64 {
    (score * 1000.0).round() / 1000.0
}

/// The `top` strongest names as of `as_of`, all source profiles together.
fn strongest<'a>(
    named: impl Iterator<Item = &'a Named>,
    as_of: i64,
    hl: i64,
    top: usize,
) -> Vec<Affinity> {
    let mut sums: BTreeMap<&str, (f64, i64)> = BTreeMap::new();
    for n in named {
        let slot = sums.entry(&n.name).or_default();
        slot.0 += n.weight.value_at(as_of, hl);
        slot.1 = slot.1.max(n.weight.at);
    }
    let mut list: Vec<Affinity> = sums
        .into_iter()
        .map(|(name, (score, at))| Affinity {
            name: name.to_string(),
            score: rounded(score),
            at: Time(at),
        })
        .filter(|a| a.score > 0.0)
        .collect();
    list.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.name.cmp(&b.name))
    });
    list.truncate(top);
    list
}

fn home_store<'a>(visits: impl Iterator<Item = &'a Visited>) -> Option<Stated<HomeStore>> {
    let mut by_store: BTreeMap<&str, (u32, &Visited)> = BTreeMap::new();
    for v in visits {
        let slot = by_store.entry(&v.store).or_insert((0, v));
        slot.0 = slot.0.saturating_add(v.events);
        if v.last_at > slot.1.last_at {
            slot.1 = v;
        }
    }
    // The most events, then the latest, then the smallest id.
    let (store, (events, latest)) = by_store.into_iter().max_by(|a, b| {
        (a.1 .0, a.1 .1.last_at)
            .cmp(&(b.1 .0, b.1 .1.last_at))
            .then_with(|| b.0.cmp(a.0))
    })?;
    Some(Stated {
        value: HomeStore {
            store: store.to_string(),
            name: latest.name.clone(),
            city: latest.city.clone(),
            region: latest.region.clone(),
            events,
        },
        source: "store_events",
        at: Time(latest.last_at),
    })
}

/// The golden record's `enrichment`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Enriched {
    /// The strongest categories, strongest first.
    pub categories: Vec<Affinity>,
    pub brands: Vec<Affinity>,
    pub top_category: Option<Stated<String>>,
    pub top_brand: Option<Stated<String>>,
    pub home_store: Option<Stated<HomeStore>>,
    pub home_region: Option<Stated<String>>,
    pub price_band: Option<PriceBand>,
    /// Per purpose with a channel allowed.
    pub contact: BTreeMap<Purpose, Contact>,
    pub next_purchase: Option<NextPurchase>,
}

impl Enriched {
    /// A value with every field set and a contact for two purposes: what the schema's
    /// tests encode.
    #[doc(hidden)]
    pub fn example() -> Self {
        let t = |s: &str| {
            Time(
                chrono::DateTime::parse_from_rfc3339(s)
                    .unwrap_or_default()
                    .timestamp_millis(),
            )
        };
        let stated = |value: &str, source, at| Stated {
            value: value.to_string(),
            source,
            at: t(at),
        };
        Enriched {
            categories: vec![
                Affinity {
                    name: "escalade".into(),
                    score: 9.875,
                    at: t("2026-10-10T15:00:00Z"),
                },
                Affinity {
                    name: "vêtements".into(),
                    score: 0.001,
                    at: t("2026-10-09T08:30:00.250Z"),
                },
            ],
            brands: vec![Affinity {
                name: "Simond".into(),
                score: 4.321,
                at: t("2026-09-10T15:00:00Z"),
            }],
            top_category: Some(stated("escalade", "affinity", "2026-10-10T15:00:00Z")),
            top_brand: Some(stated("Simond", "affinity", "2026-09-10T15:00:00Z")),
            home_store: Some(Stated {
                value: HomeStore {
                    store: "pos-lyon-2".into(),
                    name: Some("Lyon Bellecour".into()),
                    city: Some("Lyon".into()),
                    region: Some("Auvergne-Rhône-Alpes".into()),
                    events: 2,
                },
                source: "store_events",
                at: t("2026-10-10T15:00:00Z"),
            }),
            home_region: Some(stated(
                "Auvergne-Rhône-Alpes",
                "address",
                "2026-09-01T08:00:00Z",
            )),
            price_band: Some(PriceBand {
                value: "mid".into(),
                source: "purchases",
                at: t("2026-10-10T15:00:00Z"),
                average_price: 98.27,
                items: 3,
            }),
            contact: [
                (
                    Purpose::Marketing,
                    Contact {
                        value: Channel::Email,
                        source: "engagement",
                        at: Some(t("2026-10-05T07:00:00Z")),
                        hour: Some(19),
                        score: 1.912,
                    },
                ),
                (
                    Purpose::AbTesting,
                    Contact {
                        value: Channel::Push,
                        source: "engagement",
                        at: Some(t("2026-10-02T00:15:00Z")),
                        hour: Some(0),
                        score: 0.5,
                    },
                ),
            ]
            .into(),
            next_purchase: Some(NextPurchase {
                value: t("2026-11-09T15:00:00Z"),
                source: "orders",
                at: t("2026-10-10T15:00:00Z"),
                orders: 2,
                interval_days: 30.0,
            }),
        }
    }
}

/// A category or brand, its weight as of the record and its latest event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Affinity {
    pub name: String,
    pub score: f64,
    pub at: Time,
}

/// An inferred value, what it was inferred from and the time of its latest evidence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stated<T> {
    pub value: T,
    pub source: &'static str,
    pub at: Time,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HomeStore {
    pub store: String,
    pub name: Option<String>,
    pub city: Option<String>,
    pub region: Option<String>,
    pub events: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriceBand {
    pub value: String,
    pub source: &'static str,
    pub at: Time,
    pub average_price: f64,
    pub items: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Contact {
    pub value: Channel,
    pub source: &'static str,
    pub at: Option<Time>,
    /// Hour of day (UTC) with the most engagement on the channel.
    pub hour: Option<u8>,
    pub score: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NextPurchase {
    /// When the next order is expected.
    pub value: Time,
    pub source: &'static str,
    /// The latest order.
    pub at: Time,
    pub orders: usize,
    /// The median time between orders.
    pub interval_days: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const HL: i64 = 30 * DAY_MS;

    #[test]
    fn a_decayed_weight_is_the_same_in_any_order() {
        let contributions = [
            (1.0, 0),
            (3.0, 5 * DAY_MS),
            (5.0, 40 * DAY_MS),
            (1.0, 2 * DAY_MS),
        ];
        let mut forward = Decayed::default();
        for (w, t) in contributions {
            forward.add(w, t, HL);
        }
        let mut backward = Decayed::default();
        for (w, t) in contributions.iter().rev() {
            backward.add(*w, *t, HL);
        }
        let at = 50 * DAY_MS;
        let expected: f64 = contributions
            .iter()
            .map(|(w, t)| w * (-((at - t) as f64) / HL as f64).exp2())
            .sum();
        assert!((forward.value_at(at, HL) - expected).abs() < 1e-9);
        assert!((backward.value_at(at, HL) - expected).abs() < 1e-9);
        // Half as much one half-life later.
        assert!((forward.value_at(at + HL, HL) - expected / 2.0).abs() < 1e-9);
    }

    #[test]
    fn names_are_bounded_and_the_weakest_goes() {
        let mut list = Vec::new();
        for i in 0..MAX_NAMES {
            add_named(&mut list, &format!("c{i:02}"), 2.0, DAY_MS, HL);
        }
        add_named(&mut list, "c00", 1.0, DAY_MS, HL);
        add_named(&mut list, "weak", 1.0, 0, HL);
        assert_eq!(list.len(), MAX_NAMES);
        assert!(list.iter().any(|n| n.name == "weak"));
        assert!(list.iter().any(|n| n.name == "c00"), "the strongest stays");
        assert!(!list.iter().any(|n| n.name == "c15"), "a weakest goes");
    }

    #[test]
    fn stores_are_bounded() {
        let mut stores = Vec::new();
        for i in 0..MAX_STORES + 3 {
            visit(
                &mut stores,
                &format!("s{i}"),
                StoreInfo::default(),
                i as i64,
            );
            visit(&mut stores, "home", StoreInfo::default(), i as i64);
        }
        assert_eq!(stores.len(), MAX_STORES);
        let home = home_store(stores.iter()).unwrap();
        assert_eq!(home.value.store, "home");
        assert_eq!(home.value.events, (MAX_STORES + 3) as u32);
    }

    #[test]
    fn contact_channels_of_touchpoint_channels() {
        let name = |c: &str| contact_channel(c).map(|i| Channel::ALL[i as usize].as_str());
        assert_eq!(name("email"), Some("email"));
        assert_eq!(name("app"), Some("push"));
        assert_eq!(name("service"), Some("phone"));
        assert_eq!(name("web"), Some("web"));
        assert_eq!(name("store"), None);
        assert_eq!(name("marketplace"), None);
    }
}
