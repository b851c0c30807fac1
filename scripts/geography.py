#!/usr/bin/env python3
"""Builds data/geography/fr-postal-codes.tsv from the npm package `codes-postaux`.

    python3 scripts/geography.py [PACKAGE_DIR]

PACKAGE_DIR is the unpacked package (its `codes-postaux.json`); without it, the package
is fetched with `npm pack codes-postaux@4.1.2` into a temporary directory. One line per
French postal code: the code, the département of most of its communes (INSEE code:
`01`..`95`, `2A`, `2B`, `971`..`976`), and its communes' names joined by `|`, sorted.
See data/geography/README.md for the source and its licence.
"""
import collections
import json
import pathlib
import subprocess
import sys
import tarfile
import tempfile

VERSION = "4.1.2"
OUT = pathlib.Path(__file__).resolve().parent.parent / "data/geography/fr-postal-codes.tsv"


def package_dir(argv):
    if len(argv) > 1:
        return pathlib.Path(argv[1])
    tmp = pathlib.Path(tempfile.mkdtemp())
    subprocess.run(["npm", "pack", f"codes-postaux@{VERSION}"], cwd=tmp, check=True,
                   stdout=subprocess.DEVNULL)
    with tarfile.open(tmp / f"codes-postaux-{VERSION}.tgz") as t:
        t.extractall(tmp, filter="data")
    return tmp / "package"


def departement(commune_code):
    return commune_code[:3] if commune_code.startswith("97") else commune_code[:2]


def main(argv):
    rows = json.loads((package_dir(argv) / "codes-postaux.json").read_text(encoding="utf-8"))
    by_code = collections.defaultdict(list)
    for r in rows:
        by_code[r["codePostal"]].append(r)
    lines = []
    for code in sorted(by_code):
        communes = by_code[code]
        deps = collections.Counter(departement(r["codeCommune"]) for r in communes)
        dep = sorted(deps.items(), key=lambda kv: (-kv[1], kv[0]))[0][0]
        names = sorted({r["nomCommune"] for r in communes})
        lines.append(f"{code}\t{dep}\t{'|'.join(names)}")
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"{len(lines)} postal codes written to {OUT}")


if __name__ == "__main__":
    main(sys.argv)
