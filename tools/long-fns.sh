#!/usr/bin/env bash
# Functions longer than N lines (default 100) in the given Rust files or directories (default
# src/), outside `#[cfg(test)]` modules: from the `fn` line to the closing brace at the same
# indent. Prints "lines path:line name", longest first. Usage: tools/long-fns.sh [-n N] [PATH...]
set -euo pipefail
max=100
if [ "${1:-}" = -n ]; then max=$2; shift 2; fi
find "${@:-src}" -name '*.rs' -print0 | xargs -0 awk -v max="$max" '
    FNR == 1 { test_indent = -1; n = 0 }
    {
        match($0, /^ */); ind = RLENGTH
        if (test_indent >= 0) { if (ind <= test_indent && $0 ~ /^ *}/) test_indent = -1; next }
        if (prev ~ /^ *#\[cfg\(test\)\]/ && $0 ~ /^ *(pub )?mod [a-z_]+ *\{/) { test_indent = ind; prev = $0; next }
        prev = $0
        if ($0 ~ /^ *(pub(\([a-z]+\))? )?(const )?(async )?(unsafe )?(extern "C" )?fn [A-Za-z_0-9]+/ && $0 !~ /;[ ]*$/) {
            name = $0; sub(/^ *(pub(\([a-z]+\))? )?(const )?(async )?(unsafe )?(extern "C" )?fn /, "", name); sub(/[^A-Za-z_0-9].*/, "", name)
            n++; st_ind[n] = ind; st_line[n] = FNR; st_name[n] = name
            if ($0 ~ /\{.*\}[ ]*$/) n--   # one-line fn
            next
        }
        if (n > 0 && ind == st_ind[n] && $0 ~ /^ *}/) {
            len = FNR - st_line[n] + 1
            if (len > max) printf "%d %s:%d %s\n", len, FILENAME, st_line[n], st_name[n]
            n--
        }
    }' | sort -rn
