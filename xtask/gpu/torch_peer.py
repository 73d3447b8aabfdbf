"""PyTorch eager on the GPU: the peer of `bench ... --device cuda` (run on the GPU machine).

usage: torch_peer.py M1|M2|M3|M4 [--epochs E] [--mnist DIR]

The same models as ../shared/bench/bench_torch.py (M1: 784-128-10 logits; M2: 784-100-144-10
sigmoid at batch 32; M3: 784-512-512-10; M4: the Keras simple convnet), Adam at 1e-3, batch
128 unless said, PyTorch's default settings
(float32 matrix products; cuDNN may use TF32 for convolutions, its default). The strongest
plain eager loop: the training set lives on the GPU, batches are gathered there by a random
permutation, and the loss is summed on the device (no host read per step). Prints one
`RESULT {json}` line: median seconds per epoch (first excluded), predict 10k, test accuracy.
"""
import argparse
import gzip
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn as nn


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load(d):
    if d is None:
        r = np.random.default_rng(1)
        return (r.integers(0, 256, (60000, 28, 28), dtype=np.uint8), r.integers(0, 10, 60000, dtype=np.uint8),
                r.integers(0, 256, (10000, 28, 28), dtype=np.uint8), r.integers(0, 10, 10000, dtype=np.uint8))
    f = lambda n: idx(os.path.join(d, n))  # noqa: E731
    return (f("train-images-idx3-ubyte.gz"), f("train-labels-idx1-ubyte.gz"),
            f("t10k-images-idx3-ubyte.gz"), f("t10k-labels-idx1-ubyte.gz"))


def build(name):
    if name == "M1":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    if name == "M2":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 100), nn.Sigmoid(), nn.Linear(100, 144), nn.Sigmoid(),
                             nn.Linear(144, 10))
    if name == "M3":
        return nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                             nn.Linear(512, 10))
    if name == "M4":
        return nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Flatten(), nn.Dropout(0.5), nn.Linear(1600, 10))
    raise ValueError(name)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", choices=["M1", "M2", "M3", "M4"])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--mnist")
    a = ap.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    xtr, ytr, xte, yte = load(a.mnist)
    X = torch.from_numpy(xtr.copy()).to(dev).float().div_(255).reshape(-1, 1, 28, 28)
    Y = torch.from_numpy(ytr.astype(np.int64)).to(dev)
    Xt = torch.from_numpy(xte.copy()).to(dev).float().div_(255).reshape(-1, 1, 28, 28)
    Yt = torch.from_numpy(yte.astype(np.int64)).to(dev)
    model = build(a.model).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    n, batch = len(X), 32 if a.model == "M2" else 128
    times = []
    for ep in range(a.epochs):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n, device=dev)
        total = torch.zeros((), device=dev)
        for i in range(0, n, batch):
            b = perm[i:i + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(X[b]), Y[b])
            loss.backward()
            opt.step()
            total += loss.detach()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        print(f"[torch {a.model}] epoch {ep + 1}: {times[-1]:.3f} s, loss {total.item() / -(-n // batch):.4f}",
              file=sys.stderr, flush=True)

    def predict(bs):
        model.eval()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.inference_mode():
            probs = torch.cat([torch.softmax(model(Xt[i:i + bs]), 1) for i in range(0, len(Xt), bs)])
            out = probs.cpu()
        return time.perf_counter() - t0, out

    predict(128)
    pred128 = min(predict(128)[0] for _ in range(5))
    pred_all, probs = min((predict(len(Xt)) for _ in range(5)), key=lambda r: r[0])
    acc = (probs.argmax(1) == Yt.cpu()).float().mean().item()
    r = {"impl": "torch-eager", "framework": f"torch {torch.__version__}", "device": torch.cuda.get_device_name(),
         "model": a.model, "epochs": a.epochs, "s_per_epoch_median": round(statistics.median(times[1:] or times), 4),
         "first_epoch_s": round(times[0], 4), "predict10k_bs128_s": round(pred128, 5),
         "predict10k_full_s": round(pred_all, 5), "test_acc": round(acc, 4)}
    print("RESULT " + json.dumps(r), flush=True)


if __name__ == "__main__":
    main()
