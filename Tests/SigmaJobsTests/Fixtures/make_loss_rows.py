# model_loss's references (issue 22): python3 make_loss_rows.py
# loss_rows.npy: the torch-mlp fixture's 360 held-out rows (inputs, then the label; float64). loss_rows.json: each
# row's cross-entropy by NumPy float64 from PyTorch's logits (log-sum-exp minus the label's logit), and their sum.
import json, math
import numpy as np
d = "../../SigmaIntegrationTests/Fixtures/torch-mlp/"
x, y, z = np.load(d + "inputs.npy"), np.load(d + "labels.npy"), np.load(d + "logits.npy").astype(np.float64)
np.save("loss_rows.npy", np.concatenate([x.astype(np.float64), y[:, None].astype(np.float64)], axis=1))
top = z.max(axis=1, keepdims=True)
loss = np.log(np.exp(z - top).sum(axis=1)) - (z[np.arange(len(y)), y] - top[:, 0])
json.dump({"losses": loss.tolist(), "sum": math.fsum(loss), "worst": [int(i) for i in np.argsort(-loss, kind="stable")[:5]]},
          open("loss_rows.json", "w"))
print(loss.sum(), np.argsort(-loss, kind="stable")[:5])
