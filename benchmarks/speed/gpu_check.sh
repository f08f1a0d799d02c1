#!/usr/bin/env bash
# The GPU check: one call on a lent GPU settles prunebench's CUDA path, within 8 minutes of an H200
# (stages 1-4; stage 5 has not been timed on a GPU yet).
#   1. pytest -m cuda: a short training on the device vs the CPU run, exact GraNd on CUDA vs the
#      float64 CPU loop, float32 dynamics summaries under amp, no host copies in the training loop;
#   2. python -m benchmarks.speed --model resnet18 --compile on CIFAR-10 JPEG (the CUDA switches:
#      bf16 autocast, channels_last, cudnn.benchmark, and torch.compile and autotune-off variants);
#   3. a short Data Diet-style study: CIFAR-10 JPEG, ResNet-18, a short schedule, random vs EL2N vs
#      GraNd@0 at 50% removed, its leaderboard;
#   4. data-parallel scaling: ResNet-50 training throughput at 224 px, 64 images per GPU, on 1, 2,
#      4, 8 ... and all GPUs of the machine (torchrun, NCCL; benchmarks/speed/data_parallel.py):
#      images/s, the fraction of linear scaling (goal >= 0.9) and the all-reduce's share of a step;
#   5. the streamed data feeding one GPU (benchmarks/speed/stream_feed.py): 4,096 ImageNet-sized
#      JPEGs packed once, decoded images/s of the training transform (decode=cuda and the CPU
#      workers), and the share of a ResNet-50 training run at 224 px spent waiting for data
#      (goal < 5% on an H100 with 16 CPU cores).
# Every table and log lands in $OUT (default ./gpu_check_out: summary.md, speed.json, study.md,
# each stage's log, the run records and stream_feed.json as records.tar.gz); a stage that fails or
# runs over its time leaves its log and the next stage still runs; the exit status says whether
# all passed. GPU_CHECK_STAGES="stream_feed" (names from cuda_tests speed study leaderboard
# scaling stream_feed) runs only those stages.
#
# Toy size on a CPU (what CI-less checking here can do): GPU_CHECK_TOY=1 bash benchmarks/speed/gpu_check.sh
# (tests/test_gpu_check.py runs its stream_feed stage so)
#
# Preparing the call (once, here, in the repository root; the GPU machine has Python 3.12 and its
# own torch, reaches no registry, and lacks hydra-core, omegaconf, submitit and faiss-cpu):
#   echo /.whl/ >> .git/info/exclude && echo /.gpu_data/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#     --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
#     hydra-core==1.3.2 omegaconf==2.3.0 submitit==1.5.3 hydra-submitit-launcher==1.2.0 faiss-cpu==1.15.1
#   python3 -m pip download --no-deps --no-binary=:all: -d /tmp/sdist antlr4-python3-runtime==4.9.3
#   python3 -m pip wheel --no-deps -w .whl /tmp/sdist/antlr4-python3-runtime-4.9.3.tar.gz
#   mkdir -p .gpu_data && cp "$PRUNEBENCH_DATA/cifar10-jpg.tar.gz" .gpu_data/
# (19 MiB of wheels + 19 MiB of data + the tree: under the 64 MiB a call carries. wandb is not
# needed, the check logs nowhere; pandas, filelock, scikit-learn, scipy, tqdm, pillow and
# matplotlib are in the machine's image.) Then one device call:
#   run(command="bash benchmarks/speed/gpu_check.sh", carry=[".whl", ".gpu_data"], timeout_s=540)
set -u -o pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$PWD/gpu_check_out}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD" WANDB_MODE=disabled
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH="$PWD:/tmp/site"
fi
export PRUNEBENCH_DATA="${PRUNEBENCH_DATA:-$PWD/.gpu_data}"
export PRUNEBENCH_CACHE="${PRUNEBENCH_CACHE:-/tmp/prunebench-cache}"
WORK="${GPU_CHECK_WORK:-/tmp/gpu_check}"  # records and sweeps: $OUT brings back 8 files at most
export PRUNEBENCH_RESULTS="$WORK/results"
if [ ! -f "$PRUNEBENCH_DATA/cifar10-jpg.tar.gz" ]; then
  echo "gpu_check: no cifar10-jpg.tar.gz under PRUNEBENCH_DATA=$PRUNEBENCH_DATA (see this script's header)"
  exit 2
fi

