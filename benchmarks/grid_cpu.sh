#!/bin/bash
# The README's method x data set table on a CPU machine: every method on every local data set, one seed, an equal
# reduced budget per data set (P "pretraining" / first-phase epochs + C clustering epochs for every method):
# Digits and COIL-20 50 + 50, USPS 20 + 20, MNIST 2 + 2, except DCFAE (its residual GAN phase at batch 64 is the
# slowest: 5 + 5 on USPS, 1 + 1 on MNIST). On a GPU machine run results_table.py without these overrides (the
# configs' budgets). The methods are named (METHODS): results_table.py's default, every folder of configs/, would add
# SAE (the DEC paper's pretraining, not a method of the table) at its config's full budget.
#   bash benchmarks/grid_cpu.sh [data sets...]        (default: digits coil20 usps mnist; about 2 h on 1 core)
# Python: $PYTHON, else the checkout's .venv/bin/python.
set -e
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
METHODS="ae_kmeans dec idec dekm cm aecm dpgmm dcfae"  # every method of configs/ but sae
budget() {  # method data P C -> the --set flags giving that method P + C epochs
  local m=$1 d=$2 p=$3 c=$4 t=$(($3 + $4))
  case $m in
    ae_kmeans) echo "--set $m/$d:trainer.max_epochs=$t" ;;
    cm|aecm) echo "--set $m/$d:trainer.max_epochs=$((t + 1))" ;;  # + the final weight-averaging epoch
    dcfae) echo "--set $m/$d:model.init_args.fae_epochs=$p --set $m/$d:trainer.max_epochs=$t" ;;
    *) echo "--set $m/$d:model.init_args.pretrain_epochs=$p --set $m/$d:trainer.max_epochs=$t" ;;
  esac
}
for d in ${@:-digits coil20 usps mnist}; do
  case $d in mnist) p=2; c=2; q=1 ;; usps) p=20; c=20; q=5 ;; *) p=50; c=50; q=50 ;; esac
  sets=""
  for m in $METHODS; do [ $m = dcfae ] || sets="$sets $(budget $m $d $p $c)"; done
  sets="$sets $(budget dcfae $d $q $q)"
  $PY benchmarks/results_table.py --methods $METHODS --datasets $d --seeds 1 --merge --timeout 2400 \
    --set trainer.check_val_every_n_epoch=100000 $sets
done
