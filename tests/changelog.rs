//! The store's changelog against rdkafka's in-process mock cluster: an instance started
//! on an empty store restores the state from it; a batch cut by a crash is not applied;
//! a store that ran without the changelog is copied to it; a batch whose changelog a
//! crash may have cut is sent again on start.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::mock_cluster::{self, produce, read_partitions, start, Cluster};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};
use unicus::model::SOURCE_CHANNELS;
use unicus::settings::Settings;
use unicus::sim::generate::{GenerateOptions, Generator};
use unicus::store::keys::kafka_runtime::{
    CHANGELOG_RESTORING, CHANGELOG_SYNCED, OUTBOX, OUTBOX_KEYS,
};
use unicus::store::Store;

fn cluster(group: &str) -> Cluster {
    let mut c = mock_cluster::cluster(group, &SOURCE_CHANNELS);
    c.settings.runtime.batch_max_events = 50;
    // No tick by the wall clock: whether a start lasts long enough for one (and fires
    // the carts due) would decide the states compared.
    c.settings.engine.activation.tick_interval_ms = 86_400_000;
    c
}

/// Generated events: a few hundred, of a hundred persons (merges, consents, carts).
fn stream(events: usize, seed: u64) -> Vec<String> {
    Generator::new(GenerateOptions {
        seed,
        customers: 100,
        events,
        ..GenerateOptions::default()
    })
    .map(|e| e.line)
    .collect()
}

/// Every state key and value of a stopped instance's store (the runtime's own tables
/// left out), in key order.
fn state(settings: &Settings) -> Vec<(Vec<u8>, Vec<u8>)> {
    let store = Store::open(&settings.runtime.store_dir).unwrap();
    let mut out = Vec::new();
    let mut after: Option<Vec<u8>> = None;
    loop {
        let chunk = store.committed_after(after.as_deref(), 1000).unwrap();
        let Some((last, _)) = chunk.last() else { break };
        after = Some(last.clone());
        out.extend(chunk.into_iter().filter(|(k, _)| !k.starts_with(b"k/")));
    }
    out
}

/// Asserts that two states hold the same keys and values, but the mark of the timers
/// fired (the wall-clock time of the last tick, which each start moves) and the bound
/// of the next one due (read again from that time).
fn assert_same_state(got: &[(Vec<u8>, Vec<u8>)], want: &[(Vec<u8>, Vec<u8>)]) {
    let moved = |k: &[u8]| k == b"p/timers_done" || k == b"p/timers_next";
    let differs = |a: &[(Vec<u8>, Vec<u8>)], b: &[(Vec<u8>, Vec<u8>)]| -> Vec<String> {
        a.iter()
            .filter(|kv| !moved(&kv.0) && !b.contains(kv))
            .take(8)
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect()
    };
    assert!(want.len() > 100, "{} state keys", want.len());
    let missing = differs(want, got);
    assert!(missing.is_empty(), "not restored as they were: {missing:?}");
    let extra = differs(got, want);
    assert!(extra.is_empty(), "not in the original: {extra:?}");
}

/// The same settings on a new, empty store.
fn on_new_store(settings: &Settings, dir: &tempfile::TempDir) -> Settings {
    let mut s = settings.clone();
    s.runtime.store_dir = dir.path().join("store");
    s
}

/// Runs until `n` records are consumed (counting from this start), then stops.
async fn run_until(settings: &Settings, n: u64) {
    let mut run = start(settings);
    run.until(Duration::from_secs(60), "records consumed", |s| {
        s.consumed.load(Ordering::Relaxed) >= n
    })
    .await;
    run.stop().await;
}

/// Starts on the settings' store and stops once ready (restored, in the group),
/// consuming nothing new. Returns the records restored.
async fn restore_only(settings: &Settings) -> u64 {
    let mut run = start(settings);
    run.until(Duration::from_secs(60), "ready", |s| {
        s.telemetry.health.not_ready().is_none()
    })
    .await;
    let restored = run.stats.restored_records.load(Ordering::Relaxed);
    let summary = run.stop().await;
    assert_eq!(
        summary.consumed, 0,
        "committed records are not consumed again"
    );
    restored
}

