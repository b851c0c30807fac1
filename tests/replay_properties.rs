//! Properties of replay over generated streams: cutting a stream anywhere, committing,
//! even reopening the store, gives the same outputs and state as one uninterrupted run.

mod common;

use proptest::prelude::*;
use serde_json::Value;
use unicus::engine::config::EngineConfig;
use unicus::engine::{Engine, Record};
use unicus::model::output::OutputRecord;
use unicus::replay;
use unicus::sim::generate::{GenerateOptions, Generator};
use unicus::store::Store;

fn stream(seed: u64, customers: usize, events: usize) -> Vec<String> {
    Generator::new(GenerateOptions {
        seed,
        customers,
        events,
        invalid_rate: 0.02,
        ..GenerateOptions::default()
    })
    .map(|e| e.line)
    .collect()
}

/// Output lines; the dead-letter offset header is dropped, since it is the line's
/// position in the part replayed, not in the whole stream.
fn outputs(engine: &mut Engine, lines: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    replay::run(
        engine,
        lines.join("\n").as_bytes(),
        "p",
        common::NOW,
        &mut out,
        7,
        None,
    )
    .unwrap();
    String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            if let Some(h) = v.get_mut("headers").and_then(Value::as_object_mut) {
                h.remove("unicus.source.offset");
            }
            v.to_string()
        })
        .collect()
}

/// Output lines other than `profiles.merged`, in order, and the latest `profiles.merged`
/// value of each key (what a consumer of the compacted topic ends with).
fn compacted(lines: &[String]) -> (Vec<&String>, std::collections::BTreeMap<String, Value>) {
    let mut others = Vec::new();
    let mut latest = std::collections::BTreeMap::new();
    for l in lines {
        let v: Value = serde_json::from_str(l).unwrap();
        if v["topic"] == "profiles.merged" {
            latest.insert(v["key"].to_string(), v["value"].clone());
        } else {
            others.push(l);
        }
    }
    (others, latest)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, failure_persistence: None, ..ProptestConfig::default() })]

    /// Golden records one per change: the outputs are the same line for line. Coalesced
    /// per batch, the cut ends a batch early: every other record is the same, in the
    /// same order, and `profiles.merged` read as the compacted topic it is (the latest
    /// value of each key) is the same.
    #[test]
    fn replaying_a_then_b_equals_replaying_a_plus_b(
        seed in any::<u64>(),
        customers in 3usize..40,
        events in 10usize..250,
        cut_at in 0.0f64..1.0,
        reopen in any::<bool>(),
        coalesce_profiles in any::<bool>(),
    ) {
        let lines = stream(seed, customers, events);
        let cut = ((lines.len() as f64) * cut_at) as usize;
        let config = EngineConfig { coalesce_profiles, ..EngineConfig::default() };

        let mut whole = Engine::new(config.clone(), Store::temporary().unwrap()).unwrap();
        let all = outputs(&mut whole, &lines);

        let dir = tempfile::tempdir().unwrap();
        let mut split = Engine::new(config.clone(), Store::open(dir.path()).unwrap()).unwrap();
        let mut parts = outputs(&mut split, &lines[..cut]);
        if reopen {
            drop(split);
            split = Engine::new(config.clone(), Store::open(dir.path()).unwrap()).unwrap();
        }
        parts.extend(outputs(&mut split, &lines[cut..]));

        if !coalesce_profiles {
            prop_assert_eq!(parts.len(), all.len());
            for (i, (p, a)) in parts.iter().zip(&all).enumerate() {
                prop_assert_eq!(p, a, "output line {}", i);
            }
        }
        let (parts_others, parts_latest) = compacted(&parts);
        let (all_others, all_latest) = compacted(&all);
        prop_assert_eq!(parts_others, all_others);
        prop_assert_eq!(parts_latest, all_latest);
        prop_assert_eq!(split.golden_records().unwrap(), whole.golden_records().unwrap());
        prop_assert_eq!(split.customer_count().unwrap(), whole.customer_count().unwrap());
    }

    /// Golden records left to the end of the batch (`handle_batched`) are those built
    /// at each change and coalesced after (`handle`, then `absorb`): line for line. And
    /// coalesced or not, a consumer of the compacted topic ends with the same records.
    #[test]
    fn golden_records_built_at_the_end_of_a_batch_are_those_built_at_each_change(
        seed in any::<u64>(),
        customers in 3usize..40,
        events in 10usize..400,
        batch in 1usize..60,
    ) {
        let lines = stream(seed, customers, events);
        let coalesced = |deferred: bool| {
            let mut engine = common::engine();
            let mut cache = engine.profile_cache();
            let mut out = Vec::new();
            let mut write = |records: &[OutputRecord]| {
                for r in records {
                    r.write_replay_line(&mut out).unwrap();
                    out.push(b'\n');
                }
            };
            for (i, line) in lines.iter().enumerate() {
                let record = Record::new(line.as_bytes(), "p", i as i64, common::NOW);
                let input = engine.parse_line(line.as_bytes());
                let outputs = if deferred {
                    engine.handle_batched(&record, input, &mut cache, ()).unwrap()
                } else {
                    let mut outputs = engine.handle(&record, input).unwrap();
                    cache.absorb(&mut outputs, ());
                    outputs
                };
                write(&outputs);
                if engine.pending() >= batch {
                    let held: Vec<_> = engine.end_batch(&mut cache).unwrap().into_iter().map(|(r, ())| r).collect();
                    write(&held);
                    engine.commit().unwrap();
                }
            }
            let held: Vec<_> = engine.end_batch(&mut cache).unwrap().into_iter().map(|(r, ())| r).collect();
            write(&held);
            String::from_utf8(out).unwrap()
        };
        let deferred = coalesced(true);
        let immediate = coalesced(false);
        prop_assert_eq!(&deferred, &immediate);

        let config = EngineConfig { coalesce_profiles: false, ..EngineConfig::default() };
        let mut each = Engine::new(config, Store::temporary().unwrap()).unwrap();
        let each = outputs(&mut each, &lines);
        let deferred: Vec<String> = deferred.lines().map(String::from).collect();
        prop_assert_eq!(compacted(&deferred).1, compacted(&each).1);
    }

    #[test]
    fn replaying_a_prefix_again_adds_nothing(
        seed in any::<u64>(),
        events in 10usize..150,
        cut_at in 0.0f64..1.0,
    ) {
        let lines = stream(seed, 20, events);
        let cut = ((lines.len() as f64) * cut_at) as usize;
        let mut once = common::engine();
        outputs(&mut once, &lines);
        let mut again = common::engine();
        outputs(&mut again, &lines[..cut]);
        let second: Vec<Value> = outputs(&mut again, &lines)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        // Only the rest of the stream (and dead letters, which are never remembered)
        // produces output the second time.
        prop_assert!(second.iter().filter(|o| o["topic"] == "touchpoints.resolved").count() <= lines.len() - cut);
        prop_assert_eq!(again.golden_records().unwrap(), once.golden_records().unwrap());
    }
}

