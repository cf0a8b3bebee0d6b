"""Child process for TFLite Micro, which may abort the process it runs in.

    python -m edgeae._tflm_worker run MODEL IN.npy OUT.npz ARENA   run each input, save every output
    python -m edgeae._tflm_worker probe MODEL ARENA                exit 0 when the arena suffices
    python -m edgeae._tflm_worker allocations MODEL ARENA          print the recording allocator's report
"""

import sys

import numpy as np


def _interpreter(model_path: str, arena: str):
    from tflite_micro import runtime

    return runtime.Interpreter.from_file(model_path, arena_size=int(arena))


def _output_count(interp) -> int:
    n = 0
    while True:
        try:
            interp.get_output_details(n)
        except IndexError:
            return n
        n += 1


def _zeros_invoke(interp) -> None:
    d = interp.get_input_details(0)
    interp.set_input(np.zeros(d["shape"], d["dtype"]), 0)
    interp.invoke()


def main(mode: str, *args: str) -> None:
    if mode == "run":
        model_path, src, dst, arena = args
        interp = _interpreter(model_path, arena)
        outputs = [[] for _ in range(_output_count(interp))]
        for x in np.load(src):
            interp.reset()  # each window from zero state, as in training (an LSTM keeps it otherwise)
            interp.set_input(x[None], 0)
            interp.invoke()
            for i, out in enumerate(outputs):
                out.append(interp.get_output(i)[0].copy())
        np.savez(dst, *(np.stack(out) for out in outputs))
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
