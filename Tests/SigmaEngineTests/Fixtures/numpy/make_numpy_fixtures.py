# NumPy-written files for the format tests (run once; outputs committed).
import numpy as np, struct
np.savez("train.npz", x=np.arange(12, dtype=np.float32).reshape(3, 4) / 4, y=np.array([2, 0, 1], dtype=np.int64))
np.savez_compressed("compressed.npz", x=np.ones(3, dtype=np.float32))
np.save("labels_i4.npy", np.array([-3, 0, 7, 2**20], dtype="<i4"))
np.save("mask_bool.npy", np.array([[True, False], [False, True]]))
np.save("big_f8.npy", np.array([1.5, -2.25], dtype=">f8"))
np.save("half.npy", np.array([0.5, -1.0, 65504.0], dtype="<f2"))
np.save("u1_3d.npy", np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
with open("images.idx3-ubyte", "wb") as f:
    f.write(bytes([0, 0, 0x08, 3]) + struct.pack(">III", 3, 2, 2) + bytes(range(0, 240, 20)))
with open("labels.idx1-ubyte", "wb") as f:
    f.write(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 3) + bytes([7, 1, 9]))
with open("floats.idx", "wb") as f:
    f.write(bytes([0, 0, 0x0D, 1]) + struct.pack(">I", 2) + struct.pack(">ff", 1.25, -3.5))
