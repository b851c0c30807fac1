//! Scoring a partition of labelled events, whoever made it: the replay output of
//! unicus, Splink's pairs cut at a threshold, exact identifier edges.
//!
//! [`Labels`] reads the events and their truth once and derives what the scores need
//! beyond the truth itself:
//!
//! * each identifier value, normalised as resolve normalises it; a value that resolve
//!   refuses (a placeholder, `n/a`…) keeps its trimmed lower-cased spelling, for trap
//!   detection only;
//! * a **trap** is a value carried by events of two or more true persons (a family
//!   e-mail, a shop phone, a placeholder typed by many); a **clean** value is a usable
//!   value carried by one true person only;
//! * **id-linkable** pairs are pairs of events of one person joined by a chain of that
//!   person's events, each sharing a clean value with the next (what exact identifier
//!   matching can find); the other true pairs **need person data**.
//!
//! [`score`] then gives, from the contingency counts of (person, cluster):
//!
//! * pairwise precision, recall and F1 ([`PairCounts`]);
//! * B-cubed precision and recall: the mean over events of the share of its cluster
//!   that is its person, and of its person that is in its cluster;
//! * the recall of id-linkable pairs and of pairs that need person data;
//! * **false merges**: in each cluster, its true persons minus one (the fewest wrong
//!   joins that build it), and those **through a trap**: persons minus the groups they
//!   form when two persons are grouped whenever their events in that cluster carry one
//!   trap value;
//! * the largest cluster (events, true persons).

use std::collections::HashMap;
use std::io::BufRead;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::engine::config::EngineConfig;
use crate::engine::resolve::Resolver;
use crate::sim::accuracy::{pair_counts, PairCounts, Truth};

/// Union-find over `0..n`, by size, with path halving.
#[derive(Debug, Clone)]
pub struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    pub fn new(n: usize) -> Self {
        Self {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
        }
    }

    pub fn find(&mut self, mut x: usize) -> usize {
        while self.parent[x] as usize != x {
            let grand = self.parent[self.parent[x] as usize];
            self.parent[x] = grand;
            x = grand as usize;
        }
        x
    }

    /// The new root if `a` and `b` were apart, with the root that went under it.
    pub fn union(&mut self, a: usize, b: usize) -> Option<(usize, usize)> {
        let (ra, rb) = (self.find(a), self.find(b));
        if ra == rb {
            return None;
        }
        let (big, small) = if self.size[ra] >= self.size[rb] {
            (ra, rb)
        } else {
            (rb, ra)
        };
        self.parent[small] = big as u32;
        self.size[big] += self.size[small];
        Some((big, small))
    }

    /// The root of each element, as cluster ids.
    pub fn clusters(&mut self) -> Vec<u64> {
        (0..self.parent.len())
            .map(|i| self.find(i) as u64)
            .collect()
    }
}

/// The labelled events of a stream, in file order, and what scoring needs of them.
#[derive(Debug, Clone, Default)]
pub struct Labels {
    pub event_ids: Vec<String>,
    pub index: HashMap<String, usize>,
    pub person: Vec<u32>,
    /// The events of one person joined by clean identifier values share a group.
    pub id_group: Vec<u32>,
    /// Usable identifier values of each event (interned `(kind, normalised value)`).
    pub identifiers: Vec<Vec<u32>>,
    /// Trap values each event carries (interned like `identifiers`, placeholders too).
    pub traps: Vec<Vec<u32>>,
    /// Distinct trap values, and distinct values in all.
    pub trap_values: usize,
    pub values: usize,
}

