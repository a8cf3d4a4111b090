"""The Python side of the `py_overhead` benchmark (see ovm-py/examples/py_overhead.rs).

Does from Python what the Rust example does through the Rust API, and prints one JSON
object per figure with the Rust figure beside it (``peer_value``), read from the file
given with ``--rust``:

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
import time
from typing import Dict, Tuple

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
        creates = [
            await pool.create_vm_async(ovm.VmSpec(f"vm-{i}", vcpus=1, memory_mib=64))
            for i in range(VMS)
        ]
        vms = await asyncio.gather(*(j.wait_async(timeout=T) for j in creates))
        starts = [await vm.start_async() for vm in vms]
        await asyncio.gather(*(j.wait_async(timeout=T) for j in starts))
        return VMS / (time.perf_counter() - t)

    return asyncio.run(run())


def emit(metric: str, value: float, unit: str, rust: Dict[str, float]) -> None:
    line = {"bench": "py_overhead", "metric": metric, "value": round(value, 3), "unit": unit}
    if metric in rust:
        line.update(peer="rust", peer_value=round(rust[metric], 3))
    print(json.dumps(line), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rust", help="JSON lines printed by the Rust side")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rust: Dict[str, float] = {}
    if args.rust:
        with open(args.rust) as f:
            for raw in f:
                if raw.strip():
                    d = json.loads(raw)
                    rust[d["metric"]] = float(d["value"])

    state_ns = state_calls(5)
    emit("state_call_ns", state_ns, "ns", rust)
    if "state_call_ns" in rust:
        emit("state_call_overhead_us", (state_ns - rust["state_call_ns"]) / 1000, "us", {})

    seq = statistics.median(create_start_sequential() for _ in range(args.rounds))
    conc = statistics.median(create_start_concurrent() for _ in range(args.rounds))
    emit("create_start_seq_per_s", seq, "vms/s", rust)
    emit("create_start_conc_per_s", conc, "vms/s", rust)
    for metric, value in (("seq", seq), ("conc", conc)):
        key = f"create_start_{metric}_per_s"
        if key in rust:
            emit(f"create_start_{metric}_ratio_pct", 100 * value / rust[key], "%", {})


if __name__ == "__main__":
    main()
