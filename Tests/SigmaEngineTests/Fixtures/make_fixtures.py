# Produces the PyTorch reference fixtures once (committed). Run with a Python that has torch and safetensors:
#   python make_fixtures.py
# Each fixture holds the model's weights (PyTorch state-dict names) plus `input` and `output` tensors computed by
# PyTorch in float32 for those weights.
import torch
from safetensors.torch import save_file

torch.manual_seed(0)
torch.set_num_threads(1)

def save(name, model, x):
    model.eval()
    with torch.no_grad():
        y = model(x)
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    tensors["input"] = x.contiguous()
    tensors["output"] = y.contiguous()
    save_file(tensors, name, metadata={"torch": torch.__version__})
    print(name, {k: tuple(v.shape) for k, v in tensors.items()})

mlp = torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16), torch.nn.GELU(),
                          torch.nn.Linear(16, 10))
save("mlp.safetensors", mlp, torch.rand(6, 64))

cnn = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
                          torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.AvgPool2d(2),
                          torch.nn.Flatten(), torch.nn.Linear(32, 10))
save("cnn.safetensors", cnn, torch.rand(5, 1, 8, 8))

# Log-softmax and cross-entropy for the same logits, as a loss reference.
logits = torch.randn(4, 7) * 3
labels = torch.tensor([0, 6, 3, 3])
save_file({"logits": logits, "log_softmax": torch.log_softmax(logits, -1),
           "labels": labels.float(), "cross_entropy": torch.nn.functional.cross_entropy(logits, labels).reshape(1)},
          "loss.safetensors")

# One post-norm transformer encoder layer (BERT's arrangement), GELU, no dropout, with a key padding mask.
torch.backends.mha.set_fastpath_enabled(False)
layer = torch.nn.TransformerEncoderLayer(d_model=16, nhead=4, dim_feedforward=32, dropout=0.0, activation="gelu",
                                         batch_first=True, norm_first=False)
with torch.no_grad():   # non-trivial norms
    layer.norm1.weight.uniform_(0.5, 1.5); layer.norm1.bias.uniform_(-0.5, 0.5)
    layer.norm2.weight.uniform_(0.5, 1.5); layer.norm2.bias.uniform_(-0.5, 0.5)
layer.eval()
x = torch.randn(2, 5, 16)
pad = torch.tensor([[False, False, False, False, False], [False, False, False, True, True]])
with torch.no_grad():
    y = layer(x, src_key_padding_mask=pad)
t = {k: v.contiguous() for k, v in layer.state_dict().items()}
t.update({"input": x, "output": y.contiguous(), "key_padding": pad.float()})
save_file(t, "encoder_layer.safetensors", metadata={"torch": torch.__version__})
print("encoder_layer.safetensors", {k: tuple(v.shape) for k, v in t.items()})
