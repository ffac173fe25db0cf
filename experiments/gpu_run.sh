#!/usr/bin/env bash
# Every GPU measurement of the project in one deadline-bounded command (several processes share the GPU):
#   nowcast   one nowcast on CUDA: benchmarks/nowcast_cuda.py, 3.4M and 30M GPT-2
#   history   where NiNoAdam's history lives: benchmarks/history_placement.py (capture and read times, GPU memory of
#             the parameters' device against pinned CPU, float32 and bfloat16) for 1M, 10M and 100M GPTs, into
#             history_placement.md (about half a minute; not in the default PHASES)
#   fused     the Triton message-sum kernel: its tests on CUDA, experiments/fused_check.py, and the nowcast with
#             the native and triton backends
#   baselines the benchmark's baselines: FM-32 with Adam, Linefit+, WNN+, NiNo; FM-16 and lm with Adam and NiNo;
#             3 seeds each, in the background until the end
#   stacking  how much faster FM-16 convnets collect stacked (experiments/collect_stacked.py, about a minute,
#             before the collection; deadlines stay where they are)
#   collect   trajectories for meta-training, added to any carried in .gpu/trajectories; STACK=N trains
#             Fashion-MNIST runs of one architecture N at a time as one stacked model (`--stack`);
#             STACK=auto: the largest of 8 and 32 that the stacking phase measured at least size/4 times
#             faster than single runs (so that a stack takes at most 4x a single run's time), else 1;
#             SCHED_RUNS=N also collects N runs under warmup + cosine beside it (SCHED_WORKERS processes, 4), their
#             peak rates SCHED_LR_SCALE (2) times the zoo's draws, on a zoo seed of their own
#   reference Adam and the official NiNo on FM-16, FM-32 and lm (3 seeds), once the collection has ended, into
#             the same results as `own`, so that the three come from one run
#   metatrain meta-training on all trajectories, and on seeded subsets (the data-scaling curve)
#   own       the new weights in the benchmark (FM-16, FM-32, lm x 3 seeds), held-out meta-loss
#   compare   the bundled default weights, Adam and the official NiNo side by side in one benchmark run (FM-16,
#             FM-32, lm x 3 seeds)
#   cosine    the benchmark under 5% warmup + cosine decay (into bench_cosine/): FM-32's Adam peak learning rate
#             swept first (seed 1000; FM-16's 2.4e-2 and lm's 6e-3 come from the CPU sweep), then Adam, the
#             bundled weights with and without schedule-aware jumps and the official NiNo, 3 seeds on each task
#             (not in the default PHASES)
# PHASES picks them (default: all). Each phase has a deadline (seconds after the start) and keeps what finished;
# results are packed into $OUT after each phase.
#
# Needs (in .gpu/, ignored by git): fashion-mnist/*.gz, upstream-checkpoints/nino_no_posw.pt (+ nino_mlp.pt for
# baselines; .gpu is the NINO_REFERENCE_DIR of the run), kjv.txt (`bible -f gen1:1-rev22:21`), optionally
# trajectories/ (added to the training data) and unseen/ (trajectories only evaluated: the CPU-recorded convnets
# 24x32x24 s1007, 8x48x16 s1011 and four of FM-16's 16x32x32, s2001-s2005).
# Dry run on the CPU: DEVICE=cpu SCALE=tiny OUT=/tmp/gpu_dry WORK=/tmp/gpu_dry_work experiments/gpu_run.sh
# Examples: PHASES="stacking collect reference metatrain own" SCALE=xl STACK=auto (about 9.5 minutes: stacked
# collection if it measures faster, variants of new weights, the best on unseen convnets benchmarked beside Adam
# and the official checkpoint); PHASES=compare SCALE=long (about 4 minutes: Adam, official, default in one run)
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
export PYTHONPATH=$ROOT/src:$ROOT/benchmarks PYTHONUNBUFFERED=1
export NINO_FASHION_MNIST=$ROOT/.gpu/fashion-mnist NINO_REFERENCE_DIR=$ROOT/.gpu
export NINO_KJV_TEXT=$ROOT/.gpu/kjv.txt
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-/tmp/gpu_out}
W=${WORK:-/tmp/gpu_work}
PHASES=${PHASES:-nowcast baselines collect metatrain own}
mkdir -p "$OUT" "$W/logs" "$W/trajectories"
START=$(date +%s)
at() { echo $(( $(date +%s) - START )); }
left() { local s=$(( $1 - $(at) )); echo $(( s > 1 ? s : 1 )); }  # seconds to deadline $1 (after start)
log() { echo "[$(at)s] $*" | tee -a "$W/logs/run.log"; }
has() { [[ " $PHASES " == *" $1 "* ]]; }
collected() {  # waits for the collection to end (its deadline), then stops whatever it left on the GPU
  wait $COLLECT
  log "collect rc=$? trajectories=$(ls "$W/trajectories" | grep -vc '^\.')"
  kill -9 -- -$COLLECT ${SCHEDULED:+-$SCHEDULED} 2> /dev/null
}
pack() {  # everything small into $OUT/results.tar.gz (weights, results, logs, trajectory metadata)
  local metas; metas=$(cd "$W" && find trajectories -name meta.json)
  tar -C "$W" --exclude=checkpoint.pt -czf "$OUT/results.tar.gz.tmp" logs $(cd "$W" && ls -d bench metatrain* \
    bench_cosine nowcast_cuda.json nowcast_fused.json history_placement.* 2> /dev/null) $metas \
    && mv "$OUT/results.tar.gz.tmp" "$OUT/results.tar.gz"
}

