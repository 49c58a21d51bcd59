#!/usr/bin/env bash
# Runs every sh block of README.md in order, in one shell, as a newcomer
# would: from the repository root, where the README's "Try every example"
# block installs the binary and moves to a fresh /tmp/weightops-try. A
# block right after a line "<!-- ci: skip (reason) -->" is skipped. A
# failing command fails the run, naming the block.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/local/go/bin:$PATH"
if ! command -v jq >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null) \
    || { echo "readme: jq is needed by the README's examples and could not be installed"; exit 1; }
fi
rm -rf /tmp/weightops-try
script=$(mktemp)
trap 'rm -f "$script"' EXIT
awk '
  /^<!-- ci: skip/ { skip = 1; next }
  /^```sh$/ { inblock = 1; n++; line = NR
              if (skip) { printf "echo \"== README block %d (line %d): skipped\"\n", n, line }
              else { printf "echo \"== README block %d (line %d)\"\n", n, line; printf "readme_block=%d readme_line=%d\n", n, line }
              next }
  /^```$/ && inblock { inblock = 0; skip = 0; next }
  inblock && !skip { print; next }
  !inblock && NF { skip = skip && /^<!--/ }
' README.md > "$script"
# No placeholder arguments: every example must run as written.
if grep -nE '(^|[[:space:]])\.\.\.([[:space:]]|$)' "$script"; then
  echo "readme: an example has a literal '...' argument"
  exit 1
fi
bash -euo pipefail -c 'trap '\''echo "readme: block $readme_block (README line $readme_line) failed" >&2'\'' ERR; source "$0"' "$script"
echo "readme: every example ran"
