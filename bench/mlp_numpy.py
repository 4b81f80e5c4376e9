"""Baseline for `sigma bench mlp`: the same MLP 784-1024-1024-10 SGD (momentum 0.9) training step written by hand
in NumPy (float32), batch 256. Prints samples/s (median of runs) for the BLAS thread count in OPENBLAS_NUM_THREADS."""
import sys, time
import numpy as np

runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
rng = np.random.default_rng(1)
sizes = [784, 1024, 1024, 10]
W = [rng.uniform(-1 / np.sqrt(i), 1 / np.sqrt(i), (o, i)).astype(np.float32) for i, o in zip(sizes, sizes[1:])]
B = [rng.uniform(-1 / np.sqrt(i), 1 / np.sqrt(i), o).astype(np.float32) for i, o in zip(sizes, sizes[1:])]
VW = [np.zeros_like(w) for w in W]
VB = [np.zeros_like(b) for b in B]
x = rng.random((256, 784), dtype=np.float32)
y = rng.integers(0, 10, 256)

def step(lr=0.01, mu=0.9):
    hs = [x]
    for k in range(3):
        z = hs[-1] @ W[k].T + B[k]
        hs.append(np.maximum(z, 0) if k < 2 else z)
    z = hs[-1]
    z = z - z.max(1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(1, keepdims=True)
    g = p
    g[np.arange(256), y] -= 1
    g /= 256
    for k in (2, 1, 0):
        gw = g.T @ hs[k]
        gb = g.sum(0)
        if k > 0:
            g = (g @ W[k]) * (hs[k] > 0)
        VW[k] = mu * VW[k] + gw
        VB[k] = mu * VB[k] + gb
        W[k] -= lr * VW[k]
        B[k] -= lr * VB[k]

for _ in range(3):
    step()
rates = []
for _ in range(runs):
    t = time.perf_counter()
    for _ in range(20):
        step()
    rates.append(20 * 256 / (time.perf_counter() - t))
rates.sort()
print(int(rates[len(rates) // 2]))