case "${SCALE:-full}" in
  tiny)  # the dry run: a few short runs, same code paths
    STEPS=60 EVAL=20 PERIOD=20 RUNS=6 CSTEPS=80 SAVE=4 SPACING=4 ITS=6 BATCH=2 WPT=2 WORKERS=2 SUBSETS="2"
    T_NOW=1 T_COLLECT=200 T_TRAIN=300 T_END=420 EXTRA="--train-examples 512 --test-examples 200"
    NOWCAST_SIZES="1M" T_FUSED=60 ;;
  short)  # what fits in ~4 minutes: collect, meta-train, benchmark the result
    STEPS=10000 EVAL=25 PERIOD=1000 RUNS=240 CSTEPS=10000 SAVE=200 SPACING=200 ITS=1000 BATCH=8 WPT=1 WORKERS=12
    SUBSETS="8 16" T_NOW=0 T_COLLECT=${T_COLLECT:-85} T_TRAIN=${T_TRAIN:-165} T_END=${T_END:-240} EXTRA=""
    NOWCAST_SIZES="3.4M" T_FUSED=0 ;;
  long)  # what made the v0.2 weights: 92 trajectories, 3000 iterations of 8 single windows (141 s, 21 it/s),
    # subsets for the data-scaling curve, then the benchmark
    STEPS=10000 EVAL=25 PERIOD=1000 RUNS=400 CSTEPS=10000 SAVE=200 SPACING=200 ITS=3000 BATCH=8 WPT=1 WORKERS=14
    SUBSETS="8 32" T_NOW=0 T_FUSED=${T_FUSED:-60} T_COLLECT=300 T_TRAIN=470 T_END=565 EXTRA=""
    NOWCAST_SIZES="3.4M" ;;
  xl)  # v0.2 was under-trained (training loss 0.39 -> 0.37): the official batch, 4 trajectories x 4 windows (717
    # tensor operations to sample instead of 2689 for 16 single windows); 40% of the new convnets are FM-16's own
    # architecture, as in the official data (FM-32's is not favoured); states every 40 steps, so 5x the window
    # starts per trajectory; a new zoo seed, so that a run continued from the bundled weights sees trajectories
    # v0.2 did not. Meta-training starts at WATCH_AT, beside the collection, and takes its trajectories as they
    # come (--watch), its learning rate annealed over the time left (TIMED: --seconds), so it trains about 300 s
    # instead of 175. VARIANTS meta-train side by side (NAME:INIT:LR, INIT empty for a seeded random start); the
    # one with the lowest masked L1 on .gpu/unseen (the bundled default competing) goes into the benchmark,
    # beside Adam and the official checkpoint run in the same command (once the collection has ended).
    # Measured on an H200 (collection and meta-training one after the other): 60 trajectories by
    # 210 s with 14 processes; loading them takes a meta-training process about 35 s; 17-20 iterations/s each with
    # 3 side by side and the reference benchmark running; up to 50 GB of GPU memory each (16 windows of the
    # larger GPTs): a third ran out of memory. A short check: continued from the bundled weights at lr 3e-3 on
    # 12 trajectories, 1600 iterations made them worse on .gpu/unseen (0.268 vs 0.252), hence lr 1e-3 here.
    # Under 100 GB of GPU memory (an H100) only the first variant runs.
    STEPS=10000 EVAL=25 PERIOD=1000 RUNS=400 CSTEPS=10000 SAVE=${SAVE:-40} SPACING=200 ITS=${ITS:-100000}
    BATCH=16 WPT=4 WORKERS=12 SUBSETS=${SUBSETS-} T_NOW=0 T_FUSED=0 T_COLLECT=${T_COLLECT:-330}
    WATCH_AT=${WATCH_AT-100} TIMED=1 T_TRAIN=${T_TRAIN:-455} T_END=${T_END:-582} EXTRA="" FM16_SHARE=0.4
    ZOO_SEED=${ZOO_SEED:-3} VARIANTS=${VARIANTS-cont:default:1e-3 scratch::3e-3} NOWCAST_SIZES="3.4M"
    SCHED_RUNS=${SCHED_RUNS:-40} ;;  # users train under schedules: a tenth of the data at decaying rates
  *)
    STEPS=10000 EVAL=25 PERIOD=1000 RUNS=240 CSTEPS=10000 SAVE=200 SPACING=200 ITS=4000 BATCH=8 WPT=1 WORKERS=10
    SUBSETS="8 24" T_NOW=100 T_COLLECT=290 T_TRAIN=430 T_END=560 EXTRA=""
    NOWCAST_SIZES="3.4M 30M" T_FUSED=160 ;;
