"""Servers on "other machines": real ``ovm-agent`` processes on loopback."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

import ovm

T = 30.0
PASSWORD = "python agent password"
AGENT_BIN = os.environ.get("OVM_AGENT_BIN", "")


class Agent:
    def __init__(self, proc: "subprocess.Popen[str]", url: str, fingerprint: str) -> None:
        self.proc, self.url, self.fingerprint = proc, url, fingerprint


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    if not AGENT_BIN:
        pytest.fail("OVM_AGENT_BIN is not set (scripts/test-python.sh builds ovm-agent)")
    state = tmp_path / "agent"
    env = dict(os.environ, OVM_AGENT_PASSWORD=PASSWORD, OVM_LOG="warn")
    subprocess.run([AGENT_BIN, "init", "--state-dir", str(state)], env=env, check=True, capture_output=True)
    proc = subprocess.Popen(
        [AGENT_BIN, "run", "--hypervisor", "sim", "--sim", "cpus=4,memory_mib=8192",
         "--listen", "127.0.0.1:0", "--state-dir", str(state)],
        stdout=subprocess.PIPE, text=True, env=env,
    )
    assert proc.stdout is not None
    line = json.loads(proc.stdout.readline())
    try:
        yield Agent(proc, "https://" + line["address"], line["fingerprint"])
    finally:
        proc.kill()
        proc.wait()


def test_a_server_behind_an_agent_runs_vms(agent: Agent, tmp_path: Path) -> None:
    assert ovm.agent_fingerprint(agent.url) == agent.fingerprint
    mgr = ovm.Manager.open(str(tmp_path / "m" / "ovm.db"))
    pool = mgr.create_pool("p").wait(timeout=T)
    # Not owned yet: the agent refuses, naming why.
    with pytest.raises(ovm.OvmError) as e:
        pool.add_server("s1", agent=agent.url, fingerprint=agent.fingerprint).wait(timeout=T)
    assert "no owner" in str(e.value)
    with pytest.raises(ovm.OvmError) as e:
        mgr.own_agent(agent.url, agent.fingerprint, "wrong password")
    assert "wrong agent password" in str(e.value)
    # Wrong guesses slow the next attempt down: even the right password waits its turn.
    with pytest.raises(ovm.OvmError) as e:
        mgr.own_agent(agent.url, agent.fingerprint, PASSWORD)
    assert "too many wrong passwords" in str(e.value)
    time.sleep(1.0)
    hello = mgr.own_agent(agent.url, agent.fingerprint, PASSWORD)
    assert hello["hypervisor"] == "sim" and hello["owner"]["name"].startswith("ovm python")
    server = pool.add_server("s1", agent=agent.url, fingerprint=agent.fingerprint).wait(timeout=T)
    info = server.info()
    assert info.agent == ovm.AgentEndpoint(url=agent.url, fingerprint=agent.fingerprint)
    assert info.cpus == 4 and info.hypervisor is ovm.HypervisorKind.SIM
    vm = pool.create_vm(ovm.VmSpec("web", vcpus=1, memory_mib=256)).wait(timeout=T)
    assert vm.start().wait(timeout=T).id == server.id
    assert vm.state() is ovm.VmState.RUNNING and not vm.state_is_stale()
    vm.stop().wait(timeout=T)
    with pytest.raises(ovm.OvmError):
        pool.add_server("s2", agent=agent.url)  # no fingerprint: never trusted blindly

    # The agent dies: the VM's state is the last one known, and says so.
    vm.start().wait(timeout=T)
    agent.proc.kill()
    agent.proc.wait()
    deadline = time.monotonic() + 20
    while not vm.state_is_stale():
        assert time.monotonic() < deadline, "the VM's state never turned stale"
        time.sleep(0.1)
    assert vm.state() is ovm.VmState.RUNNING
    assert server.info().state is ovm.ServerState.UNREACHABLE
