# PyTorch baseline for `sigma bench cnn`: samples/s of the tutorial CNN's training step (Adam, dropout on),
# batch 64 of random 28×28 images, on THREADS threads. Prints one number.
#   python3 bench/cnn_torch.py STEPS THREADS
import sys
import time
import torch

steps, threads = int(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(threads)
torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Conv2d(1, 32, 3), torch.nn.ReLU(), torch.nn.Conv2d(32, 64, 3), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
    torch.nn.Dropout(0.25), torch.nn.Flatten(), torch.nn.Linear(9216, 128), torch.nn.ReLU(), torch.nn.Dropout(0.5),
    torch.nn.Linear(128, 10))
opt = torch.optim.Adam(model.parameters(), lr=1e-3)
x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))


def step():
    opt.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()


model.train()
for _ in range(3):
    step()
t = time.perf_counter()
for _ in range(steps):
    step()
print(steps * 64 / (time.perf_counter() - t))
