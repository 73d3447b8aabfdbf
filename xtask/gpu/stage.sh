#!/usr/bin/env bash
# Builds (here, with the `cuda` feature) what xtask/gpu/run.sh runs on the GPU machine, into
# .bin/gpu (git-ignored; passed to the device tool with `carry`), with a copy of MNIST.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p mnist --features cuda
cargo build --release -p nn-train --features cuda --example bench --example train_recipe
cargo build --release -p nn-cuda --features cuda --example cuda_smoke
rm -rf .bin/gpu && mkdir -p .bin/gpu/data/mnist
cp target/release/mnist target/release/examples/{bench,train_recipe,cuda_smoke} .bin/gpu/
cargo test --release -p nn-cuda -p nn-train --features nn-cuda/cuda,nn-train/cuda --no-run --message-format=json 2>/dev/null | python3 -c '
import json, shutil, sys
names = {"parity": "parity", "no_gpu": "no_gpu", "nn_cuda": "nn_cuda_unit", "gpu": "gpu_tests"}
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] in names:
        shutil.copy(m["executable"], ".bin/gpu/" + names[m["target"]["name"]])
'
strip .bin/gpu/* 2>/dev/null || true
cp data/mnist/*-ubyte* .bin/gpu/data/mnist/
du -sh .bin/gpu
