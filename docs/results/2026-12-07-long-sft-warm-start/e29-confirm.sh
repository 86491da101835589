# E29 (2026-12-07, seventeenth sitting, AVX-512 box, bf16): the E26 / E27 checkpoints evaluated on
# held-out synthetic ids 128-255 (`--problems synthetic:128..256`), a set no result or choice so
# far was read on (every evaluation used ids 0-127; the learners' held-out metrics use ids 0-15).
# It confirms, or not, what E27 showed on ids 0-127. 8 samples per problem, paired over problems.
set -euo pipefail
cd /work/main
C=${C:-/work/bin27/coordinator}
P=(--problems synthetic:128..256 --samples 8 --overwrite)
$C eval --checkpoint runs/quality/checkpoints/step-000000 "${P[@]}" --out runs/e29/warm
$C eval --checkpoint runs/quality-sft/checkpoints/step-000000 "${P[@]}" --out runs/e29/sft92
$C eval --checkpoint runs/quality/checkpoints/step-000006 "${P[@]}" --out runs/e29/e26 --compare runs/e29/warm --compare runs/e29/sft92
for w in 0.25 0; do
  $C eval --checkpoint runs/e27-w$w/checkpoints/step-000006 "${P[@]}" --out runs/e29/w$w --compare runs/e29/e26 --compare runs/e29/warm
done
export PYTHONPATH=/tmp/pa
for a in e26 w0.25 w0; do
  for b in warm sft92 e26; do
    [ $a = $b ] && continue
    echo "== pass@1 $a - $b"; python3 scripts/paired_pass1.py runs/e29/$a/samples.parquet runs/e29/$b/samples.parquet
    echo "== interval hit@1 by kind $a - $b"; python3 scripts/paired_interval_by_kind.py runs/e29/$a/corruptions.parquet runs/e29/$b/corruptions.parquet
  done
done
python3 scripts/interval_picks.py runs/e29/{warm,e26,w0.25,w0}/corruptions.parquet
echo "E29 DONE $(date -u +%T)"