impl Labels {
    /// Reads the events (one JSON document per line) that have a truth row. Lines that
    /// are not JSON objects or not in the truth are skipped; labelled events missing
    /// from the file are an error.
    pub fn read(events: impl BufRead, truth: &Truth, config: &EngineConfig) -> Result<Self> {
        let resolver = Resolver::new(config);
        let mut labels = Labels::default();
        let mut interned: HashMap<(String, String), u32> = HashMap::new();
        // Per event: every value (usable or not) for trap detection.
        let mut all_values: Vec<Vec<u32>> = Vec::new();
        for (i, line) in events.lines().enumerate() {
            let line = line.with_context(|| format!("events line {}", i + 1))?;
            let Ok(doc) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let Some((id, &person)) = doc["event_id"]
                .as_str()
                .and_then(|id| truth.get_key_value(id))
            else {
                continue;
            };
            if labels.index.contains_key(id) {
                anyhow::bail!("events line {}: event id {id} seen twice", i + 1);
            }
            let mut usable = Vec::new();
            let mut every = Vec::new();
            for (kind, raw) in doc["identifiers"].as_object().into_iter().flatten() {
                let raws: Vec<&str> = match raw {
                    Value::String(s) => vec![s.as_str()],
                    Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                    _ => Vec::new(),
                };
                for raw in raws {
                    let normalised = resolver.normalise_identifier(kind, raw);
                    let value = match &normalised {
                        Some(ident) => ident.value.clone(),
                        None => format!("raw:{}", raw.trim().to_lowercase()),
                    };
                    if value == "raw:" {
                        continue;
                    }
                    let next = interned.len() as u32;
                    let v = *interned.entry((kind.clone(), value)).or_insert(next);
                    every.push(v);
                    if normalised.is_some() {
                        usable.push(v);
                    }
                }
            }
            labels.index.insert(id.clone(), labels.event_ids.len());
            labels.event_ids.push(id.clone());
            labels.person.push(person);
            labels.identifiers.push(usable);
            all_values.push(every);
        }
        if labels.event_ids.len() != truth.len() {
            anyhow::bail!(
                "{} labelled events in the truth, {} of them in the events file",
                truth.len(),
                labels.event_ids.len()
            );
        }
        // Persons per value: one (clean), or more (a trap).
        let mut owner: Vec<Option<u32>> = vec![None; interned.len()];
        let mut trap = vec![false; interned.len()];
        for (e, values) in all_values.iter().enumerate() {
            for &v in values {
                match owner[v as usize] {
                    None => owner[v as usize] = Some(labels.person[e]),
                    Some(p) if p != labels.person[e] => trap[v as usize] = true,
                    Some(_) => {}
                }
            }
        }
        let n = labels.event_ids.len();
        let mut groups = UnionFind::new(n);
        let mut first_with: Vec<Option<usize>> = vec![None; interned.len()];
        for e in 0..n {
            for &v in &labels.identifiers[e] {
                if trap[v as usize] {
                    continue;
                }
                match first_with[v as usize] {
                    None => first_with[v as usize] = Some(e),
                    Some(f) => {
                        groups.union(f, e);
                    }
                }
            }
        }
        labels.id_group = groups.clusters().into_iter().map(|g| g as u32).collect();
        labels.traps = all_values
            .iter()
            .map(|vs| vs.iter().copied().filter(|&v| trap[v as usize]).collect())
            .collect();
        labels.trap_values = trap.iter().filter(|&&t| t).count();
        labels.values = interned.len();
        Ok(labels)
    }

    pub fn len(&self) -> usize {
        self.event_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.event_ids.is_empty()
    }

    /// Events joined wherever they share a usable identifier value (traps included):
    /// exact identifier matching with no guardrail.
    pub fn exact_id_union(&self) -> UnionFind {
        let mut uf = UnionFind::new(self.len());
        let mut first_with: HashMap<u32, usize> = HashMap::new();
        for (e, values) in self.identifiers.iter().enumerate() {
            for &v in values {
                let first = *first_with.entry(v).or_insert(e);
                uf.union(first, e);
            }
        }
        uf
    }

    /// True pairs, id-linkable pairs.
    pub fn true_pairs(&self) -> (u128, u128) {
        let all = pair_counts(self.person.iter().map(|&p| (p, 0))).true_pairs;
        let linkable = pair_counts(self.id_group.iter().map(|&g| (g, 0))).true_pairs;
        (all, linkable)
    }
}

/// Found and true pairs of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Found {
    pub found: u128,
    pub of: u128,
}

impl Found {
    pub fn recall(&self) -> f64 {
        if self.of == 0 {
            1.0
        } else {
            self.found as f64 / self.of as f64
        }
    }
}

