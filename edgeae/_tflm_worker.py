"""Child process of `runtime.tflm_run`: python -m edgeae._tflm_worker MODEL IN.npy OUT.npy ARENA_BYTES.

Kept apart because the TFLite Micro interpreter may abort the process it runs in.
"""

import sys

import numpy as np


def main(model_path: str, src: str, dst: str, arena: str) -> None:
    from tflite_micro import runtime

    inputs = np.load(src)
    interp = runtime.Interpreter.from_file(model_path, arena_size=int(arena))
    outputs = []
    for x in inputs:
        interp.set_input(x[None], 0)
        interp.invoke()
        outputs.append(interp.get_output(0)[0].copy())
    np.save(dst, np.stack(outputs))


if __name__ == "__main__":
    main(*sys.argv[1:5])
