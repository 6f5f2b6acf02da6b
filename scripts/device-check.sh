#!/usr/bin/env bash
# GPU checks and benchmarks, run on a CUDA machine from the repository root
# after scripts/prepare-device.sh (locally) has filled .device/. Everything
# printed is also written to $OUT/device.log, results to $OUT/*.json.
set -u
OUT=${OUT:-/tmp/difi-device}
mkdir -p "$OUT"
exec > >(tee "$OUT/device.log") 2>&1
export LD_LIBRARY_PATH="$(python3 -c 'import torch, os; print(os.path.dirname(torch.__file__))')/lib"
D=.device/difi
F=tests/fixtures
step() { echo; echo "== $* ($(date +%T))"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$D info

step "EDM fixtures on CUDA: float32 (bounds enforced), float16, bfloat16"
$D zoo verify --device cuda --json $F/edm/*.safetensors | tee "$OUT/verify-fp32.jsonl"
$D zoo verify --device cuda --precision fp16 --json $F/edm/*.safetensors | tee "$OUT/verify-fp16.jsonl"
$D zoo verify --device cuda --precision bf16 --json $F/edm/*.safetensors | tee "$OUT/verify-bf16.jsonl"

step "toy distillation on CUDA"
$D --log warn distill configs/toy-gmm.ron --outdir "$OUT/toy" --set device=cuda && $D evaluate --run "$OUT/toy"
tail -1 "$OUT/toy/stats.jsonl"

step "proxy-FID of Fashion-MNIST test images on CUDA (CPU gives 0.007386144618024559)"
[ -f .device/fashion-mnist-test.zip ] && $D fid --ref metrics/weights/fashion-mnist-32x32-fmnist-classifier.npz \
    .device/fashion-mnist-test.zip --detector fmnist-classifier --device cuda

step "EDM teacher distillation with metrics at every snapshot, on CUDA"
python3 tests/python/detector_reference.py make "$OUT/stand-in.pt"
cat > "$OUT/edm-metrics.ron" <<RON
(
    version: 1,
    device: "cuda",
    teacher: (plugin: "edm", params: (checkpoint: "$PWD/$F/edm/songunet-skip-vp.safetensors")),
    generator: (init_from: "teacher"),
    fake_score: (init_from: "teacher"),
    dataset: (plugin: "zip", params: (path: "$PWD/$F/data/digits-8x8-labelled.zip", use_labels: Some(false))),
    schedule: (batch_size: 64, total_kimg: 1.28, tick_kimg: 0.64, snapshot_ticks: 1),
    metrics: (list: ["fid1k_full", "pr1k3_full"], detector: "$OUT/stand-in.pt"),
)
RON
$D --log warn distill "$OUT/edm-metrics.ron" --outdir "$OUT/edm-run" && cat "$OUT/edm-run/metrics.jsonl" && tail -1 "$OUT/edm-run/stats.jsonl"

step "benchmarks: one Diff-Instruct iteration on EDM's CIFAR-10 DDPM++ (55.7M parameters per network)"
for setting in "schedule.batch_size=64" "schedule.batch_size=128" \
    "schedule.batch_size=128 --set allow_tf32=true" "schedule.batch_size=128 --set teacher.params.precision=fp16" \
    "schedule.batch_size=256 --set teacher.params.precision=fp16"; do
    echo "-- $setting"
    $D --log error bench configs/bench-cifar10.ron --set $setting --iterations 10 --warmup 3 --json | tee -a "$OUT/bench.jsonl"
done
step "memory: activation checkpointing at batch 128 (peak allocator memory per part, and the autocast path)"
for setting in "checkpoint_activations=[]" "checkpoint_activations=[\"generator\",\"fake_score\"]" \
    "checkpoint_activations=[\"generator\",\"fake_score\"] --set autocast=bf16"; do
    echo "-- $setting"
    $D --log error bench configs/bench-cifar10.ron --set schedule.batch_size=128 --set $setting \
        --iterations 5 --warmup 2 --json | tee -a "$OUT/bench-memory.jsonl"
done
step "distributed: the toy as a 1-rank NCCL group equals the plain run (losses of every tick)"
DIST="--set device=cuda --set schedule.total_kimg=256 --set schedule.tick_kimg=25.6"
$D --log warn distill configs/toy-gmm.ron --outdir "$OUT/toy-plain" $DIST
WORLD_SIZE=1 RANK=0 LOCAL_RANK=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29555 \
    $D --log warn distill configs/toy-gmm.ron --outdir "$OUT/toy-nccl" $DIST
python3 - "$OUT/toy-plain/stats.jsonl" "$OUT/toy-nccl/stats.jsonl" <<'PY'
import json, sys
a, b = ([json.loads(l) for l in open(p)] for p in sys.argv[1:])
worst = max(abs(x[k] - y[k]) / max(abs(x[k]), 1e-12) for x, y in zip(a, b) for k in ("loss_fake_score", "loss_generator"))
print(f"ticks {len(a)} vs {len(b)}; largest relative loss difference {worst:.3e}; "
      f"sec/kimg plain {a[-1]['sec_per_kimg']:.4f} nccl {b[-1]['sec_per_kimg']:.4f}; world_size {b[-1].get('world_size')}")
PY

step "CUDA graphs: capture and replay against eager (tests), then the toy's iteration timed both ways"
.device/test-torch-ext cuda_graph
.device/test-cuda-graph
GRAPH="--set optim.generator.fused=true --set optim.fake_score.fused=true"
for setting in "device=cpu" "device=cuda" "device=cuda --set cuda_graph=true"; do
    echo "-- $setting"
    $D --log error bench configs/toy-gmm.ron $GRAPH --set $setting --iterations 200 --warmup 10 --json | tee -a "$OUT/bench-graph.jsonl"
done
step "the whole toy distillation with the graph on CUDA (the CPU takes about 40 s)"
time $D --log warn distill configs/toy-gmm.ron --outdir "$OUT/toy-graph" --set device=cuda $GRAPH \
    --set cuda_graph=true && $D evaluate --run "$OUT/toy-graph"

step "done"
