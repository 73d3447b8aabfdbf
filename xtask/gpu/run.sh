#!/usr/bin/env bash
# On the GPU machine (see BENCHMARKS.md, "The GPU"): checks and measures the CUDA device with
# the binaries built here and carried in .bin/gpu (xtask/gpu/stage.sh). Logs go to $OUT.
# usage: xtask/gpu/run.sh [STEP ...]   (prints what each step gives; read it: the script goes on
#   past a failing step and exits 0, so that one run of a lease gathers everything it can)
#   steps: info unit parity accuracy smoke bench cli fastcnn profile   (default: all but profile)
set -u
cd "$(dirname "$0")/../.."
B=.bin/gpu
D=$B/data/mnist
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
# The CUDA libraries cudarc opens (libcuda from the driver; NVRTC and cuBLAS from the toolkit
# or from PyTorch's wheels), wherever this machine keeps them.
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
  $(python3 -c "import nvidia, os; p = list(nvidia.__path__)[0]; print(' '.join(os.path.join(p, s, 'lib') for s in os.listdir(p)))" 2>/dev/null); do
  [ -d "$d" ] && LD_LIBRARY_PATH="${LD_LIBRARY_PATH:-}:$d"
done
export LD_LIBRARY_PATH NN_REQUIRE_GPU=1 NN_DATA_DIR=$B/data
steps=${*:-info unit parity accuracy smoke bench cli fastcnn}
for s in $steps; do
  echo "=== $s"
  case $s in
    info)
      nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
      nproc ;;
    unit)
      timeout 120 $B/nn_cuda_unit 2>&1 | tail -3
      timeout 60 $B/no_gpu 2>&1 | tail -3 ;;
    parity)
      timeout 300 $B/parity --test-threads=1 --nocapture 2>&1 | tee "$OUT/parity.log" | grep -E "^test |result" ;;
    accuracy)
      timeout 300 $B/gpu_tests --test-threads=1 --nocapture 2>&1 | tee "$OUT/accuracy.log" | grep -E "accuracy|^test |result|panicked" ;;
    smoke)
      timeout 120 $B/cuda_smoke 2>&1 | tail -3 ;;
    bench)
      # Ours and PyTorch eager alternately, twice each, on the real files.
      for m in M1 M2 M3 M4; do
        for rep in 1 2; do
          timeout 200 $B/bench $m --epochs 4 --device cuda --real $D 2>&1 | grep RESULT | tee -a "$OUT/bench.log"
          timeout 200 python3 xtask/gpu/torch_peer.py $m --epochs 4 --mnist $D 2>&1 | grep RESULT | tee -a "$OUT/bench.log"
        done
      done ;;
    cli)
      timeout 120 $B/mnist train --device cuda --dataset $D --run-dir "$OUT/m" --quiet --epochs 2 2>&1 | grep -E "accuracy|epochs in"
      timeout 60 $B/mnist evaluate --device cuda --model "$OUT/m/model.safetensors" --dataset $D 2>&1 | tail -4
      timeout 60 $B/mnist predict --device cuda --model "$OUT/m/model.safetensors" --dataset $D --index 0 1 2 3 4 2>&1 | tail -4
      rm -rf "$OUT/m" ;;
    profile)
      # GPU time per kernel over a stretch of training (Nsight Compute), by kernel name.
      NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
      [ -n "$NCU" ] || { echo "profile: no ncu (Nsight Compute) on this machine"; continue; }
      for m in fast-cnn mlp-128; do
        timeout 240 "$NCU" --metrics gpu__time_duration.sum --launch-skip 3000 --launch-count 300 --csv \
          $B/mnist train --model $m --device cuda --dataset $D --epochs 1 --quiet --run-dir "$OUT/p" >"$OUT/ncu-$m.csv" 2>&1
        rm -rf "$OUT/p"
        python3 xtask/gpu/ncu_summary.py "$OUT/ncu-$m.csv"
      done ;;
    fastcnn)
      # Time to 99% test accuracy with the fastest CNN recipe: three seeds.
      for seed in 1 2 3; do
        timeout 120 $B/mnist train --model fast-cnn --device cuda --dataset $D --run-dir "$OUT/f$seed" --quiet --seed $seed 2>&1 | grep -E "accuracy|epochs in"
        cp "$OUT/f$seed/history.csv" "$OUT/fast-cnn-seed$seed.csv" 2>/dev/null; rm -rf "$OUT/f$seed"
      done ;;
  esac
done
