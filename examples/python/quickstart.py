"""Quickstart: a pool, a server, a VM started where placement says, and its history.

Run: python examples/python/quickstart.py [path/to/ovm.db]   (in memory by default)
"""

from __future__ import annotations

import sys

import ovm


def main(db: str = ":memory:") -> None:
    mgr = ovm.Manager.open(db, initiator="quickstart")

    # Every change is a job: wait(timeout=...) returns its result or raises.
    pool = mgr.create_pool("prod").wait(timeout=10)
    for name, size in [("host-1", "cpus=16,memory_mib=65536"), ("host-2", "cpus=8,memory_mib=16384")]:
        pool.add_server(name, size).wait(timeout=30)

    spec = ovm.VmSpec("web-01", vcpus=2, memory_mib=4096, start_priority=1)
    vm = pool.create_vm(spec).wait(timeout=30)

    # Why would each server take it, or not?
    for verdict in vm.explain_start().servers:
        print(f"  {verdict.name}: {verdict.verdict}")

    server = vm.start().wait(timeout=60)
    print(f"{vm.info().name} is {vm.state()} on {server.info().name}")

    # Errors are typed and carry what went wrong to what.
    try:
        vm.delete()
    except ovm.InvalidState as e:
        print(f"refused: {e} (state={e.state}, op={e.op})")

    vm.stop().wait(timeout=60)
    for event in mgr.events(object_id=vm):
        print(f"  {event.time:%H:%M:%S} {event.action:<10} {event.outcome}")


if __name__ == "__main__":
    main(*sys.argv[1:2])
