"""A PyTorch-trained MLP for Sigma's infer/eval tests (run once with PyTorch; outputs are committed).

    python make_fixture.py        # from this directory; needs torch and numpy

Trains nn.Sequential(Linear(64, 64), ReLU, Linear(64, 10)) on scikit-learn's 8x8 digits (data/digits.csv, the
label in the last column), pixels scaled by 1/16, and writes:
  model.safetensors  the state dict (0.weight, 0.bias, 2.weight, 2.bias; float32), written by hand
  inputs.npy         the 360 held-out rows, scaled (float32 [360, 64])
  labels.npy         their labels (int64 [360])
  logits.npy         PyTorch's outputs for them (float32 [360, 10])
  inputs.csv         the same rows unscaled, label last (digits.csv's format)
"""
import json, os, struct
import numpy as np
import torch
from torch import nn

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.abspath(os.path.join(here, "../../../.."))
torch.manual_seed(0)
raw = np.loadtxt(os.path.join(root, "data/digits.csv"), delimiter=",")
features, labels = raw[:, :64].astype(np.float32), raw[:, 64].astype(np.int64)
order = np.random.default_rng(0).permutation(len(raw))
test, train = order[:360], order[360:]
x = torch.from_numpy(features / 16.0)
y = torch.from_numpy(labels)
model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
gen = torch.Generator().manual_seed(0)
for epoch in range(30):
    perm = torch.from_numpy(train)[torch.randperm(len(train), generator=gen)]
    for i in range(0, len(perm), 64):
        idx = perm[i:i + 64]
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
model.eval()
with torch.no_grad():
    logits = model(x[test]).numpy().astype(np.float32)
acc = (logits.argmax(1) == labels[test]).mean()
print(f"held-out accuracy {acc:.4f}")

def save_safetensors(tensors, path):
    header, blobs, offset = {"__metadata__": {"source": "make_fixture.py (PyTorch)"}}, [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name], dtype="<f4")
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        blobs.append(a.tobytes())
        offset += a.nbytes
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))

save_safetensors({k: v.detach().numpy() for k, v in model.state_dict().items()}, os.path.join(here, "model.safetensors"))
np.save(os.path.join(here, "inputs.npy"), (features[test] / 16.0).astype(np.float32))
np.save(os.path.join(here, "labels.npy"), labels[test])
np.save(os.path.join(here, "logits.npy"), logits)
with open(os.path.join(here, "inputs.csv"), "w") as f:
    for i in test:
        f.write(",".join(str(int(v)) for v in raw[i, :64]) + f",{int(labels[i])}\n")
