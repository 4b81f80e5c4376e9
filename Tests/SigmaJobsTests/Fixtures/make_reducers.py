# NumPy (float64) and exact (fractions) references for the map-reduce reducers (issue 22): python3 make_reducers.py
# reduce_input.npy: 6,000 values — a large mean with a small spread (variance's hard case), repeats (top_k ties),
# ±1e-300 and ±1e300 next to ones (sums that lose digits in float64), integers 0…9 (class_counts); reducers.json:
# the answers.
import json
import math
import statistics
from fractions import Fraction
import numpy as np

rng = np.random.default_rng(22)
x = np.concatenate([
    rng.normal(1e6, 1.0, 3000),
    np.repeat([5e6, 5e6 - 1, 4e6], 4),                     # ties at the top
    np.array([1e300, 1.0, -1e300, 1e-300, -1e-300, 3.0]),
    rng.integers(0, 10, 2982).astype(np.float64),
])
rng.shuffle(x)
np.save("reduce_input.npy", x.astype("<f8"))
exact_sum = sum(Fraction(v) for v in x)
order = np.argsort(-x, kind="stable")[:7]
labels = x[(x >= 0) & (x < 10) & (x == np.round(x))]
values, counts = np.unique(x, return_counts=True)
ref = {
    "count": int(x.size),
    "sum": math.fsum(x),                                    # correctly rounded
    "sum_numpy": float(np.sum(x)),
    "mean": float(exact_sum / x.size),                      # correctly rounded
    # (no variance here: about 3e596, beyond the double range — Sigma answers +inf, ReducerTests checks it)
    "min": float(x.min()), "max": float(x.max()),
    "top_k": {"values": [float(v) for v in x[order]], "indices": [int(i) for i in order]},
    "histograms": [
        {"bins": 10, "low": 0.0, "high": 10.0, "counts": [int(c) for c in np.histogram(x, bins=10, range=(0.0, 10.0))[0]]},
        {"bins": 4, "low": 999998.0, "high": 1000002.0, "counts": [int(c) for c in np.histogram(x, bins=4, range=(999998.0, 1000002.0))[0]]},
    ],
    "distinct_values": int(values.size),
    "class_counts_0_to_9": {str(int(v)): int(c) for v, c in zip(values, counts) if v in range(10)},
}
# Variance of the normal block alone (no 1e300 values): a mean 10⁶ times the spread, where float64's one-pass
# formula E[x²] − E[x]² loses every digit. statistics.pvariance is exact rational arithmetic, rounded once.
block = x[(x > 9e5) & (x < 1.1e6)]
np.save("reduce_block.npy", block.astype("<f8"))
ref["block"] = {"count": int(block.size), "variance": float(statistics.pvariance(block.tolist())), "variance_numpy": float(np.var(block)),
                "mean": float(sum(Fraction(v) for v in block) / block.size)}
json.dump(ref, open("reducers.json", "w"), indent=1)
print({k: v for k, v in ref.items() if k not in ("top_k", "histograms")})
