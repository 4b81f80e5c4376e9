# The same 300 digits in every data format a job reads (docs/jobs.md, "Data formats"): python3 make_formats.py
# (NumPy, and the safetensors package for digits.safetensors). From ../../data/digits.csv, pixels 0…16, label last.
import struct
import numpy as np
from safetensors.numpy import save_file

raw = np.loadtxt("../../data/digits.csv", delimiter=",")[:300]
pixels, labels = raw[:, :64].astype(np.uint8), raw[:, 64].astype(np.int64)
with open("digits.csv", "w") as f:   # with a header line, the label first
    f.write("digit," + ",".join(f"p{i}" for i in range(64)) + "\n")
    for p, l in zip(pixels, labels):
        f.write(f"{l}," + ",".join(str(v) for v in p) + "\n")
np.save("digits.npy", pixels.astype("<f4"))
np.save("labels.npy", labels.astype("<f4"))
with open("images-idx3-ubyte", "wb") as f:
    f.write(struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">III", 300, 8, 8) + pixels.tobytes())
with open("labels-idx1-ubyte", "wb") as f:
    f.write(struct.pack(">BBBB", 0, 0, 0x08, 1) + struct.pack(">I", 300) + labels.astype(np.uint8).tobytes())
np.savez_compressed("digits.npz", images=pixels.reshape(300, 8, 8), digits=labels)
save_file({"x": pixels.astype("<f4"), "y": labels}, "digits.safetensors")