#[test]
fn restart_with_state_in_the_middle_of_a_file_gives_the_same_final_state() {
    let lines = stream(11, 50, 2_000);
    let dir = tempfile::tempdir().unwrap();
    let full = dir.path().join("all.jsonl");
    let half = dir.path().join("half.jsonl");
    std::fs::write(&full, lines.join("\n")).unwrap();
    std::fs::write(&half, lines[..1_000].join("\n")).unwrap();
    let state = dir.path().join("state");
    let run = |input: &std::path::Path, state: Option<std::path::PathBuf>, out: &str| {
        replay::replay(
            EngineConfig::default(),
            &replay::ReplayOptions {
                input: input.to_path_buf(),
                output: dir.path().join(out),
                state,
                batch: 100,
                progress: false,
                now: common::NOW,
            },
        )
        .unwrap()
    };
    run(&half, Some(state.clone()), "o1.jsonl");
    let second = run(&full, Some(state.clone()), "o2.jsonl");
    assert_eq!(
        second.stats.duplicates,
        1_000 - count_invalid(&lines[..1_000])
    );
    let single = dir.path().join("single");
    run(&full, Some(single.clone()), "o3.jsonl");
    let a = replay::open_engine(EngineConfig::default(), Some(&state)).unwrap();
    let b = replay::open_engine(EngineConfig::default(), Some(&single)).unwrap();
    assert_eq!(a.golden_records().unwrap(), b.golden_records().unwrap());
    assert!(a.customer_count().unwrap() > 10);
}

fn count_invalid(lines: &[String]) -> u64 {
    let config = EngineConfig::default();
    lines
        .iter()
        .filter(|l| unicus::engine::input::touchpoint::parse(l.as_bytes(), &config).is_err())
        .count() as u64
}
