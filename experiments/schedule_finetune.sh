#!/usr/bin/env bash
# Fine-tune the bundled weights on warmup + cosine trajectories at tuned peak rates, mixed with constant-rate
# ones, then measure the result where it matters: held-out scheduled trajectories and the scheduled benchmark
# (weights are bundled only if the constant-rate benchmark agrees: run it when the scheduled one improves).
# Every step resumes where it stopped, so rerunning the script after an interruption continues it.
#
#   DEVICE=cuda experiments/schedule_finetune.sh
#
# On a 2-core CPU the collection takes about 30 minutes with two processes, but a meta-training iteration
# takes 10-25 s, so FT_SECONDS buys few iterations there.
#
# Knobs (environment): DATA (trajectories), OUT (fine-tune), BENCH (scheduled results, shared with the
# baseline's runs so that only the new weights train), WORKERS, DEVICE (cpu, cuda), FT_SECONDS (fine-tune length).
set -euo pipefail
DATA=${DATA:-data/ft_sched}
OUT=${OUT:-runs/ft_sched}
BENCH=${BENCH:-runs/bench_cosine}
WORKERS=${WORKERS:-2}
DEVICE=${DEVICE:-cpu}
FT_SECONDS=${FT_SECONDS:-1800}
run() { echo "+ $*"; "$@"; }

# 1. Trajectories: scheduled runs around the schedules' tuned peaks (2x the constant rate for GPTs, 3x for
#    convnets, half of them FM-16's architecture), and constant-rate runs so nothing else is forgotten.
run nino-optim collect --out "$DATA" --schedule cosine --kinds gpt --runs 8 --zoo-seed 6 --lr-scale 2 --workers "$WORKERS" --device "$DEVICE"
run nino-optim collect --out "$DATA" --schedule cosine --kinds convnet --runs 4 --zoo-seed 6 --lr-scale 3 \
    --fm16-share 0.5 --workers "$WORKERS" --device "$DEVICE"
run nino-optim collect --out "$DATA" --kinds gpt --runs 3 --zoo-seed 7 --workers "$WORKERS" --device "$DEVICE"
run nino-optim collect --out "$DATA" --kinds convnet --runs 2 --zoo-seed 7 --fm16-share 0.5 --workers "$WORKERS" --device "$DEVICE"

# 2. Fine-tune from the bundled weights; the schedule spans SECONDS of training so the run ends annealed.
run nino-optim metatrain --data "$DATA" --out "$OUT" --init default --lr 1e-3 --seconds "$FT_SECONDS" \
    --iterations 100000 --batch-size 8 --windows-per-trajectory 4 --eval-every 50 --stretch 0.4 --val-every 6 --device "$DEVICE"

# 3. Held-out scheduled trajectories (another zoo seed): jump error of the new weights against the bundled ones.
if [ -d data/scheduled ]; then
    run python experiments/schedule_horizon.py --data data/scheduled default "$OUT/weights" | tee "$OUT/horizon.txt"
fi

# 4. The scheduled benchmark, beside the stored Adam / bundled / official runs in $BENCH.
run nino-optim bench --task fm16 --schedule cosine --lr 2.4e-2 --eval-every 100 --methods "ftsched=$OUT/weights" \
    --seeds 1000 2000 3000 --out "$BENCH" --workers "$WORKERS" --device "$DEVICE" --no-progress
run nino-optim bench --task lm --schedule cosine --lr 6e-3 --eval-every 50 --methods "ftsched=$OUT/weights" \
    --seeds 1000 2000 3000 --out "$BENCH" --workers "$WORKERS" --device "$DEVICE" --no-progress
run nino-optim report --runs "$BENCH" --out "$OUT/report_cosine" --target fm16=90.0/89.0/89.5 lm=3.15/3.4/3.25
echo "scheduled report: $OUT/report_cosine/README.md"
