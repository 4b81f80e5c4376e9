# NumPy's answers for the map functions (issue 22): python3 make_map_functions.py (NumPy 2.4) writes
# map_input.npy and map_functions.json. Each case: the map as a spec writes it (YAML flow), and NumPy float64
# sum (math.fsum: exact), min, max and count of f(x) (NaN: null).
import json, math
import numpy as np

x = np.concatenate([np.linspace(-3, 3, 1001), [0.0, -0.0, 1e-300, 700.0, -700.0]]).astype('<f8')
np.save('map_input.npy', x)

cases = {
    'log': np.log,
    'exp': np.exp,
    '{clip: {low: -1, high: 0.5}}': lambda v: np.clip(v, -1, 0.5),
    '[abs, {affine: {a: 1, b: 1}}, log]': lambda v: np.log(np.abs(v) + 1),
    '[abs, {affine: {a: 2}}, square]': lambda v: np.square(2 * np.abs(v)),
    '[{clip: {low: 0}}, exp]': lambda v: np.exp(np.clip(v, 0, None)),
}
out = {}
with np.errstate(all='ignore'):
    for spec, f in cases.items():
        y = f(x)
        nan = bool(np.isnan(y).any())
        out[spec] = {'sum': None if nan else math.fsum(y.tolist()), 'min': None if nan else float(np.min(y)),
                     'max': None if nan else float(np.max(y)), 'count': int(y.size)}
json.dump(out, open('map_functions.json', 'w'), indent=1)
