# IDX files as MNIST stores them, and the same data as NumPy .npy (issue 22): python3 make_idx.py
import struct
import numpy as np
rng = np.random.default_rng(5)
images = rng.integers(0, 256, (5, 2, 3), dtype=np.uint8)
labels = np.array([3, 0, 9, 1, 3], dtype=np.uint8)
with open('images-idx3-ubyte', 'wb') as f:
    f.write(struct.pack('>BBBB', 0, 0, 0x08, 3) + struct.pack('>III', *images.shape) + images.tobytes())
with open('labels-idx1-ubyte', 'wb') as f:
    f.write(struct.pack('>BBBB', 0, 0, 0x08, 1) + struct.pack('>I', 5) + labels.tobytes())
with open('truncated-idx3-ubyte', 'wb') as f:
    f.write(struct.pack('>BBBB', 0, 0, 0x08, 3) + struct.pack('>III', *images.shape) + images.tobytes()[:20])
np.save('images_flat.npy', images.reshape(5, 6).astype('<f4'))
np.save('labels.npy', labels.astype('<f4'))
# The same data as .npz: np.savez with the default names, np.savez_compressed with names of their own.
np.savez('xy.npz', x=images.reshape(5, 6).astype('<f4'), y=labels.astype(np.int64))
np.savez_compressed('named.npz', images=images, digits=labels)
# The same data as safetensors (tensors x: float32, y: int64), and a copy cut short (needs the safetensors package).
from safetensors.numpy import save_file
save_file({"x": images.reshape(5, 6).astype('<f4'), "y": labels.astype(np.int64)}, "xy.safetensors")
with open("xy.safetensors", "rb") as f:
    whole = f.read()
with open("truncated.safetensors", "wb") as f:
    f.write(whole[:-10])
