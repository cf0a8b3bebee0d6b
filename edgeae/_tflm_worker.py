"""Child process for TFLite Micro, which may abort the process it runs in.

    python -m edgeae._tflm_worker run MODEL IN.npy OUT.npy ARENA   run each input, save the outputs
    python -m edgeae._tflm_worker probe MODEL ARENA                exit 0 when the arena suffices
    python -m edgeae._tflm_worker allocations MODEL ARENA          print the recording allocator's report
"""

import sys

import numpy as np


def _interpreter(model_path: str, arena: str):
    from tflite_micro import runtime

    return runtime.Interpreter.from_file(model_path, arena_size=int(arena))


def _zeros_invoke(interp) -> None:
    d = interp.get_input_details(0)
    interp.set_input(np.zeros(d["shape"], d["dtype"]), 0)
    interp.invoke()


def main(mode: str, *args: str) -> None:
    if mode == "run":
        model_path, src, dst, arena = args
        interp = _interpreter(model_path, arena)
        outputs = []
        for x in np.load(src):
            interp.set_input(x[None], 0)
            interp.invoke()
            outputs.append(interp.get_output(0)[0].copy())
        np.save(dst, np.stack(outputs))
    elif mode == "probe":
        _zeros_invoke(_interpreter(*args))
    elif mode == "allocations":
        interp = _interpreter(*args)
        _zeros_invoke(interp)
        interp.print_allocations()  # written by C++ to fd 2
    else:
        sys.exit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(*sys.argv[1:])
