"""The Python side of the `py_overhead` benchmark (see ovm-py/examples/py_overhead.rs).

Does from Python what the Rust example does through the Rust API. Measurements are
interleaved: the Rust program (``--rust-bin``, started once with ``--serve``) measures a
figure, then Python measures the same one, and so on (the order swapped every round), so
that each pair sees the same moment of a shared, noisy machine. Prints one JSON object
per figure, the median over rounds, with the Rust median beside it (``peer_value``):

- ``state_call_ns``: one ``vm.state()`` (10,000 calls, 5 times), and the overhead per
  call above Rust (target: at most 2 µs);
- ``create_start_seq_per_s``: 1,000 VMs created and started one after another, each job
  waited for (the blocking API);
- ``create_start_conc_per_s``: 1,000 creates issued together through ``asyncio.gather``
  and awaited together, then the 1,000 starts likewise.

and for the two throughputs the median of the per-pair ratios Python / Rust
(``*_ratio_pct``, target: at least 90 %), with the lowest and highest pair, and the
ratio of the two sides' best rounds (``*_best_ratio_pct``: on a shared machine the
best round is the least disturbed one).

Run: scripts/bench-py.sh
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import statistics
import subprocess
import time
from typing import Callable, Dict, List, Tuple

import ovm

T = 60.0
STATE_CALLS = 10_000
VMS = 1_000


def bed() -> Tuple[ovm.Manager, ovm.PoolHandle]:
    mgr = ovm.Manager.open_in_memory(initiator="bench")
    pool = mgr.create_pool("p").wait(timeout=T)
    for i in range(4):
        pool.add_server(f"s{i}", "cpus=256,memory_mib=1048576").wait(timeout=T)
    return mgr, pool


def state_calls(rounds: int) -> float:
    _, pool = bed()
    vm = pool.create_vm(ovm.VmSpec("v", vcpus=1, memory_mib=64)).wait(timeout=T)
    state = vm.state
    per_call = []
    for _ in range(rounds):
        t = time.perf_counter_ns()
        for _ in range(STATE_CALLS):
            state()
        per_call.append((time.perf_counter_ns() - t) / STATE_CALLS)
    return statistics.median(per_call)


def create_start_sequential() -> float:
    _, pool = bed()
    t = time.perf_counter()
    for i in range(VMS):
        vm = pool.create_vm(ovm.VmSpec(f"vm-{i}", vcpus=1, memory_mib=64)).wait(timeout=T)
        vm.start().wait(timeout=T)
    return VMS / (time.perf_counter() - t)


def create_start_concurrent() -> float:
    _, pool = bed()

    async def run() -> float:
        t = time.perf_counter()
        creates = await asyncio.gather(
            *(pool.create_vm_async(ovm.VmSpec(f"vm-{i}", vcpus=1, memory_mib=64)) for i in range(VMS))
        )
        vms = await asyncio.gather(*(j.wait_async(timeout=T) for j in creates))
        starts = await asyncio.gather(*(vm.start_async() for vm in vms))
        await asyncio.gather(*(j.wait_async(timeout=T) for j in starts))
        return VMS / (time.perf_counter() - t)

    return asyncio.run(run())


FIGURES: Dict[str, Callable[[], float]] = {
    "state_call_ns": lambda: state_calls(5),
    "create_start_seq_per_s": create_start_sequential,
    "create_start_conc_per_s": create_start_concurrent,
}


def emit(metric: str, value: float, unit: str, **extra: object) -> None:
    line: Dict[str, object] = {
        "bench": "py_overhead", "metric": metric, "value": round(value, 3), "unit": unit,
    }
    line.update({k: round(v, 3) if isinstance(v, float) else v for k, v in extra.items()})
    print(json.dumps(line), flush=True)


class RustSide:
    """The Rust program, serving one measurement per request."""

    def __init__(self, binary: str) -> None:
        self.proc = subprocess.Popen(
            [binary, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def measure(self, figure: str) -> float:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(figure + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline()
        if not answer:
            raise RuntimeError(f"the Rust side exited (status {self.proc.wait()})")
        d = json.loads(answer)
        assert d["metric"] == figure, d
        return float(d["value"])

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rust-bin", help="the Rust side (ovm-py/examples/py_overhead.rs)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--raw", action="store_true", help="also print every measurement")
    args = parser.parse_args()
    rust = RustSide(args.rust_bin) if args.rust_bin else None
    py_runs: Dict[str, List[float]] = {k: [] for k in FIGURES}
    rust_runs: Dict[str, List[float]] = {k: [] for k in FIGURES}
    try:
        for r in range(args.rounds):
            for name, measure in FIGURES.items():
                # Alternate who goes first, so that neither always follows the other.
                sides: List[Tuple[str, Callable[[], float]]] = [("python", measure)]
                if rust is not None:
                    sides.insert(r % 2, ("rust", functools.partial(rust.measure, name)))
                for who, fn in sides:
                    v = fn()
                    (py_runs if who == "python" else rust_runs)[name].append(v)
                    if args.raw:
                        emit(name, v, "raw", side=who, round=r)
    finally:
        if rust is not None:
            rust.close()

    med = statistics.median
    st = py_runs["state_call_ns"]
    if rust is None:
        emit("state_call_ns", med(st), "ns")
    else:
        rs = rust_runs["state_call_ns"]
        emit("state_call_ns", med(st), "ns", peer="rust", peer_value=med(rs))
        emit("state_call_overhead_us", (med(st) - med(rs)) / 1000, "us")
    for kind in ("seq", "conc"):
        key = f"create_start_{kind}_per_s"
        if rust is None:
            emit(key, med(py_runs[key]), "vms/s")
            continue
        emit(key, med(py_runs[key]), "vms/s", peer="rust", peer_value=med(rust_runs[key]))
        ratios = [100 * p / q for p, q in zip(py_runs[key], rust_runs[key])]
        emit(
            f"create_start_{kind}_ratio_pct", med(ratios), "%",
            min=min(ratios), max=max(ratios), pairs=len(ratios),
        )
        # The best round of each side: the one the machine's neighbours disturbed least.
        emit(
            f"create_start_{kind}_best_ratio_pct",
            100 * max(py_runs[key]) / max(rust_runs[key]), "%",
            python_best=max(py_runs[key]), rust_best=max(rust_runs[key]),
        )


if __name__ == "__main__":
    main()
