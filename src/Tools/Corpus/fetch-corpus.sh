#!/usr/bin/env bash
# Fetches the public-domain training corpus from Debian packages and splits it into train and held-out parts.
#   King James Bible: bible-kjv-text + bible-kjv (the `bible` program prints it), one verse per line, references dropped.
#   Jargon File 4.4.7: jargon-text, one paragraph per line.
# Split rule (fixed): within each source, every 50th line (1-based line numbers 50, 100, ...) is held out.
# Output (default models/corpus/): kjv.txt, jargon.txt, train.txt, heldout.txt, SHA256SUMS (not committed), and
# heldout-subset.txt (committed: the fixed held-out text of tests and model cards).
# Needs apt-get (Debian's package registry) and dpkg; nothing is installed, the packages are only unpacked.
set -euo pipefail

out="${1:-$(cd "$(dirname "$0")/../../.." && pwd)/models/corpus}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$out"

echo "downloading bible-kjv-text, bible-kjv, jargon-text ..."
(cd "$work" && apt-get download -q bible-kjv-text bible-kjv jargon-text >/dev/null 2>&1) || {
  echo "error: apt-get download failed (is Debian's package registry reachable? try apt-get update)" >&2; exit 1; }
for deb in "$work"/*.deb; do dpkg -x "$deb" "$work/root"; done

echo "extracting the King James Bible ..."
"$work/root/usr/bin/bible" -f -p "$work/root/usr/lib" gen1:1-rev22:21 \
  | sed -E 's/^[1-3]?[A-Za-z]+[0-9]+:[0-9]+ //' > "$out/kjv.txt"

echo "extracting the Jargon File ..."
# Paragraphs (blank-line separated) become single lines; box-drawing rules and empty paragraphs are dropped.
zcat "$work/root/usr/share/doc/jargon-text/jargon.txt.gz" \
  | sed -E 's/^[[:space:]]+//; s/[[:space:]]+$//' \
  | grep -v -E '^[═─━_=-]+$' \
  | awk 'BEGIN { p = "" } /^$/ { if (p != "") print p; p = ""; next } { p = (p == "" ? $0 : p " " $0) } END { if (p != "") print p }' \
  > "$out/jargon.txt"

echo "splitting (every 50th line of each source is held out) ..."
: > "$out/train.txt"
: > "$out/heldout.txt"
for src in kjv jargon; do
  awk -v train="$out/train.txt" -v held="$out/heldout.txt" '{ if (NR % 50 == 0) print >> held; else print >> train }' "$out/$src.txt"
done

# The fixed held-out subset tests and model cards use (~16k tokens with the 8k-token BPE): held-out lines 1-3 of every 5.
awk 'NR % 5 >= 1 && NR % 5 <= 3' "$out/heldout.txt" > "$out/heldout-subset.txt"

(cd "$out" && sha256sum kjv.txt jargon.txt train.txt heldout.txt heldout-subset.txt > SHA256SUMS)
for f in kjv jargon train heldout heldout-subset; do
  printf '%-8s %8d lines %9d bytes\n' "$f" "$(wc -l < "$out/$f.txt")" "$(wc -c < "$out/$f.txt")"
done
echo "wrote $out"
