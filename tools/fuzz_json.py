"""Hand-edit a JSON file edgeae reads, one key at a time, and see that every command reading it
answers with one line: an export's manifest.json or scorer.json, an eval folder's metrics.json, a
sweep folder's rd.json, or a training run's history.json, data.json, recipe.json or pruning.json.

Each key (nested tables and short lists followed) is in turn deleted or set to a value of another
kind (null, a string, -1, 0, 1e300, NaN, an empty list or table, true), in a copy of the folder;
then the commands that read the file run on the copy (TensorFlow-free: verify, encode, eval and
serve for an export; report for the others). A run is listed when it ends in a traceback,
a warning, a signal, or an error that is not one line. A run that succeeds is not listed: whether
an edit should have been refused is for a person to judge from `--all`.

    python tools/fuzz_json.py manifest --export edgeae-demo/export --data edgeae-demo/data/test.npz
    python tools/fuzz_json.py scorer   --export edgeae-demo/export --data edgeae-demo/data/test.npz
    python tools/fuzz_json.py metrics  --folder edgeae-demo/report --depth 2
    python tools/fuzz_json.py history  --folder edgeae-demo/run     (also data, recipe, pruning; rd --folder reports/rd)
    options: --depth 3 (how deep keys are edited), --jobs 3 (parallel runs), --all (list every run),
             --out tools/out/fuzz_<file>.json, --train-rows START:STOP (eval's)

The export needs a scorer.json for `scorer` (`edgeae calibrate` writes one). About 1 s a command
run: a manifest's 1310 edits (4 commands each) take some 30 minutes on two cores.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EDGEAE = str(Path(sys.executable).with_name("edgeae"))
DELETE = object()
VALUES = [DELETE, None, "x", -1, 0, 1e300, math.nan, [], {}, True]
FILES = {"manifest": "manifest.json", "scorer": "scorer.json", "metrics": "metrics.json", "rd": "rd.json",
         "history": "history.json", "data": "data.json", "recipe": "recipe.json", "pruning": "pruning.json"}  # fmt: skip
OF_AN_EXPORT = ("manifest", "scorer")  # the others are read by report, from --folder


def key_paths(value, depth: int, path=()):
    """Every key path in a JSON value down to `depth` keys: tables' keys, and the items of lists of up to 8."""
    if path:
        yield path
    if len(path) < depth:
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) and len(value) <= 8 else ()
        for k, v in items:
            yield from key_paths(v, depth, (*path, k))


def edited(doc, path, value):
    doc = copy.deepcopy(doc)
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return doc


def commands(target: str, folder: Path, args) -> dict[str, list]:
    if target not in OF_AN_EXPORT:
        return {"report": ["report", folder, "--out", folder / "page"]}
    rows = ["--train-rows", args.train_rows] if args.train_rows else []
    return {"verify": ["verify", folder],
            "encode": ["encode", folder, "--data", args.data, "--sensor", "1", "--out", folder / "p.bin"],
            "eval": ["eval", folder, "--data", args.data, *rows, "--out", folder / "eval", "--quiet"],
            "serve": ["serve", folder, "--packets", args.packets, "--db", folder / "r.sqlite"]}  # fmt: skip


def verdict(proc: subprocess.CompletedProcess) -> str | None:
    """Why a run is wrong, or None: a traceback, a warning, a signal, an error of more than one line."""
    if "Traceback" in proc.stderr or "Warning" in proc.stderr:
        return "traceback" if "Traceback" in proc.stderr else "warning"
    if proc.returncode < 0:
        return f"signal {-proc.returncode}"
    lines = [line for line in proc.stderr.splitlines() if line.strip() and "%|" not in line]  # progress bars aside
    if proc.returncode == 2 and (len(lines) != 1 or not lines[0].startswith("edgeae: error: ")):
        return "not one line"
    return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", choices=FILES)
    ap.add_argument("--export", type=Path, help="an export folder (manifest, scorer)")
    ap.add_argument("--data", type=Path, help="labelled data for encode and eval (manifest, scorer)")
    ap.add_argument("--train-rows", help="eval's --train-rows START:STOP")
    ap.add_argument("--folder", type=Path, help="an eval output folder (metrics), a sweep's (rd) or a training run (history, data, recipe, pruning)")
    ap.add_argument("--depth", type=int, default=3, help="edit keys down to this depth (metrics.json: 600 edits at 2, 2100 at 3)")
    ap.add_argument("--jobs", type=int, default=3)
    ap.add_argument("--all", action="store_true", help="list every run, not only the wrong ones")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    export = args.target in OF_AN_EXPORT
    source = args.export if export else args.folder
    if source is None or (export and args.data is None):
        ap.error("manifest and scorer need --export and --data; the others need --folder")
    doc = json.loads((source / FILES[args.target]).read_text())
    cases = [(p, v) for p in key_paths(doc, args.depth) for v in VALUES]
    work = Path(tempfile.mkdtemp(prefix="edgeae-fuzz-"))
    if export:  # serve's packets, from the export as it is
        args.packets = work / "packets.bin"
        subprocess.run([EDGEAE, "encode", source, "--data", args.data, "--sensor", "1", "--out", args.packets], capture_output=True, check=True)

    def run(i: int) -> list[dict]:
        path, value = cases[i]
        folder = work / str(i)
        shutil.copytree(source, folder, ignore=shutil.ignore_patterns("*.png", "report.html"))
        (folder / FILES[args.target]).write_text(json.dumps(edited(doc, path, value)))
        out = []
        for name, argv in commands(args.target, folder, args).items():
            proc = subprocess.run([EDGEAE, *map(str, argv)], capture_output=True, text=True, timeout=600)
            wrong = verdict(proc)
            if wrong or args.all:
                last = (proc.stderr.strip().splitlines() or [""])[-1]
                out.append({"key": ".".join(map(str, path)), "value": "(deleted)" if value is DELETE else repr(value),
                            "command": name, "exit": proc.returncode, "wrong": wrong, "stderr": last[:300]})  # fmt: skip
        shutil.rmtree(folder)
        return out

    found = []
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # through `finally`: the copies are removed
    try:
        with ThreadPoolExecutor(args.jobs) as pool:
            for i, rows in enumerate(pool.map(run, range(len(cases)))):
                for r in rows:
                    found.append(r)
                    print(f"{r['wrong'] or 'ok':12s} {r['command']:7s} {r['key']} = {r['value']}: exit {r['exit']}: {r['stderr']}", flush=True)
                if sys.stderr.isatty():
                    print(f"\r{i + 1}/{len(cases)} edits", end="", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    wrong = [r for r in found if r["wrong"]]
    print(f"\n{len(cases)} edits of {FILES[args.target]}: {len(wrong)} wrong runs", file=sys.stderr)
    out = args.out or ROOT / "tools" / "out" / f"fuzz_{args.target}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"file": FILES[args.target], "edits": len(cases), "wrong": wrong, **({"runs": found} if args.all else {})}, indent=1))
    sys.exit(1 if wrong else 0)


if __name__ == "__main__":
    main()
