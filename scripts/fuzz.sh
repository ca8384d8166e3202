#!/bin/sh
# The long fuzz run: 10,000 cases of the structure-aware mutation fuzzer (tests/vhdlib/fuzz)
# through info --json, map --json, check and convert --format raw; one JSON line per case
# in fuzz.jsonl, the figures per command on stdout, findings on stderr. Any case is
# reproduced with: python3 -m tests.vhdlib.fuzz.run --seed S --case N --keep DIR
# Usage: scripts/fuzz.sh [--seed S] [--cases N] [--jobs J] [--out FILE]
cd "$(dirname "$0")/.." || exit 2
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m tests.vhdlib.fuzz.run --seed 1 --cases 10000 --jobs 2 --out fuzz.jsonl "$@"