esac
BENCH=(--steps $STEPS --eval-every $EVAL --period $PERIOD --seeds 1000 2000 3000 --out "$W/bench" --device $DEVICE
       --no-progress $EXTRA)
# carried trajectories (states every 200 steps) do not fit the tiny dry run's spacing
[ -d .gpu/trajectories ] && [ "${SCALE:-full}" != tiny ] && cp -r .gpu/trajectories/. "$W/trajectories/"

device=$($PY -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")')
log "start on $device, phases: $PHASES"
gpu_mib=$($PY -c 'import torch; print(torch.cuda.get_device_properties(0).total_memory >> 20
                if torch.cuda.is_available() else 0)')
if [ "$DEVICE" = cuda ] && [ "$gpu_mib" -lt 100000 ] && [ -n "${VARIANTS:-}" ]; then
  VARIANTS=${VARIANTS%% *}  # two meta-training runs of 16 windows side by side need more memory
  log "$gpu_mib MiB of GPU memory: one variant, $VARIANTS"
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$W/logs/nvidia-smi.txt" 2>&1
# GPU memory and load every 5 s, to size later runs (meta-training side by side can run out of memory)
nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv -l 5 > "$W/logs/gpu_usage.csv" 2> /dev/null &
GPU_LOG=$!

# Many small processes share the GPU: with MPS their kernels run side by side instead of taking turns.
if [ "$DEVICE" = cuda ] && command -v nvidia-cuda-mps-control > /dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps_pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps_log
  mkdir -p $CUDA_MPS_PIPE_DIRECTORY $CUDA_MPS_LOG_DIRECTORY
  if nvidia-cuda-mps-control -d && timeout 40 $PY -c "import torch; torch.ones(1, device='cuda').sum().item()"; then
    log "MPS on"
  else
    echo quit | nvidia-cuda-mps-control 2> /dev/null
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    log "MPS off"
  fi
fi

if has nowcast && [ "$DEVICE" = cuda ]; then  # alone on the GPU, so that its timings are clean
  timeout "$(left $T_NOW)" $PY benchmarks/nowcast_cuda.py --sizes $NOWCAST_SIZES --chunks 65536 all \
    --edge-states float32 bfloat16 recompute --checkpoint .gpu/upstream-checkpoints/nino_no_posw.pt \
    --json "$W/nowcast_cuda.json" > "$W/logs/nowcast_cuda.log" 2>&1
  log "nowcast_cuda rc=$?"
fi

if has history; then  # alone on the GPU, so that its timings are clean (on a CPU dry run: the smallest size)
  timeout 180 $PY benchmarks/history_placement.py --device $DEVICE --repeats 20 \
    --sizes $([ "$DEVICE" = cuda ] && echo "${HISTORY_SIZES:-1M 10M 100M}" || echo 1M) \
    --json "$W/history_placement.json" > "$W/history_placement.md" 2> "$W/logs/history_placement.log"
  log "history_placement rc=$?"
fi

BACKGROUND=()
if has fused; then  # timings alone on the GPU; each step runs even if an earlier one failed
  {
    timeout "$(left $T_FUSED)" $PY experiments/fused_check.py --device $DEVICE
    echo "fused_check rc=$?"
    timeout "$(left $T_FUSED)" $PY benchmarks/nowcast_cuda.py --sizes $NOWCAST_SIZES --chunks 65536 all \
      --edge-states float32 --backends native triton --cpu-check \
      --checkpoint .gpu/upstream-checkpoints/nino_no_posw.pt \
      --json "$W/nowcast_fused.json"
    echo "nowcast_cuda (backends) rc=$?"
  } > "$W/logs/fused.log" 2>&1
  log "fused done: $(grep -h 'rc=' "$W/logs/fused.log" | tr '\n' ' ')"
  # the kernel's tests need no clean timings: beside the collection
  timeout 240 $PY -m pytest -q -rs -p no:cacheprovider tests/nowcast/test_fused.py > "$W/logs/fused_tests.log" 2>&1 &
  BACKGROUND+=($!)
fi

if has baselines; then
  timeout "$(left $T_END)" $PY -m nino_optim.cli bench --task fm32 --methods adam,linefit+,wnn+,nino --workers 4 \
    "${BENCH[@]}" > "$W/logs/bench_fm32.log" 2>&1 &
  BACKGROUND+=($!)
  log "fm32 benchmark started"
fi

if has stacking; then  # alone on the GPU, so that its timings are clean
  timeout ${STACKING_S:-75} $PY experiments/collect_stacked.py --members 1 8 32 --steps $(( CSTEPS / 25 )) \
    --device $DEVICE > "$W/logs/collect_stacked.log" 2>&1
  log "collect_stacked rc=$?: $(tail -n 3 "$W/logs/collect_stacked.log" | tr '\n' ' ')"
fi
if [ "${STACK:-1}" = auto ]; then
  # the largest stack whose speedup over a single run is at least a quarter of its size: a stack then takes at
  # most 4x a single run's time (about 1-2 minutes on a GPU), so it ends well before the collection's deadline,
  # which would lose all of it; 1 if neither pays
  STACK=$(awk '$2 == "stacked:" {x = $(NF-1); sub("x", "", x); if ($1 > 1 && x + 0 >= $1 / 4) best = $1}
               END {print best ? best : 1}' "$W/logs/collect_stacked.log" 2> /dev/null || echo 1)
  log "collecting with --stack $STACK ($(grep -h stacked: "$W/logs/collect_stacked.log" 2> /dev/null | tr -s ' ' \
    | tr '\n' ';'))"
fi

if has collect; then  # its own process group, so that the deadline also stops its workers (they hold the GPU)
  setsid timeout "$(left $T_COLLECT)" $PY -m nino_optim.cli collect --runs $RUNS --steps $CSTEPS \
    --save-every $SAVE --fm16-share ${FM16_SHARE:-0} --zoo-seed ${ZOO_SEED:-0} --workers $WORKERS \
    --stack ${STACK:-1} --device $DEVICE --out "$W/trajectories" > "$W/logs/collect.log" 2>&1 &
  COLLECT=$!
  if [ "${SCHED_RUNS:-0}" -gt 0 ]; then  # warmup + cosine runs at the schedules' tuned peaks (never stacked)
    setsid timeout "$(left $T_COLLECT)" $PY -m nino_optim.cli collect --runs $SCHED_RUNS --steps $CSTEPS \
      --save-every $SAVE --fm16-share ${FM16_SHARE:-0} --zoo-seed $(( ${ZOO_SEED:-0} + 100 )) --schedule cosine \
      --lr-scale ${SCHED_LR_SCALE:-2} --workers ${SCHED_WORKERS:-4} --device $DEVICE --out "$W/trajectories" \
      > "$W/logs/collect_scheduled.log" 2>&1 &
    SCHEDULED=$!
  fi
  if [ -n "${WATCH_AT:-}" ] && has metatrain; then  # meta-training starts before the collection ends (--watch)
    sleep "$(left $WATCH_AT)"
    log "meta-training starts beside the collection: $(ls "$W/trajectories" | grep -vc '^\.') trajectories so far"
  else
    collected
  fi
fi

if has baselines; then
  timeout "$(left $T_END)" $PY -m nino_optim.cli bench --task fm16 lm --methods adam,nino --workers 4 \
    "${BENCH[@]}" > "$W/logs/bench_fm16_lm.log" 2>&1 &
  BACKGROUND+=($!)
fi

if has reference; then  # Adam and the official checkpoint, once a collection has freed the CPU cores (beside
  # meta-training, whose processes need one core each); the new weights join them later
  {
    while [ -n "${COLLECT:-}" ] && kill -0 $COLLECT 2> /dev/null; do sleep 2; done
    log "reference benchmark starts"
    timeout "$(left $T_END)" $PY -m nino_optim.cli bench --task fm16 fm32 lm --methods adam,nino --workers 12 \
      "${BENCH[@]}"
  } > "$W/logs/bench_reference.log" 2>&1 &
  BACKGROUND+=($!)
fi

if has metatrain; then
  budget=$(( $(left $T_TRAIN) - 20 ))
  # TIMED: the learning rate anneals over the time left (less a margin for loading), however fast the runs go
  TRAIN=(--data "$W/trajectories" --spacing $SPACING --iterations $ITS --batch-size $BATCH
         --windows-per-trajectory $WPT --eval-every 100 --seed 0 --device $DEVICE
         ${TIMED:+--seconds $(( budget > 80 ? budget - 40 : budget / 2 ))})
  export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True  # side by side: less memory held but unused
  PIDS=()
  for n in ${SUBSETS:-}; do
    timeout "$(left $T_TRAIN)" $PY -m nino_optim.cli metatrain "${TRAIN[@]}" --max-train $n \
      --out "$W/metatrain_n$n" --stop-after $budget > "$W/logs/metatrain_n$n.log" 2>&1 &
    PIDS+=($!)
  done
  if [ -n "${VARIANTS:-}" ]; then  # side by side, each NAME:INIT:LR into metatrain_NAME
    for v in $VARIANTS; do
      IFS=: read -r name init lr <<< "$v"
      timeout "$(left $T_TRAIN)" $PY -m nino_optim.cli metatrain "${TRAIN[@]}" --out "$W/metatrain_$name" \
        ${init:+--init "$init"} --lr $lr ${WATCH_AT:+--watch} --stop-after $budget \
        > "$W/logs/metatrain_$name.log" 2>&1 &
      PIDS+=($!)
    done
  else
    # INIT=default continues from the bundled weights instead of a random start (the subsets stay from scratch:
    # they measure how quality grows with data)
    timeout "$(left $T_TRAIN)" $PY -m nino_optim.cli metatrain "${TRAIN[@]}" --out "$W/metatrain" \
      ${INIT:+--init "$INIT"} ${WATCH_AT:+--watch} --stop-after $budget > "$W/logs/metatrain.log" 2>&1
    log "metatrain rc=$?"
  fi
  for pid in "${PIDS[@]}"; do wait $pid; log "metatrain process rc=$?"; done
  [ -n "${WATCH_AT:-}" ] && has collect && collected
  pack
fi

if has own; then
  weights=()  # every run's weights (with VARIANTS, metatrain/ becomes a link to the chosen one below)
  for d in "$W"/metatrain*/weights; do [ -f "$d/model.safetensors" ] && weights+=("$d"); done
  if [ -d .gpu/unseen ] && [ ${#weights[@]} -gt 0 ]; then  # convnets recorded on the CPU that no weights saw
    timeout "$(left $T_END)" $PY experiments/heldout_metaloss.py --data .gpu/unseen --val-every 1 --windows 64 \
      --spacing 200 --device $DEVICE default "${weights[@]}" .gpu/upstream-checkpoints/nino_no_posw.pt \
      > "$W/logs/unseen_metaloss.log" 2>&1
    log "unseen convnets rc=$?"
  fi
  OWN_SPEC=""
  if [ -n "${VARIANTS:-}" ]; then  # the run with the lowest masked L1 there, the bundled default competing
    best=$(awk '$1 == "default" || $1 ~ /^metatrain_/ { if (min == "" || $NF < min) { min = $NF; name = $1 } }
                END { print name }' "$W/logs/unseen_metaloss.log" 2> /dev/null)
    log "unseen convnets: best ${best:-none}"
    if [[ "$best" == metatrain_* ]]; then
      ln -sfn "$W/$best" "$W/metatrain"
      OWN_SPEC="new=$W/$best/weights"
    else
      OWN_SPEC=default
    fi
  elif [ -f "$W/metatrain/weights/model.safetensors" ]; then
    OWN_SPEC="own=$W/metatrain/weights"
  fi
fi

if has own && [ -n "$OWN_SPEC" ]; then
  timeout "$(left $T_END)" $PY -m nino_optim.cli bench --task fm16 fm32 lm --methods "$OWN_SPEC" --workers 9 \
    "${BENCH[@]}" > "$W/logs/bench_own.log" 2>&1 &
  OWN=$!
  if [ -z "${WATCH_AT:-}" ]; then  # with --watch, trajectories that arrived later were trained on, whatever their name
    timeout "$(left $T_END)" $PY experiments/heldout_metaloss.py --data "$W/trajectories" --windows 64 \
      --spacing $SPACING --device $DEVICE default "${weights[@]}" .gpu/upstream-checkpoints/nino_no_posw.pt \
      > "$W/logs/heldout_metaloss.log" 2>&1
    log "heldout rc=$?"
  fi
  wait $OWN
  log "own benchmark rc=$?"
fi
if has compare; then
  timeout "$(left $T_END)" $PY -m nino_optim.cli bench --task fm16 fm32 lm --methods adam,nino,default \
    --workers 14 "${BENCH[@]}" > "$W/logs/bench_compare.log" 2>&1
  log "compare rc=$?"
fi
if has cosine; then
  COSINE=(--schedule cosine --steps $STEPS --eval-every $EVAL --period $PERIOD --device $DEVICE --no-progress $EXTRA)
  SWEEP=()
  for lr in 6e-3 1.2e-2 2.4e-2; do  # FM-32's tuned peak for the schedule
    timeout "$(left $T_END)" $PY -m nino_optim.cli bench --task fm32 --methods adam --seeds 1000 --lr $lr \
      --out "$W/bench_cosine/sweep_fm32_lr$lr" "${COSINE[@]}" > "$W/logs/cosine_sweep_$lr.log" 2>&1 &
    SWEEP+=($!)
  done
  wait "${SWEEP[@]}"
  FM32_LR=$($PY - "$W/bench_cosine" <<'PY'
import json, pathlib, sys
runs = {p.parent.parent.name.split("lr")[-1]: json.loads(p.read_text())["final_metric"]
        for p in pathlib.Path(sys.argv[1]).glob("sweep_fm32_lr*/fm32/adam__seed1000.json")}
print(max(runs, key=runs.get) if runs else "1.2e-2")
PY
)
  log "cosine: FM-32 peak lr $FM32_LR"
  METHODS='adam,default,plain=default[schedule_aware=false],nino' MAIN=()
  for spec in fm16:2.4e-2 fm32:$FM32_LR lm:6e-3; do
    timeout "$(left $T_END)" $PY -m nino_optim.cli bench --task ${spec%%:*} --lr ${spec##*:} --methods "$METHODS" \
      --seeds 1000 2000 3000 --workers 12 --out "$W/bench_cosine/main" "${COSINE[@]}" \
      > "$W/logs/cosine_${spec%%:*}.log" 2>&1 &
    MAIN+=($!)
  done
  wait "${MAIN[@]}"
  log "cosine done"
fi
for pid in "${BACKGROUND[@]}"; do wait $pid; log "background benchmark rc=$?"; done
kill $GPU_LOG 2> /dev/null
pack
cp "$W/logs/run.log" "$OUT/"
log "packed $(du -h "$OUT/results.tar.gz" | cut -f1)"
