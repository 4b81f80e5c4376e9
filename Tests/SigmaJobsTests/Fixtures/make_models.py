# PyTorch references for the cnn and transformer model specs (issue 22), written once and committed:
#   python3 make_models.py            (torch, numpy, safetensors; run from this folder)
# cnn_digits.safetensors: the tutorial CNN (docs/jobs.md) trained by PyTorch on the digits upsampled to 28×28 —
#   its state dict, 8 held-out images (`input`, N×1×28×28 in [0, 1]) with `labels`, PyTorch's eval-mode `logits`,
#   the mean cross-entropy `loss` and `grad.NAME`, the gradient of that loss for every parameter.
# transformer_post.safetensors, transformer_pre.safetensors: the transformer classifier (ModelSpec's `transformer`)
#   with seeded weights, token ids `input`, `labels`, `logits`, `loss` and `grad.NAME`.
import numpy as np
import torch
from safetensors.torch import save_file

torch.manual_seed(0)
torch.set_num_threads(1)
torch.backends.mha.set_fastpath_enabled(False)


def upsample(images8):
    """8×8 digits (0…16) → 28×28 bytes: bilinear, pixel centres aligned, as the Swift tests do (same operations)."""
    out = np.zeros((len(images8), 28, 28), dtype=np.uint8)
    for i in range(28):
        sy = min(7.0, max(0.0, (i + 0.5) * 8.0 / 28.0 - 0.5)); y0 = int(np.floor(sy)); y1 = min(y0 + 1, 7); wy = sy - y0
        for j in range(28):
            sx = min(7.0, max(0.0, (j + 0.5) * 8.0 / 28.0 - 0.5)); x0 = int(np.floor(sx)); x1 = min(x0 + 1, 7); wx = sx - x0
            a, b, c, d = images8[:, y0, x0], images8[:, y0, x1], images8[:, y1, x0], images8[:, y1, x1]
            v = (1 - wy) * ((1 - wx) * a + wx * b) + wy * ((1 - wx) * c + wx * d)
            out[:, i, j] = np.floor(v * 255.0 / 16.0 + 0.5).astype(np.uint8)
    return out


def cnn():
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Dropout(0.25), torch.nn.Flatten(), torch.nn.Linear(9216, 128), torch.nn.ReLU(), torch.nn.Dropout(0.5),
        torch.nn.Linear(128, 10))


def reference(model, x, labels):
    """State dict, eval-mode logits, loss and every parameter's gradient."""
    model.eval()
    model.zero_grad()
    logits = model(x)
    loss = torch.nn.functional.cross_entropy(logits, labels)
    loss.backward()
    t = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    t.update({"grad." + k: p.grad.detach().contiguous() for k, p in model.named_parameters()})
    t.update({"input": x.contiguous(), "labels": labels.float(), "logits": logits.detach().contiguous(), "loss": loss.detach().reshape(1)})
    return t


digits = np.loadtxt("../../../data/digits.csv", delimiter=",")
images = upsample(digits[:, :64].reshape(-1, 8, 8)).astype(np.float32) / 255.0
labels = torch.tensor(digits[:, 64].astype(np.int64))
x = torch.tensor(images).reshape(-1, 1, 28, 28)
order = torch.randperm(len(x), generator=torch.Generator().manual_seed(1))
train, held = order[:1500], order[1500:]
model = cnn()
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
for epoch in range(4):
    model.train()
    perm = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(10 + epoch))]
    for k in range(0, len(perm), 64):
        b = perm[k:k + 64]
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x[b]), labels[b]).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(x[held]).argmax(1) == labels[held]).float().mean().item()
    print(f"epoch {epoch + 1}: held-out accuracy {acc:.4f}")
pick = held[:8]
save_file(reference(model, x[pick], labels[pick]), "cnn_digits.safetensors", metadata={"torch": torch.__version__, "heldout_accuracy": f"{acc:.4f}"})


class TransformerClassifier(torch.nn.Module):
    """ModelSpec's `transformer` (docs/jobs.md): the same state-dict names Sigma reads and writes."""

    def __init__(self, vocab, length, width, heads, layers, hidden, outputs, norm_first, activation, pooling):
        super().__init__()
        self.embed = torch.nn.Embedding(vocab, width)
        self.position = torch.nn.Embedding(length, width)
        layer = torch.nn.TransformerEncoderLayer(width, heads, hidden, dropout=0.0, activation=activation, batch_first=True,
                                                 norm_first=norm_first)
        self.encoder = torch.nn.TransformerEncoder(layer, layers, norm=torch.nn.LayerNorm(width) if norm_first else None,
                                                   enable_nested_tensor=False)
        self.head = torch.nn.Linear(width, outputs)
        self.pooling = pooling

    def forward(self, ids):
        h = self.embed(ids) + self.position(torch.arange(ids.shape[1]))
        h = self.encoder(h)
        return self.head(h.mean(1) if self.pooling == "mean" else h[:, 0])


for name, norm_first, activation, pooling in [("post", False, "gelu", "mean"), ("pre", True, "relu", "first")]:
    m = TransformerClassifier(vocab=20, length=12, width=16, heads=4, layers=2, hidden=32, outputs=3, norm_first=norm_first,
                              activation=activation, pooling=pooling)
    with torch.no_grad():   # non-trivial norms
        for mod in m.modules():
            if isinstance(mod, torch.nn.LayerNorm):
                mod.weight.uniform_(0.5, 1.5); mod.bias.uniform_(-0.5, 0.5)
    ids = torch.randint(0, 20, (5, 12))
    t = reference(m, ids, torch.tensor([0, 2, 1, 1, 0]))
    t["input"] = ids.float()
    save_file(t, f"transformer_{name}.safetensors", metadata={"torch": torch.__version__})
    print(f"transformer_{name}.safetensors", sorted(k for k in t if not k.startswith("grad.")))