/// The changelog's records: key and value.
fn changelog(c: &Cluster) -> Vec<(String, Option<Vec<u8>>)> {
    read_partitions(
        &c.settings.kafka.brokers,
        &c.settings.kafka.changelog_topic(),
        1,
    )
    .into_iter()
    .map(|(k, v, _)| (k.unwrap_or_default(), v))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_store_is_restored_from_the_changelog_byte_for_byte() {
    let c = cluster("g-restore");
    let lines = stream(600, 3);
    let n = lines.len() as u64;
    produce(&c, lines).await;
    run_until(&c.settings, n).await;
    // Every start runs the retention sweep by the wall clock: the original is taken
    // after one too.
    restore_only(&c.settings).await;
    let original = state(&c.settings);
    assert!(original.len() > 500, "{} state keys", original.len());

    // A new machine: the same group, an empty store.
    let dir = tempfile::tempdir().unwrap();
    let fresh = on_new_store(&c.settings, &dir);
    let restored = restore_only(&fresh).await;
    assert!(
        restored as usize >= original.len(),
        "{restored} records applied"
    );
    assert_same_state(&state(&fresh), &original);

    // A restore cut by a crash (half of it applied, its mark still there) is done
    // again, not taken for a newer copy of the state.
    let applied = state(&fresh);
    {
        let mut store = Store::open(&fresh.runtime.store_dir).unwrap();
        for (k, _) in applied.iter().step_by(2) {
            store.remove(k.clone());
        }
        store.remove(CHANGELOG_SYNCED.bytes().to_vec());
        store
            .put(CHANGELOG_RESTORING.bytes().to_vec(), &true)
            .unwrap();
        store.commit().unwrap();
    }
    restore_only(&fresh).await;
    assert_same_state(&state(&fresh), &original);

    // It goes on from there: new events, nothing counted twice.
    let more: Vec<String> = (0..40)
        .map(|i| {
            common::event(
                &format!("after-restore-{i}"),
                "web",
                "login",
                "2026-11-20T10:00:00Z",
                serde_json::json!({"identifiers": {"email": format!("p{}@example.fr", i % 7)}}),
            )
        })
        .collect();
    let m = more.len() as u64;
    produce(&c, more).await;
    let mut run = start(&fresh);
    run.until(Duration::from_secs(60), "new records consumed", |s| {
        s.consumed.load(Ordering::Relaxed) >= m
    })
    .await;
    let summary = run.stop().await;
    assert_eq!(summary.consumed, m);
    assert_eq!(summary.engine.duplicates, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_cut_by_a_crash_is_not_applied_now_or_later() {
    let c = cluster("g-cut");
    // One whole batch (k1 = v1, then its end), then the start of another (k2, and k1
    // again) that a crash cut before its end.
    write_changelog(
        &c,
        &[
            ("r/zz/k1", "v1"),
            ("#batch", ""),
            ("r/zz/k2", "v2"),
            ("r/zz/k1", "v1-cut"),
        ],
    )
    .await;
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let fresh = on_new_store(&c.settings, &dir);
        let restored = restore_only(&fresh).await;
        let state = state(&fresh);
        let got: Vec<(&[u8], &[u8])> = state
            .iter()
            .filter(|(k, _)| k.starts_with(b"r/zz/"))
            .map(|(k, v)| (k.as_slice(), v.as_slice()))
            .collect();
        assert_eq!(got, vec![(b"r/zz/k1".as_slice(), b"v1".as_slice())]);
        assert!(restored >= 1);
    }
    // The cut batch's keys went out again as restored, with a batch end after them.
    let log = changelog(&c);
    let tail: Vec<&(String, Option<Vec<u8>>)> =
        log.iter().filter(|(k, _)| k != "#fence").skip(4).collect();
    assert!(
        tail.contains(&&("r/zz/k1".to_string(), Some(b"v1".to_vec())))
            && tail.contains(&&("r/zz/k2".to_string(), None))
            && tail.last().map(|(k, _)| k.as_str()) == Some("#batch"),
        "{tail:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_kept_without_changelog_is_copied_to_it() {
    let c = cluster("g-copy");
    let lines = stream(300, 5);
    let n = lines.len() as u64;
    produce(&c, lines).await;
    let mut off = c.settings.clone();
    off.kafka.changelog = false;
    run_until(&off, n).await;
    assert!(
        changelog(&c).is_empty(),
        "nothing goes to the changelog when it is off"
    );
    // Turned on: the store is the newer copy and goes to the changelog whole (then
    // what this start's retention sweep changes, as every start).
    restore_only(&c.settings).await;
    let original = state(&c.settings);
    let dir = tempfile::tempdir().unwrap();
    let fresh = on_new_store(&c.settings, &dir);
    restore_only(&fresh).await;
    assert_same_state(&state(&fresh), &original);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_changelog_of_a_batch_a_crash_may_have_cut_is_sent_again_on_start() {
    let c = cluster("g-again");
    let lines = stream(200, 6);
    let n = lines.len() as u64;
    produce(&c, lines).await;
    run_until(&c.settings, n).await;
    // What a crash after a batch's write and before its changelog leaves: an outbox
    // entry (no offsets: not known to be committed) with a key the batch wrote.
    let (key, value) = state(&c.settings)
        .into_iter()
        .find(|(k, _)| k.starts_with(b"r/cu/"))
        .unwrap();
    {
        let mut store = Store::open(&c.settings.runtime.store_dir).unwrap();
        let seq = 1_000u64.to_be_bytes();
        let none: Vec<unicus::kafka::runtime::WireRecord> = Vec::new();
        store.put([OUTBOX.bytes(), &seq].concat(), &none).unwrap();
        store
            .put([OUTBOX_KEYS.bytes(), &seq].concat(), &vec![key.clone()])
            .unwrap();
        store.commit().unwrap();
    }
    let before = changelog(&c).len();
    restore_only(&c.settings).await;
    let log = changelog(&c);
    let again = &log[before..];
    let as_key = String::from_utf8_lossy(&key).into_owned();
    assert!(
        again.contains(&(as_key, Some(value))) && again.last().unwrap().0 == "#batch",
        "{again:?}"
    );
    assert!(state(&c.settings).len() > 10, "the store is kept as it was");
}

/// A store with a batch whose changelog a crash may have cut (an outbox entry with
/// keys), while another writer wrote after its place: its own unsent writes cannot be
/// reconciled with the other writer's, so it is emptied and restored from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_overtaken_by_another_writer_is_emptied_and_restored() {
    let c = cluster("g-overtaken");
    let lines = stream(200, 8);
    let n = lines.len() as u64;
    produce(&c, lines).await;
    run_until(&c.settings, n).await;
    let original = state(&c.settings);
    let (key, value) = original
        .iter()
        .find(|(k, _)| k.starts_with(b"r/cu/"))
        .cloned()
        .unwrap();
    // The crash's batch: a key changed and a key added, neither on the changelog.
    {
        let mut store = Store::open(&c.settings.runtime.store_dir).unwrap();
        store.put_raw(key.clone(), b"unsent".to_vec());
        store.put_raw(b"r/zz/unsent".to_vec(), b"unsent".to_vec());
        let seq = 1_000u64.to_be_bytes();
        let none: Vec<unicus::kafka::runtime::WireRecord> = Vec::new();
        store.put([OUTBOX.bytes(), &seq].concat(), &none).unwrap();
        let keys = vec![key.clone(), b"r/zz/unsent".to_vec()];
        store
            .put([OUTBOX_KEYS.bytes(), &seq].concat(), &keys)
            .unwrap();
        store.commit().unwrap();
    }
    // Meanwhile another writer took over and wrote a batch.
    write_changelog(
        &c,
        &[
            ("#fence", "w:other"),
            ("r/zz/other", "theirs"),
            ("#batch", "w:other"),
        ],
    )
    .await;
    let restored = restore_only(&c.settings).await;
    assert!(
        restored as usize >= original.len(),
        "restored from the start: {restored} records applied"
    );
    let after = state(&c.settings);
    let get = |k: &[u8]| after.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
    assert_eq!(get(&key), Some(value), "the unsent change is gone");
    assert_eq!(get(b"r/zz/unsent"), None, "the unsent key is gone");
    assert_eq!(get(b"r/zz/other"), Some(b"theirs".to_vec()));
    assert_eq!(
        outbox_entries(&c.settings),
        0,
        "the unsent batch's entry is gone"
    );
}

/// A batch that a deposed writer still puts on the changelog after the next writer's
/// fence (it was cut off, then woke up) is never applied: a restore keeps the next
/// writer's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_writers_batch_after_the_next_writers_fence_is_never_applied() {
    let c = cluster("g-deposed");
    let lines = stream(100, 9);
    let n = lines.len() as u64;
    produce(&c, lines).await;
    run_until(&c.settings, n).await;
    write_changelog(
        &c,
        &[
            ("#fence", "w:next"),
            ("r/zz/zombie", "old"),
            ("r/zz/both", "old"),
            ("#batch", "w:deposed"),
            ("r/zz/both", "new"),
            ("#batch", "w:next"),
        ],
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let fresh = on_new_store(&c.settings, &dir);
    restore_only(&fresh).await;
    let got = state(&fresh);
    let get = |k: &[u8]| got.iter().find(|(x, _)| x == k).map(|(_, v)| v.clone());
    assert_eq!(
        get(b"r/zz/zombie"),
        None,
        "the deposed writer's batch is not applied"
    );
    assert_eq!(get(b"r/zz/both"), Some(b"new".to_vec()));
}

/// Writes records (key, value) to the changelog's partition, as a writer would.
async fn write_changelog(c: &Cluster, records: &[(&str, &str)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &c.settings.kafka.brokers)
        .create()
        .unwrap();
    let topic = c.settings.kafka.changelog_topic();
    for (key, value) in records {
        producer
            .send(
                FutureRecord::<str, str>::to(&topic)
                    .partition(0)
                    .key(key)
                    .payload(value),
                Duration::from_secs(10),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }
}

/// The outbox entries a stopped instance's store holds.
fn outbox_entries(settings: &Settings) -> usize {
    let store = Store::open(&settings.runtime.store_dir).unwrap();
    store.scan_prefix(OUTBOX_KEYS.bytes()).unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_store_consumes_nothing_until_the_changelog_is_read_back() {
    let mut c = cluster("g-wait");
    // A refused record fails after 1 s and is tried again; outputs stalled that long do
    // not turn readiness to "stalled" yet.
    c.settings
        .kafka
        .properties
        .insert("message.timeout.ms".into(), "1000".into());
    c.settings.runtime.stall_timeout_ms = 600_000;
    produce(&c, stream(50, 7)).await;
    // The broker refuses every write: the fence cannot be written, so the changelog
    // cannot be read back, and nothing may be consumed on the empty store meanwhile.
    c.mock.request_errors(
        RDKafkaApiKey::Produce,
        &vec![RDKafkaRespErr::RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS; 100_000],
    );
    let mut run = start(&c.settings);
    run.until(Duration::from_secs(60), "a refused write", |s| {
        s.delivery_retries.load(Ordering::Relaxed) > 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(run.stats.consumed.load(Ordering::Relaxed), 0);
    assert_eq!(
        run.stats.telemetry.health.not_ready(),
        Some("restoring the store from its changelog")
    );
    c.mock.clear_request_errors(RDKafkaApiKey::Produce);
    run.until(Duration::from_secs(60), "the events", |s| {
        s.consumed.load(Ordering::Relaxed) == 50
    })
    .await;
    assert!(run.stop().await.clean);
}
