#!/usr/bin/env bash
# The GPU checks, as one script for a machine with a CUDA GPU (CI has none):
#
#   OUT=gpu-out DATA=../shared/datasets BUDGET=540 bash benchmarks/gpu_check.sh
#   PARTS="cli tests tp" ... ; then PARTS=imdb ...   (two calls: all of it is ~12 minutes)
#
# 1. cli.log      the CLI on CUDA (issue #2, #3): AG News trained in fp16 (grad scaler) and bf16,
#                 eval and predict on the GPU, torchrun with NCCL (ddp, fsdp bf16), and the clear
#                 error for more ranks than GPUs;
# 2. pytest.log   the CUDA tests, then the whole suite with CUDA visible (device auto = cuda);
# 3. imdb.*       self-pretraining on IMDB with GPU-sized compute (issue #7, setup imdb-gpu);
# 4. tp_*.json    training throughput and model FLOPs utilisation, slimtext vs transformers.Trainer
#                 in the same run: BERT-base (issue #3's GPU benchmark) and BERT-mini shapes.
# Each part has its own time limit inside BUDGET seconds; a failed part does not stop the rest.
set -u
OUT=${OUT:-gpu-out}
DATA=${DATA:-../shared/datasets}
BUDGET=${BUDGET:-540}
PY=${PY:-python3}
PARTS=" ${PARTS:-cli tests imdb tp all} "
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=true
start=$(date +%s)
work=$(mktemp -d)

left() { echo $((BUDGET - ($(date +%s) - start))); }

# part NAME SECONDS LOG COMMAND...: run COMMAND for at most SECONDS (less if the budget is short)
part() {
  local name=$1 secs=$2 log=$3 t0 rc
  shift 3
  if ((secs > $(left) - 10)); then secs=$(($(left) - 10)); fi
  if ((secs < 15)); then
    echo "== $name: not run, the budget is spent" | tee -a "$log"
    return
  fi
  echo "== $name (limit ${secs}s): $*" >>"$log"
  t0=$(date +%s)
  timeout -k 5 "$secs" "$@" >>"$log" 2>&1
  rc=$?
  echo "== $name: exit $rc after $(($(date +%s) - t0))s" | tee -a "$log"
}

SLIM=("$PY" -m slimtext)
AG=("--data" "$DATA/ag_news/train.jsonl.gz" "--test" "$DATA/ag_news/test.jsonl.gz")
TORCHRUN=("$PY" -m torch.distributed.run --standalone --nproc-per-node 1 -m slimtext)

want() { [[ $PARTS == *" $1 "* ]]; }

# ---- 1. environment and the CLI ----------------------------------------------------------------
LOG=$OUT/cli.log
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  "$PY" -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__,
torch.cuda.get_device_name(), 'bf16', torch.cuda.is_bf16_supported(), 'cpus', __import__('os').cpu_count())"
  "$PY" -m pip list 2>/dev/null | grep -iE "^(torch|transformers|tokenizers|safetensors|onnxruntime|accelerate) "
} >"$LOG" 2>&1
if want cli; then
part train-fp16 120 "$LOG" "${SLIM[@]}" train "${AG[@]}" --out "$work/fp16" --device cuda \
  --precision fp16 --epochs 2 --no-progress
part train-bf16 90 "$LOG" "${SLIM[@]}" train "${AG[@]}" --out "$work/bf16" --device cuda \
  --precision bf16 --max-steps 300 --no-progress
part eval-cuda 40 "$LOG" "${SLIM[@]}" eval "$work/fp16" --data "$DATA/ag_news/test.jsonl.gz" --json \
  --device cuda
part predict-cuda 30 "$LOG" "${SLIM[@]}" predict "$work/fp16" --device cuda \
  "Stocks fell as the central bank raised rates" "The striker scored twice in the final"
part ddp-nccl 90 "$LOG" "${TORCHRUN[@]}" train "${AG[@]}" --out "$work/ddp" --strategy ddp \
  --device cuda --max-steps 300 --no-progress
part fsdp-nccl-bf16 90 "$LOG" "${TORCHRUN[@]}" train "${AG[@]}" --out "$work/fsdp" \
  --strategy fsdp --precision bf16 --device cuda --max-steps 300 --no-progress
part nproc-over-gpus 30 "$LOG" "${SLIM[@]}" train "${AG[@]}" --out "$work/two" --nproc 2 --device cuda
fi

# ---- 2. tests with CUDA visible ----------------------------------------------------------------
LOG=$OUT/pytest.log
PYT=("$PY" -m pytest -p no:cacheprovider -v -rfEs --tb=short)
want tests && part pytest-cuda 150 "$LOG" "${PYT[@]}" tests/train/test_cuda.py tests/models/test_models.py \
  tests/test_infer_backends.py tests/compress/test_prune.py tests/test_cli.py -k \
  "cuda or device or padding or two_four or zero_weight"

# ---- 3. IMDB: self-pretraining with GPU-sized compute ------------------------------------------
want imdb && part imdb-gpu 480 "$OUT/imdb.log" "$PY" benchmarks/pretrain.py --datasets imdb-gpu --device cuda \
  --no-peers --threads 8 --data-root "$DATA" --out "$work/pre"
for f in "$work"/pre/imdb-gpu/*.log; do
  [ -e "$f" ] && { echo "---- $f"; tail -n 40 "$f"; } >>"$OUT/imdb.log"
done
[ -e "$work/pre/results.json" ] && cp "$work/pre/results.json" "$OUT/imdb.json"

# ---- 4. training throughput: slimtext vs transformers.Trainer (bf16, its best on a GPU) ----------
TP=("$PY" benchmarks/train_throughput.py --device cuda --data-root "$DATA" --threads 8
  --valid-size 0 --steps 300 --contenders slimtext-bf16,hf-best-bf16)
# lr 1e-4: at 5e-4 (BERT-mini's) BERT-base collapsed to one class in both (session 15)
want tp && part tp-bert-base 120 "$OUT/tp.log" "${TP[@]}" --shape bert-base --lr 1e-4 \
  --out "$OUT/tp_base.json"

# ---- 5. with what is left: the whole suite, and the small shape ----------------------------------
XDIST=()
"$PY" -c "import xdist, pytest_timeout" 2>/dev/null && XDIST=(-n 8 --timeout 120)
want all && part pytest-all 240 "$OUT/pytest.log" "${PYT[@]}" "${XDIST[@]}" tests
want tp && part tp-bert-mini 90 "$OUT/tp.log" "${TP[@]}" --shape bert-mini --out "$OUT/tp_mini.json"
echo "== done in $(($(date +%s) - start))s of ${BUDGET}s" | tee -a "$OUT/cli.log"
