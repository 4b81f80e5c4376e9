"""Baseline for `sigma bench embed`: sentence-transformers encoding the same sentences with the same model folder.
Prints sentences/s (median of runs). Needs a Python with sentence-transformers (SIGMA_BENCH_PYTHON)."""
import sys, time
import torch
from sentence_transformers import SentenceTransformer

model_dir, path = sys.argv[1], sys.argv[2]
runs = int(sys.argv[3]) if len(sys.argv) > 3 else 3
torch.set_num_threads(int(sys.argv[4]) if len(sys.argv) > 4 else 2)
lines = [l for l in open(path, encoding="utf-8").read().split("\n") if l]
m = SentenceTransformer(model_dir, device="cpu")
m.encode(lines[:64], batch_size=32)
rates = []
for _ in range(runs):
    t = time.perf_counter()
    m.encode(lines, batch_size=32, normalize_embeddings=True)
    rates.append(len(lines) / (time.perf_counter() - t))
rates.sort()
print(int(rates[len(rates) // 2]))