/// A partition scored against the truth.
#[derive(Debug, Clone, Default)]
pub struct PartitionScore {
    pub events: u64,
    pub persons: u64,
    pub clusters: u64,
    pub counts: PairCounts,
    pub bcubed_precision: f64,
    pub bcubed_recall: f64,
    pub id_linkable: Found,
    pub person_data: Found,
    /// Σ over clusters of (true persons − 1).
    pub false_merges: u64,
    /// Those explained by a trap value shared inside the cluster.
    pub through_trap: u64,
    pub mixed_clusters: u64,
    pub largest_events: u64,
    pub largest_persons: u64,
}

impl PartitionScore {
    pub fn bcubed_f1(&self) -> f64 {
        let (p, r) = (self.bcubed_precision, self.bcubed_recall);
        if p + r == 0.0 {
            0.0
        } else {
            2.0 * p * r / (p + r)
        }
    }
}

/// Scores `clusters` (a cluster id per event of `labels`, in its order).
pub fn score(labels: &Labels, clusters: &[u64]) -> PartitionScore {
    assert_eq!(
        labels.len(),
        clusters.len(),
        "one cluster per labelled event"
    );
    let n = labels.len();
    let mut s = PartitionScore {
        events: n as u64,
        ..PartitionScore::default()
    };
    s.counts = pair_counts(labels.person.iter().copied().zip(clusters.iter().copied()));
    let mut cell: HashMap<(u32, u64), u64> = HashMap::new();
    let mut person_size: HashMap<u32, u64> = HashMap::new();
    let mut cluster_size: HashMap<u64, u64> = HashMap::new();
    let mut group_cell: HashMap<(u32, u64), u64> = HashMap::new();
    for (e, &c) in clusters.iter().enumerate() {
        let p = labels.person[e];
        *cell.entry((p, c)).or_default() += 1;
        *person_size.entry(p).or_default() += 1;
        *cluster_size.entry(c).or_default() += 1;
        *group_cell.entry((labels.id_group[e], c)).or_default() += 1;
    }
    s.persons = person_size.len() as u64;
    s.clusters = cluster_size.len() as u64;
    if n > 0 {
        let (mut bp, mut br) = (0.0, 0.0);
        for (&(p, c), &k) in &cell {
            let k2 = (k * k) as f64;
            bp += k2 / cluster_size[&c] as f64;
            br += k2 / person_size[&p] as f64;
        }
        s.bcubed_precision = bp / n as f64;
        s.bcubed_recall = br / n as f64;
    }
    let (all, linkable) = labels.true_pairs();
    let pairs = |k: u64| u128::from(k) * u128::from(k.saturating_sub(1)) / 2;
    let linkable_found: u128 = group_cell.values().map(|&k| pairs(k)).sum();
    s.id_linkable = Found {
        found: linkable_found,
        of: linkable,
    };
    s.person_data = Found {
        found: s.counts.agreeing_pairs - linkable_found,
        of: all - linkable,
    };

    // Persons per cluster, and groups of them joined by a trap value in the cluster.
    let mut node: HashMap<(u64, u32), usize> = HashMap::new();
    for &(p, c) in cell.keys() {
        let next = node.len();
        node.entry((c, p)).or_insert(next);
    }
    let mut uf = UnionFind::new(node.len());
    let mut trap_holder: HashMap<(u64, u32), usize> = HashMap::new();
    for (e, &c) in clusters.iter().enumerate() {
        let here = node[&(c, labels.person[e])];
        for &v in &labels.traps[e] {
            let first = *trap_holder.entry((c, v)).or_insert(here);
            uf.union(first, here);
        }
    }
    let mut persons_in: HashMap<u64, u64> = HashMap::new();
    let mut groups_in: HashMap<u64, std::collections::HashSet<usize>> = HashMap::new();
    for (&(c, _), &i) in &node {
        *persons_in.entry(c).or_default() += 1;
        groups_in.entry(c).or_default().insert(uf.find(i));
    }
    for (c, &persons) in &persons_in {
        s.false_merges += persons - 1;
        s.through_trap += persons - groups_in[c].len() as u64;
        s.mixed_clusters += u64::from(persons > 1);
        let events = cluster_size[c];
        if (events, persons) > (s.largest_events, s.largest_persons) {
            s.largest_events = events;
            s.largest_persons = persons;
        }
    }
    s
}

/// Pairwise figures of the partition made by the edges of probability at least `t`,
/// for every distinct `t` of the edges, from the highest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThresholdPoint {
    pub threshold: f64,
    pub counts: PairCounts,
}

