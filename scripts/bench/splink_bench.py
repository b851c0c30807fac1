#!/usr/bin/env python3
"""Splink, the peer of `unicus bench accuracy --dataset ...`.

Reads the records unicus flattened from the events (one row per labelled event:
`unique_id`, person fields, identifiers normalised by unicus), trains a Splink model on
them in this run (DuckDB backend, dedupe_only: u by random sampling, m by EM, the
prior from deterministic rules), scores every blocked pair and writes the pairs whose
match probability is at least `--min-probability` as CSV
`unique_id_l,unique_id_r,match_probability`. unicus clusters and scores those pairs
itself, so that every column of the benchmark goes through one scorer.

Prints one JSON line on stdout: records, pairs written, seconds (training and
prediction). Usage:

    splink_bench.py --records records.csv --edges edges.csv [--seed 42]
"""
import argparse
import json
import logging
import sys
import time

import pandas as pd
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

PERSON = ["first_name", "last_name", "birth_date", "street", "postal_code", "city"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", required=True)
    parser.add_argument("--edges", required=True)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--min-probability", type=float, default=0.001)
    parser.add_argument("--max-pairs-u", type=float, default=5e6)
    args = parser.parse_args()

    started = time.perf_counter()
    df = pd.read_csv(args.records, dtype=str, keep_default_na=False)
    df = df.replace("", None)
    missing = [c for c in ["unique_id", *PERSON] if c not in df.columns]
    if missing:
        print(f"splink_bench: columns missing from {args.records}: {missing}", file=sys.stderr)
        return 2
    # Every other column is an identifier type (unicus writes the list: see
    # IDENTIFIER_COLUMNS in src/sim/compare.rs). One nobody filled in carries no
    # evidence (and EM cannot estimate it): leave it out.
    identifiers = [c for c in df.columns if c not in ["unique_id", *PERSON]]
    ids = [c for c in identifiers if df[c].notna().any()]

    comparisons = [
        cl.NameComparison("first_name").configure(term_frequency_adjustments=True),
        cl.NameComparison("last_name").configure(term_frequency_adjustments=True),
        cl.DamerauLevenshteinAtThresholds("birth_date", [1, 2]),
        cl.JaroWinklerAtThresholds("street", [0.9, 0.7]),
        cl.LevenshteinAtThresholds("postal_code", [1]),
        cl.JaroWinklerAtThresholds("city", [0.9]).configure(term_frequency_adjustments=True),
    ]
    comparisons += [cl.ExactMatch(c) for c in ids]

    blocking = [
        block_on("first_name", "last_name"),
        block_on("last_name", "birth_date"),
        block_on("first_name", "birth_date"),
        block_on("birth_date", "postal_code"),
        block_on("last_name", "postal_code"),
        block_on("street", "postal_code"),
        block_on("first_name", "postal_code"),
        block_on("first_name", "city"),
    ]
    blocking += [block_on(c) for c in ids]

    settings = SettingsCreator(
        link_type="dedupe_only",
        comparisons=comparisons,
        blocking_rules_to_generate_predictions=blocking,
        retain_matching_columns=False,
        retain_intermediate_calculation_columns=False,
    )
    db_api = DuckDBAPI()
    table = db_api.register(df)
    linker = Linker(table, settings, log_level=logging.WARNING)

    deterministic = [
        block_on("first_name", "last_name", "birth_date"),
        block_on("last_name", "birth_date", "postal_code"),
    ]
    deterministic += [block_on(c) for c in ids if c in ("email", "account_id", "loyalty_id")]
    linker.training.estimate_probability_two_random_records_match(deterministic, recall=0.7)
    linker.training.estimate_u_using_random_sampling(max_pairs=args.max_pairs_u, seed=args.seed)
    for rule in [
        block_on("first_name", "last_name"),
        block_on("birth_date"),
        block_on("postal_code"),
    ]:
        linker.training.estimate_parameters_using_expectation_maximisation(rule)
    trained = time.perf_counter()

    pairs = linker.inference.predict(threshold_match_probability=args.min_probability)
    out = pairs.as_pandas_dataframe()[["unique_id_l", "unique_id_r", "match_probability"]]
    out.to_csv(args.edges, index=False)
    done = time.perf_counter()
    print(
        json.dumps(
            {
                "records": int(len(df)),
                "pairs": int(len(out)),
                "identifier_columns": ids,
                "train_seconds": trained - started,
                "predict_seconds": done - trained,
                "seconds": done - started,
                "splink": __import__("splink").__version__,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
