"""The Python side of the `py_overhead` benchmark (see ovm-py/examples/py_overhead.rs).

Does from Python what the Rust example does through the Rust API. Rounds alternate: the
Rust program (``--rust-bin``) runs one round, then Python does, and so on, so that both
sides see the same machine. Prints one JSON object per figure, the median over rounds,
with the Rust figure beside it (``peer_value``):

- ``state_call_ns``: one ``vm.state()`` (10,000 calls a round), and the overhead per
  call above Rust (target: at most 2 µs);
- ``create_start_seq_per_s``: 1,000 VMs created and started one after another, each job
  waited for (the blocking API), and Python's throughput as a share of Rust's (target: at
  least 90 %);
- ``create_start_conc_per_s``: the same through ``asyncio.gather``.

Run: scripts/bench-py.sh
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import time
from typing import Dict, List, Tuple

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


def emit(metric: str, value: float, unit: str, rust: Dict[str, float]) -> None:
    line: Dict[str, object] = {
        "bench": "py_overhead", "metric": metric, "value": round(value, 3), "unit": unit,
    }
    if metric in rust:
        line.update(peer="rust", peer_value=round(rust[metric], 3))
    print(json.dumps(line), flush=True)


def rust_round(binary: str) -> Dict[str, float]:
    out = subprocess.run([binary], check=True, capture_output=True, text=True).stdout
    return {d["metric"]: float(d["value"]) for d in map(json.loads, out.splitlines()) if d}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rust-bin", help="the Rust side (ovm-py/examples/py_overhead.rs)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    py_runs: Dict[str, List[float]] = {}
    rust_runs: Dict[str, List[float]] = {}
    for _ in range(args.rounds):
        if args.rust_bin:
            for k, v in rust_round(args.rust_bin).items():
                rust_runs.setdefault(k, []).append(v)
        for k, v in (
            ("state_call_ns", state_calls(5)),
            ("create_start_seq_per_s", create_start_sequential()),
            ("create_start_conc_per_s", create_start_concurrent()),
        ):
            py_runs.setdefault(k, []).append(v)
    rust = {k: statistics.median(v) for k, v in rust_runs.items()}
    py = {k: statistics.median(v) for k, v in py_runs.items()}

    emit("state_call_ns", py["state_call_ns"], "ns", rust)
    if "state_call_ns" in rust:
        emit("state_call_overhead_us", (py["state_call_ns"] - rust["state_call_ns"]) / 1000, "us", {})
    for kind in ("seq", "conc"):
        key = f"create_start_{kind}_per_s"
        emit(key, py[key], "vms/s", rust)
        if key in rust:
            emit(f"create_start_{kind}_ratio_pct", 100 * py[key] / rust[key], "%", {})


if __name__ == "__main__":
    main()