/// Adds `edges` (event, event, probability) in decreasing probability to `base` and
/// records the pair counts after each distinct probability: one pass, the counts of a
/// union being updated from the persons of its two sides.
pub fn scan_thresholds(
    labels: &Labels,
    base: &UnionFind,
    edges: &[(usize, usize, f64)],
) -> Vec<ThresholdPoint> {
    let mut uf = base.clone();
    let mut people: Vec<HashMap<u32, u64>> = vec![HashMap::new(); labels.len()];
    for e in 0..labels.len() {
        let r = uf.find(e);
        *people[r].entry(labels.person[e]).or_default() += 1;
    }
    let mut counts = pair_counts(
        labels
            .person
            .iter()
            .copied()
            .zip((0..labels.len()).map(|e| uf.find(e) as u64)),
    );
    let mut sorted: Vec<&(usize, usize, f64)> = edges.iter().collect();
    sorted.sort_by(|a, b| b.2.total_cmp(&a.2));
    let mut points = Vec::new();
    for (i, &&(a, b, p)) in sorted.iter().enumerate() {
        if let Some((big, small)) = uf.union(a, b) {
            let moved = std::mem::take(&mut people[small]);
            let size_small: u64 = moved.values().sum();
            let size_big: u64 = people[big].values().sum();
            counts.predicted_pairs += u128::from(size_small) * u128::from(size_big);
            for (person, k) in moved {
                let there = people[big].entry(person).or_default();
                counts.agreeing_pairs += u128::from(k) * u128::from(*there);
                *there += k;
            }
        }
        let last_of_tie = sorted.get(i + 1).is_none_or(|next| next.2 < p);
        if last_of_tie {
            points.push(ThresholdPoint {
                threshold: p,
                counts,
            });
        }
    }
    points
}

