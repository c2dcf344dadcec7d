#!/usr/bin/env bash
# Train on every GPU of one machine: one torchrun worker per GPU, DDP over the config's batch.
#
#   training/launch/torchrun_one_node.sh CONFIG RUN_DIR [mmseg train options...]
#   NPROC=2 training/launch/torchrun_one_node.sh training/configs/phantoms_quick_ummkd.json runs/q --device cpu
#
# NPROC: workers (default: the number of GPUs, else 1). PYTHON: the interpreter (default: python).
# The config's batch_size is the global batch (a multiple of NPROC). Rerunning the same command
# resumes from RUN_DIR/checkpoints/last.pt; Ctrl-C, SIGTERM or a STOP file in RUN_DIR stops every
# worker after the same step with a checkpoint (exit code 3).
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 CONFIG RUN_DIR [mmseg train options...]" >&2
    exit 2
fi
CONFIG=$1
RUN_DIR=$2
shift 2
PYTHON=${PYTHON:-python}
NPROC=${NPROC:-$("$PYTHON" -c 'import torch; print(max(torch.cuda.device_count(), 1))')}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
exec "$PYTHON" -m torch.distributed.run --standalone --nnodes 1 --nproc_per_node "$NPROC" \
    -m MultiModalSegLib train --config "$CONFIG" --out "$RUN_DIR" "$@"