if [ "${GPU_CHECK_TOY:-0}" = 1 ]; then
  SPEED=(--model cnn --steps 4 --warmup 1 --repeats 1 --score-examples 256 --grand-examples 32
    --naive-examples 4 --workers 2)
  STUDY=(model=cnn data.max_train=600 data.max_test=200 train.epochs=2 score.epoch=1 score.runs=2)
  SCALE=(--model cnn --image-size 32 --batch-per-rank 16 --steps 3 --warmup 1)
  GPUS=2  # gloo ranks on the CPU
  FEED=(--device cpu --decode cpu --model cnn --resolution 32 --images 48 --batch-size 8
    --steps 4 --warmup 1 --decode-batches 2 --workers 1)
  LIMITS=(300 900 900 300 300)
else
  SPEED=(--model resnet18 --steps 100 --repeats 2 --compile)
  STUDY=(model=resnet18 train.epochs=6 score.epoch=1 score.runs=2)
  SCALE=(--model resnet50 --image-size 224 --batch-per-rank 64 --steps 30 --warmup 5)
  GPUS=$(python3 -c "import torch; print(max(1, torch.cuda.device_count()))")
  FEED=(--images 4096 --batch-size 256 --steps 60 --warmup 10)
  LIMITS=(90 170 220 $((40 + 40 * GPUS)) 240)
fi

STAGES=" ${GPU_CHECK_STAGES:-cuda_tests speed study leaderboard scaling stream_feed} "
selected() { [[ "$STAGES" == *" $1 "* ]]; }
failed=0
stage() {  # stage NAME SECONDS COMMAND...: run it with a time limit, log to $OUT/NAME.log
  local name=$1 limit=$2
  shift 2
  selected "$name" || return 0
  local start=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "| $name | rc $rc | $((SECONDS - start)) s |" | tee -a "$OUT/summary.md"
  [ $rc -eq 0 ] || failed=1
}

{
  echo "# gpu_check $(date -u +%FT%TZ)"
  python3 -c "import torch; print('torch', torch.__version__, '| cuda', torch.cuda.is_available(),
      '|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"
  echo
  echo "| stage | status | wall |"
  echo "| --- | --- | ---: |"
} | tee "$OUT/summary.md"

stage cuda_tests "${LIMITS[0]}" python3 -m pytest -q -m cuda tests/test_cuda.py -rs
stage speed "${LIMITS[1]}" python3 -m benchmarks.speed "${SPEED[@]}" --out "$OUT/speed.json"
# random and EL2N at the score epoch, then GraNd at initialisation: one set of K proxy runs
common="data=cifar10_jpg prune.fraction=0.5 seed=0 ${STUDY[*]} run.progress=false"
stage study "${LIMITS[2]}" bash -c "python3 run.py -m method=random,el2n $common \
  hydra.sweep.dir=$WORK/sweep_a && python3 run.py -m method=grand method.epoch=0 \
  method.label=grand@0 $common hydra.sweep.dir=$WORK/sweep_b"
stage leaderboard 60 python3 -m analysis leaderboard "$PRUNEBENCH_RESULTS" --out "$OUT/study.md"
WORLDS=$(for n in 1 2 4 8 16 32 "$GPUS"; do [ "$n" -le "$GPUS" ] && echo "$n"; done | sort -nu)
stage scaling "${LIMITS[3]}" bash -c "for n in $(echo $WORLDS); do python3 -m torch.distributed.run \
  --standalone --nproc_per_node=\$n -m benchmarks.speed data_parallel ${SCALE[*]} \
  --out $WORK/scaling-\$n.json || exit 1; done"
if selected scaling; then
  python3 -m benchmarks.speed data_parallel --table "$WORK"/scaling-*.json >"$OUT/scaling.md" 2>&1
fi
stage stream_feed "${LIMITS[4]}" python3 -m benchmarks.speed stream_feed "${FEED[@]}" \
  --work "$WORK/stream" --out "$WORK/stream_feed.json"

{
  echo
  echo "## speed"
  sed -n '/^|/p' "$OUT/speed.log" 2>/dev/null
  echo
  echo "## study"
  cat "$OUT/study.md" 2>/dev/null
  echo
  echo "## data-parallel scaling"
  cat "$OUT/scaling.md" 2>/dev/null
  echo
  echo "## stream feed"
  sed -n '/^stream feed: /,$p' "$OUT/stream_feed.log" 2>/dev/null
} | tee -a "$OUT/summary.md"
tar -czf "$OUT/records.tar.gz" -C "$WORK" results stream_feed.json 2>/dev/null
exit $failed
