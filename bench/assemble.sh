#!/usr/bin/env bash
# Puts BENCHMARKS.md together from the sections the bench scripts write.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
{
    echo "# Benchmarks"
    echo
    echo "Each section is written by the script it names, side by side with peers on this project's"
    echo "machine (2 cores). Keep them current when behaviour that affects them changes."
    for f in "$top"/bench/results-*.md; do
        [[ -f $f ]] || continue
        echo
        cat "$f"
    done
} > "$top/BENCHMARKS.md"
