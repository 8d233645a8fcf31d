#!/usr/bin/env bash
# One lent GPU's benchmarks in one command (the device tool: one H200, 16 cores, its own Python with PyTorch and
# Lightning, no network). Before the call, here: the wheels LightningCLI needs beyond that image in .whl/
# (jsonargparse, docstring_parser, typeshed_client, importlib_resources) and MNIST's raw files gzipped in
# .gpu_data/MNIST/raw/, both git-ignored and carried (`bash benchmarks/gpu_prepare.sh` makes them). Everything
# ends by itself inside LIMIT seconds, then the results and logs are packed into $OUT/results.tgz: logs/ (with a
# copy of benchmarks/work/shared_pretraining/ without its checkpoints) and benchmarks/results/, not benchmarks/work/.
# So a job that its timeout killed cannot go on from its resume.ckpt in a later device session: it starts over.
# (Its checkpoints cannot come back: the device tool returns at most 8 files of 16 MiB, and one MNIST autoencoder
# checkpoint with its optimizer's state is about 27 MB with SGD's momentum, 40 MB with Adam's.)
#   bash benchmarks/gpu_session.sh [LIMIT=540] [JOB ...]
# JOBs (default: all): kmeans (alone first), then side by side until the deadline: aecm (AE-CM MNIST, the paper's
# 1000 epochs), dcfae (DCFAE MNIST, the config's 50 + 10 epochs), idec (IDEC MNIST seeds 3-4 or those in
# $IDEC_SEEDS, recorded in shared_pretraining_mnist_gpu2: shared_pretraining_mnist_gpu, of 2026-12-01, predates the
# configs' settings that --merge compares, so it refuses a merge and is kept as it is), deckeras (IDEC and
# DEC MNIST from DEC-keras' pretraining recipe, seeds 0-2 or those in $DECKERAS_SEEDS, one process each; IDEC at its
# config's gamma 0.1 / 5.1^2, the paper's balance on [0, 1] pixels, and at 0.1, the config's until 2026-12-04),
# decpaper (the same from the DEC paper's stacked autoencoder, SAE: 300,000 steps a seed, seeds 0-2 or
# $DECPAPER_SEEDS), bf16 (every digits config in bf16-mixed). A short session is better given to one or two of
# them: deckeras' 300 pretraining epochs alone took about 8 min with three seeds side by side on the H200
# (2026-12-04), no time left for clustering.
set -u
LIMIT=${1:-540}
shift $(( $# > 0 ? 1 : 0 ))
JOBS=" ${*:-kmeans aecm dcfae idec deckeras decpaper bf16} "
want() { [[ "$JOBS" == *" $1 "* ]]; }
START=$(date +%s)
left() { echo $((LIMIT - ($(date +%s) - START))); }
mkdir -p logs
python3 -m pip install -q --no-index --no-deps --no-compile .whl/*.whl || exit 1
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . || {  # else a plain install, and the
  python3 -m pip install -q --no-index --no-deps --no-build-isolation . || exit 1  # mapped packages linked into
  ln -s ../methods dcl/methods; ln -s ../datamodules dcl/datamodules; }           # the dcl/ that cwd shadows
for f in .gpu_data/MNIST/raw/*.gz; do gunzip -kf "$f"; done
export DCL_DATA=$PWD/.gpu_data WANDB_MODE=offline PYTHONUNBUFFERED=1 OMP_NUM_THREADS=2
nvidia-smi -L; python3 -c "import dcl.cli, torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)" || exit 1
(nvidia-smi dmon -s um -d 15 > logs/dmon.log 2>&1 &)

# 1. k-means against scikit-learn (16 threads), alone on the machine so that neither timing is disturbed
if want kmeans; then
  OMP_NUM_THREADS=16 timeout 150 python3 benchmarks/kmeans_vs_sklearn.py --device cuda --threads 16 --repeats 3 \
    > logs/kmeans.log 2>&1
  timeout 60 python3 benchmarks/kmeans_profile.py > logs/kmeans_profile.log 2>&1  # where its time goes
  echo "kmeans done, $(left) s left"
fi

# 2. side by side until the deadline; each stops itself in time (a wall-time limit or a timeout)
T=$(( $(left) - 25 ))
want aecm && { timeout $T python3 benchmarks/aecm.py --data mnist --epochs 1000 --seeds 0 --accelerator gpu \
  --threads 2 --max-minutes $(python3 -c "print(round(($T - 75) / 60, 2))") --curve-every 50 --tag gpu \
  > logs/aecm.log 2>&1 & }
want dcfae && { timeout $T python3 benchmarks/dcfae.py --data mnist --variants fae --channels 32 64 128 \
  --fae-epochs 50 --dense-epochs 10 --similarity-batches 4 --threads 2 --seed 0 --tag gpu \
  --phase1-minutes $(python3 -c "print(round(($T - 230) / 60, 2))") > logs/dcfae.log 2>&1 & }
if want idec; then
  for s in ${IDEC_SEEDS:-3 4}; do
    timeout $T python3 benchmarks/shared_pretraining.py mnist --seeds $s --methods idec --merge --tag gpu2 \
      > logs/idec_s$s.log 2>&1 &
  done
fi
if want deckeras; then
  for s in ${DECKERAS_SEEDS:-0 1 2}; do
    timeout $T python3 benchmarks/shared_pretraining.py mnist --recipe dec-keras --seeds $s --methods idec \
      idec:gamma=0.1 dec --merge --tag gpu > logs/deckeras_s$s.log 2>&1 &
  done
fi
if want decpaper; then
  for s in ${DECPAPER_SEEDS:-0 1 2}; do
    timeout $T python3 benchmarks/shared_pretraining.py mnist --recipe dec-paper --seeds $s --methods dec idec --merge \
      --tag gpu > logs/decpaper_s$s.log 2>&1 &
  done
fi
want bf16 && { timeout $T python3 benchmarks/gpu_check.py --precision bf16-mixed \
  --set aecm/digits:trainer.max_epochs=101 --timeout 120 > logs/gpu_check.log 2>&1 & }
wait
echo "all done, $(left) s left"
cp -r benchmarks/work/shared_pretraining logs/ 2>/dev/null
find logs -name "*.ckpt" -delete
tar czf "$OUT/results.tgz" logs benchmarks/results
