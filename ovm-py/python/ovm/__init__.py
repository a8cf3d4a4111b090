"""ovm: run virtual machines on pools of servers.

The Python face of the ovm manager (a Rust library): pools, servers, VMs, repositories,
volumes, networks, jobs and the audit history, with typed handles, frozen data classes,
one exception hierarchy and both blocking and asyncio calls::

    import ovm

    mgr = ovm.Manager.open_in_memory()
    pool = mgr.create_pool("prod").wait(timeout=10)
    pool.add_server("host-1", "cpus=32,memory_mib=262144").wait(timeout=30)
    vm = pool.create_vm(ovm.VmSpec("web-01", vcpus=2, memory_mib=4096)).wait(timeout=30)
    server = vm.start().wait(timeout=60)

Every state-changing call returns a :class:`JobHandle`; ``wait(timeout=...)`` raises
:class:`ovm.TimeoutError` when the time is up (it never returns ``None`` for that).
Every blocking call releases the GIL and has an ``_async`` twin returning an awaitable.
"""

import atexit as _atexit

from ovm._errors import (
    Aborted,
    AlreadyExists,
    BackendError,
    Capacity,
    Conflict,
    InvalidSpec,
    InvalidState,
    NotFound,
    OvmError,
    Timeout,
    TimeoutError,
    Unsupported,
)
from ovm._model import (
    BootSource,
    DiskBoot,
    DiskSpec,
    DomainType,
    DpmSettings,
    DrsSettings,
    Assembly,
    Event,
    Explanation,
    HypervisorKind,
    Job,
    JobState,
    JobStep,
    KernelBoot,
    Migration,
    Network,
    NetworkRole,
    NicSpec,
    Outcome,
    PlacementSettings,
    PluginInfo,
    PoolPolicies,
    PowerAction,
    PowerOff,
    PowerOn,
    PreferredMode,
    Progress,
    Rejected,
    Repository,
    ScheduleReport,
    Scored,
    Server,
    ServerPool,
    ServerRole,
    ServerState,
    ServerVerdict,
    StepState,
    StorageCapabilities,
    StorageKind,
    Template,
    TestGuestBoot,
    Verdict,
    Vm,
    VmSpec,
    VmState,
    Volume,
    VolumeFormat,
)
from ovm._ovm import (
    JobHandle,
    Manager,
    PoolHandle,
    ProgressStream,
    Scheduler,
    ServerHandle,
    VmHandle,
    __version__,
    available_backends,
)

from ovm._ovm import _shutdown

# Completions of awaitables run on the Rust runtime's threads: none may touch the
# interpreter once it starts to finalize.
_atexit.register(_shutdown)
del _shutdown

__all__ = [
    "__version__",
    "available_backends",
    # native
    "Manager",
    "PoolHandle",
    "ServerHandle",
    "VmHandle",
    "JobHandle",
    "ProgressStream",
    # errors
    "OvmError",
    "NotFound",
    "AlreadyExists",
    "Conflict",
    "InvalidSpec",
    "InvalidState",
    "Capacity",
    "Unsupported",
    "BackendError",
    "TimeoutError",
    "Timeout",
    "Aborted",
    # model
    "VmState",
    "JobState",
    "StepState",
    "ServerState",
    "ServerRole",
    "HypervisorKind",
    "DomainType",
    "PreferredMode",
    "NetworkRole",
    "VolumeFormat",
    "StorageKind",
    "Outcome",
    "Progress",
    "JobStep",
    "Job",
    "TestGuestBoot",
    "KernelBoot",
    "DiskBoot",
    "BootSource",
    "DiskSpec",
    "NicSpec",
    "VmSpec",
    "Vm",
    "Server",
    "PlacementSettings",
    "DrsSettings",
    "DpmSettings",
    "PoolPolicies",
    "ServerPool",
    "Network",
    "Repository",
    "Volume",
    "Event",
    "Template",
    "Assembly",
    "Rejected",
    "Scored",
    "Verdict",
    "ServerVerdict",
    "Explanation",
    "StorageCapabilities",
    "PluginInfo",
    "Migration",
    "PowerOff",
    "PowerOn",
    "PowerAction",
    "ScheduleReport",
    "Scheduler",
]