/// The partition of `base` plus the edges of probability at least `threshold`.
pub fn cut(base: &UnionFind, edges: &[(usize, usize, f64)], threshold: f64) -> Vec<u64> {
    let mut uf = base.clone();
    for &(a, b, p) in edges {
        if p >= threshold {
            uf.union(a, b);
        }
    }
    uf.clusters()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(lines: &[&str], truth: &[(&str, u32)]) -> Labels {
        let truth: Truth = truth.iter().map(|(e, p)| (e.to_string(), *p)).collect();
        Labels::read(
            lines.join("\n").as_bytes(),
            &truth,
            &EngineConfig::default(),
        )
        .unwrap()
    }

    fn ev(id: &str, ids: &str) -> String {
        format!(r#"{{"event_id":"{id}","channel":"web","identifiers":{{{ids}}}}}"#)
    }

    #[test]
    fn bcubed_of_a_hand_made_clustering() {
        // Persons: a = {1,2,3}, b = {4,5}. Clusters: {1,2}, {3,4,5}.
        let l = labels(
            &[
                &ev("1", ""),
                &ev("2", ""),
                &ev("3", ""),
                &ev("4", ""),
                &ev("5", ""),
            ],
            &[("1", 0), ("2", 0), ("3", 0), ("4", 1), ("5", 1)],
        );
        let s = score(&l, &[10, 10, 20, 20, 20]);
        // Precision: events 1,2: 2/2; 3: 1/3; 4,5: 2/3 → (1+1+1/3+2/3+2/3)/5 = 11/15.
        assert!((s.bcubed_precision - 11.0 / 15.0).abs() < 1e-12);
        // Recall: 1,2: 2/3; 3: 1/3; 4,5: 1 → (2/3+2/3+1/3+1+1)/5 = 11/15.
        assert!((s.bcubed_recall - 11.0 / 15.0).abs() < 1e-12);
        assert!((s.bcubed_f1() - 11.0 / 15.0).abs() < 1e-12);
        // Pairs: true 3+1 = 4, predicted 1+3 = 4, agreeing 1+1 = 2.
        assert_eq!(
            (
                s.counts.true_pairs,
                s.counts.predicted_pairs,
                s.counts.agreeing_pairs
            ),
            (4, 4, 2)
        );
        assert_eq!(
            (s.false_merges, s.through_trap, s.mixed_clusters),
            (1, 0, 1)
        );
        assert_eq!((s.largest_events, s.largest_persons), (3, 2));
        let perfect = score(&l, &[1, 1, 1, 2, 2]);
        assert_eq!(
            (perfect.bcubed_precision, perfect.bcubed_recall),
            (1.0, 1.0)
        );
        let singletons = score(&l, &[1, 2, 3, 4, 5]);
        assert_eq!(singletons.bcubed_precision, 1.0);
        assert!((singletons.bcubed_recall - (3.0 * (1.0 / 3.0) + 2.0 * 0.5) / 5.0).abs() < 1e-12);
    }

    #[test]
    fn id_linkable_pairs_follow_clean_values_and_traps_are_shared_values() {
        // Person 0: e1 –email– e2 –phone– e3, e4 with nothing. Person 1: e5 with the
        // family e-mail that e1 also gives, e6 with the same phone as a junk value.
        let l = labels(
            &[
                &ev("e1", r#""email":"A@x.com ","cookie_id":"c-1""#),
                &ev("e2", r#""email":"a@x.com","phone":"+61 412 345 678""#),
                &ev("e3", r#""phone":"0061412345678","email":"fam@x.com""#),
                &ev("e4", ""),
                &ev("e5", r#""email":"fam@x.com","phone":"0000000000""#),
                &ev("e6", r#""phone":"0000000000""#),
                "not json",
            ],
            &[
                ("e1", 0),
                ("e2", 0),
                ("e3", 0),
                ("e4", 0),
                ("e5", 1),
                ("e6", 1),
            ],
        );
        assert_eq!(l.len(), 6);
        let g = &l.id_group;
        assert!(g[0] == g[1] && g[1] == g[2] && g[3] != g[0] && g[4] != g[5]);
        // Traps: fam@x.com (persons 0 and 1). The placeholder phone is one person's.
        assert_eq!(l.trap_values, 1);
        assert!(l.traps[4].len() == 1 && l.traps[2] == l.traps[4] && l.traps[0].is_empty());
        assert_eq!(l.true_pairs(), (6 + 1, 3));
        // The placeholder is not usable: exact ids join e1..e3 and e5 (family e-mail).
        let clusters = l.exact_id_union().clusters();
        let s = score(&l, &clusters);
        assert_eq!(s.id_linkable, Found { found: 3, of: 3 });
        assert_eq!(s.person_data, Found { found: 0, of: 4 });
        assert_eq!((s.false_merges, s.through_trap), (1, 1));
        // A wrong join without a shared trap is not through a trap.
        let s = score(&l, &[1, 1, 1, 2, 2, 2]);
        assert_eq!((s.false_merges, s.through_trap), (1, 0));
        assert_eq!(s.person_data, Found { found: 1, of: 4 });
    }

    #[test]
    fn a_labelled_event_missing_from_the_file_is_an_error() {
        let truth: Truth = [("x".to_string(), 0), ("y".to_string(), 0)].into();
        let line = ev("x", "");
        assert!(Labels::read(line.as_bytes(), &truth, &EngineConfig::default()).is_err());
    }

    #[test]
    fn threshold_scan_matches_cutting_at_each_threshold() {
        let lines: Vec<String> = (0..8).map(|i| ev(&format!("e{i}"), "")).collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        let truth: Vec<(String, u32)> = (0..8).map(|i| (format!("e{i}"), i / 3)).collect();
        let truth: Vec<(&str, u32)> = truth.iter().map(|(e, p)| (e.as_str(), *p)).collect();
        let l = labels(&refs, &truth);
        let edges = vec![
            (0, 1, 0.99),
            (1, 2, 0.95),
            (2, 3, 0.5),
            (3, 4, 0.95),
            (6, 7, 0.7),
            (5, 6, 0.2),
            (0, 2, 0.5),
        ];
        let base = UnionFind::new(l.len());
        let points = scan_thresholds(&l, &base, &edges);
        assert_eq!(
            points.iter().map(|p| p.threshold).collect::<Vec<_>>(),
            vec![0.99, 0.95, 0.7, 0.5, 0.2]
        );
        for p in points {
            let s = score(&l, &cut(&base, &edges, p.threshold));
            assert_eq!(s.counts, p.counts, "at {}", p.threshold);
        }
    }
}
