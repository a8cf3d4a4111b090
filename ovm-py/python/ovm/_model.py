"""The model: enums and frozen data classes mirroring ``ovm_core::model``.

Every data class is immutable, compares by value and converts to and from plain data:
``to_dict()`` gives the same JSON-compatible shape as the Rust serde form (and as
``ovm --json``): ids as strings, enums as their snake_case names, times as milliseconds
since the Unix epoch. ``from_dict()`` reads that shape back (unknown keys are ignored,
missing keys take the field's default).
"""

from __future__ import annotations

import dataclasses
import enum
import typing
from datetime import datetime, timedelta, timezone
import collections.abc
from typing import (
    Any,
    Callable,
    ClassVar,
    Dict,
    FrozenSet,
    List,
    Mapping,
    Optional,
    Sequence,
    Set,
    Tuple,
    Type,
    TypeVar,
    Union,
)

__all__ = [
    "AgentEndpoint",
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
    "ImportSummary",
]


class _Named(str, enum.Enum):
    """An enum whose values are the Rust snake_case names; compares equal to them."""

    def __str__(self) -> str:
        return str(self.value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}.{self.name}"


class VmState(_Named):
    """The run state of a VM."""

    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"
    MIGRATING = "migrating"
    CRASHED = "crashed"

    @property
    def is_active(self) -> bool:
        """True while the VM holds resources on a server."""
        return self in _ACTIVE_VM_STATES


_ACTIVE_VM_STATES = frozenset(
    {VmState.STARTING, VmState.RUNNING, VmState.PAUSED, VmState.STOPPING, VmState.MIGRATING}
)


class JobState(_Named):
    """Where a job is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    ROLLING_BACK = "rolling_back"
    COMPLETED = "completed"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"

    @property
    def is_finished(self) -> bool:
        """True once the job will not change any more."""
        return self in (JobState.COMPLETED, JobState.ROLLED_BACK, JobState.FAILED)


class StepState(_Named):
    """Where a job step is."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    UNDONE = "undone"


class ServerState(_Named):
    """The operational state of a server."""

    RUNNING = "running"
    MAINTENANCE = "maintenance"
    POWERED_OFF = "powered_off"
    UNREACHABLE = "unreachable"
    DEAD = "dead"


class ServerRole(_Named):
    """A role a server plays in its pool."""

    POOL_MASTER = "pool_master"
    UTILITY = "utility"
    VM_SERVER = "vm_server"


class HypervisorKind(_Named):
    """Which hypervisor a server runs."""

    SIM = "sim"
    KVM = "kvm"
    XEN = "xen"


class DomainType(_Named):
    """How a guest is virtualised."""

    HVM = "hvm"
    PV_HVM = "pv_hvm"
    PV = "pv"
    PVH = "pvh"


class PreferredMode(_Named):
    """Whether preferred servers restrict placement (manual) or only guide it (auto)."""

    AUTO = "auto"
    MANUAL = "manual"


class NetworkRole(_Named):
    """What a network carries."""

    MANAGEMENT = "management"
    LIVE_MIGRATION = "live_migration"
    CLUSTER_HEARTBEAT = "cluster_heartbeat"
    VIRTUAL_MACHINE = "virtual_machine"
    STORAGE = "storage"


class VolumeFormat(_Named):
    """On-disk format of a volume."""

    RAW = "raw"
    QCOW2 = "qcow2"
    VMDK = "vmdk"
    ISO = "iso"


class StorageKind(_Named):
    """What a storage plugin serves."""

    FILE_SERVER = "file_server"
    STORAGE_ARRAY = "storage_array"


class Outcome(_Named):
    """How an action ended."""

    SUCCESS = "success"
    FAILURE = "failure"
    INFO = "info"


# ----- conversion to and from plain data --------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MS = timedelta(milliseconds=1)

_Decode = Callable[[Any], Any]
_Encode = Callable[[Any], Any]
_D = TypeVar("_D", bound="_Data")


def _ms_to_datetime(ms: Any) -> datetime:
    return _EPOCH + timedelta(milliseconds=int(ms))


def _datetime_to_ms(dt: Any) -> int:
    if not isinstance(dt, datetime):
        raise TypeError(f"expected a datetime, got {type(dt).__name__}")
    if dt.tzinfo is None:
        dt = dt.astimezone()  # a naive time is local time, as datetime.timestamp() says
    return int((dt - _EPOCH) // _MS)


def _identity(x: Any) -> Any:
    return x


#: Encoders whose output is what the native module reads from the value itself (a `str`
#: enum member is its name, a tuple an array, a data class its fields): a data class
#: whose fields all have one crosses into Rust without `to_dict()` (see `_DIRECT`).
_PLAIN: Set[Any] = {_identity, list, float}


def _plain(enc: _Encode, *parts: _Encode) -> _Encode:
    """Marks `enc` plain when every encoder it applies is."""
    if all(p in _PLAIN for p in parts):
        _PLAIN.add(enc)
    return enc


def _converters(tp: Any) -> Tuple[_Decode, _Encode]:
    """How to read and write a value of annotated type `tp`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Union:
        members = [a for a in args if a is not type(None)]
        if len(members) == 1:  # Optional[X]
            dec, enc = _converters(members[0])
            if dec is _identity and enc is _identity:
                return _identity, _identity
            return (
                lambda v: None if v is None else dec(v),
                _plain(lambda v: None if v is None else enc(v), enc),
            )
        tagged = [a for a in members if isinstance(a, type) and issubclass(a, _Data)]
        if len(tagged) == len(members) and all(a._TAG for a in tagged):
            return _tagged_converters(tagged)
        raise TypeError(f"cannot convert {tp!r}")
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            dec, enc = _converters(args[0])
            if dec is _identity and enc is _identity:
                return tuple, list
            return (
                lambda v: tuple(dec(x) for x in v),
                _plain(lambda v: [enc(x) for x in v], enc),
            )
        pairs = [_converters(a) for a in args]
        return (
            lambda v: tuple(d(x) for (d, _), x in zip(pairs, v)),
            _plain(lambda v: [e(x) for (_, e), x in zip(pairs, v)], *(e for _, e in pairs)),
        )
    if origin is collections.abc.Sequence:  # an input field: stored as a tuple
        dec, enc = _converters(args[0])
        if dec is _identity and enc is _identity:
            return tuple, list
        return (
            lambda v: tuple(dec(x) for x in v),
            _plain(lambda v: [enc(x) for x in v], enc),
        )
    if origin is frozenset:
        dec, enc = _converters(args[0])
        return (
            lambda v: frozenset(dec(x) for x in v),
            lambda v: sorted(enc(x) for x in v),
        )
    if tp is Any:
        return _identity, _identity
    if tp is datetime:
        return _ms_to_datetime, _datetime_to_ms
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        enum_type = tp
        encode_enum: _Encode = lambda v: v.value if type(v) is enum_type else enum_type(v).value
        if issubclass(enum_type, (str, int)):
            _PLAIN.add(encode_enum)  # a member is its value to the native module
        return (lambda v: enum_type(v), encode_enum)
    if isinstance(tp, type) and issubclass(tp, _Data):
        data_type = tp
        return data_type.from_dict, _plain(lambda v: v.to_dict())
    if tp is float:
        return float, float
    if tp in (int, str, bool):
        return _identity, _identity
    raise TypeError(f"cannot convert {tp!r}")


def _tagged_converters(classes: List[Type[_Data]]) -> Tuple[_Decode, _Encode]:
    """A union of data classes told apart by a tag key (serde's internally tagged enums)."""
    key = classes[0]._TAG_KEY
    by_tag = {c._TAG: c for c in classes}

    def decode(v: Any) -> Any:
        if isinstance(v, _Data):
            return v
        tag = v.get(key)
        cls = by_tag.get(tag)
        if cls is None:
            raise ValueError(f"unknown {key} {tag!r}; expected one of {sorted(by_tag)}")
        return cls.from_dict(v)

    return decode, _plain(lambda v: v.to_dict())


class _Data:
    """Base of the data classes: conversion to and from plain data."""

    #: For members of a tagged union: the tag key and this class's tag.
    _TAG_KEY: ClassVar[str] = "type"
    _TAG: ClassVar[str] = ""
    _FIELDS: ClassVar[Optional[List[Tuple[str, _Decode, _Encode]]]] = None
    #: How the native module reads an instance without ``to_dict()``: the tag key and
    #: tag ("" when untagged) and the field names; None when a field needs its encoder
    #: (times, sets). Set for every data class when the module is loaded.
    _DIRECT: ClassVar[Optional[Tuple[str, str, Tuple[str, ...]]]] = None

    @classmethod
    def _fields(cls) -> List[Tuple[str, _Decode, _Encode]]:
        # Computed once per class: the annotations resolved, a converter per field.
        found = cls.__dict__.get("_FIELDS")
        if found is None:
            hints = typing.get_type_hints(cls)
            found = []
            for f in dataclasses.fields(cls):  # type: ignore[arg-type]
                dec, enc = _converters(hints[f.name])
                found.append((f.name, dec, enc))
            cls._FIELDS = found
        return found

    @classmethod
    def from_dict(cls: Type[_D], data: Mapping[str, Any]) -> _D:
        """Reads the plain-data form (as produced by ``to_dict`` or the Rust serde form)."""
        kwargs: Dict[str, Any] = {}
        for name, dec, _ in cls._fields():
            if name in data:
                kwargs[name] = dec(data[name])
        return cls(**kwargs)

    def to_dict(self) -> Dict[str, Any]:
        """The plain-data form: JSON-compatible, the shape of the Rust serde form."""
        encode = type(self).__dict__.get("_ENCODE")
        if encode is None:
            encode = type(self)._make_encoder()
        return encode(self)

    @classmethod
    def _make_encoder(cls) -> Callable[[Any], Dict[str, Any]]:
        # One function per class, made once, building the dict in one expression with
        # the fields that need no conversion read directly (as `dataclasses` makes its
        # methods): specs cross into Rust on every call, so this is on the hot path.
        namespace: Dict[str, Any] = {}
        items = []
        if cls._TAG:
            items.append(f"{cls._TAG_KEY!r}: {cls._TAG!r}")
        for i, (name, _, enc) in enumerate(cls._fields()):
            if enc is _identity:
                items.append(f"{name!r}: self.{name}")
            else:
                namespace[f"_enc{i}"] = enc
                items.append(f"{name!r}: _enc{i}(self.{name})")
        source = "def encode(self):\n    return {" + ", ".join(items) + "}\n"
        exec(source, namespace)
        encode: Callable[[Any], Dict[str, Any]] = namespace["encode"]
        setattr(cls, "_ENCODE", encode)
        return encode


def _freeze(obj: Any, name: str, kind: Callable[[Any], Any]) -> None:
    """Normalises a collection field (a list becomes a tuple, a set a frozenset)."""
    value = getattr(obj, name)
    if not isinstance(value, (tuple, frozenset)):
        object.__setattr__(obj, name, kind(value))


# ----- jobs ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Progress(_Data):
    """How far a job has come."""

    #: Percent complete, 0–100.
    percent: float = 0.0
    #: Steps done.
    steps_done: int = 0
    #: Steps in all.
    steps_total: int = 0


@dataclasses.dataclass(frozen=True)
class JobStep(_Data):
    """One named step of a job."""

    name: str
    state: StepState = StepState.PENDING


@dataclasses.dataclass(frozen=True)
class Job(_Data):
    """A job record: one state-changing operation with its steps, progress and outcome."""

    id: str
    #: What it does (``vm.start``, ``pool.create``, ...).
    kind: str
    #: One line for people: "start vm web-01".
    description: str
    state: JobState
    #: The kind and id of the object it works on.
    target: Optional[Tuple[str, str]] = None
    #: Who started it.
    initiator: str = ""
    steps: Tuple[JobStep, ...] = ()
    progress: Progress = Progress()
    abort_requested: bool = False
    created_at: Optional[datetime] = None
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None
    #: Why it did not complete.
    error: Optional[str] = None
    #: What could not be undone (state ``failed``).
    rollback_errors: Tuple[str, ...] = ()
    #: The job's result as plain data (e.g. the id it created).
    result: Any = None

    def __post_init__(self) -> None:
        _freeze(self, "steps", tuple)
        _freeze(self, "rollback_errors", tuple)


# ----- VMs -------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TestGuestBoot(_Data):
    """Boot the backend's bundled test guest running the workload named by ``cmdline``
    (``idle``, ``dirty=64,span=32``, ``kv``)."""

    __test__: ClassVar[bool] = False  # not a pytest test class
    _TAG: ClassVar[str] = "test_guest"
    cmdline: str = "idle"


@dataclasses.dataclass(frozen=True)
class KernelBoot(_Data):
    """Direct kernel boot."""

    _TAG: ClassVar[str] = "kernel"
    kernel: str
    initrd: Optional[str] = None
    cmdline: str = ""


@dataclasses.dataclass(frozen=True)
class DiskBoot(_Data):
    """Boot from the first disk (bootloader)."""

    _TAG: ClassVar[str] = "disk"


#: How a VM boots.
BootSource = Union[TestGuestBoot, KernelBoot, DiskBoot]


@dataclasses.dataclass(frozen=True)
class DiskSpec(_Data):
    """A virtual disk of a VM."""

    #: The id of the volume backing the disk.
    volume: str
    read_only: bool = False
    #: Guest device name (``xvda``, ``vda``); the backend's default if None.
    device: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class NicSpec(_Data):
    """A virtual NIC of a VM."""

    #: The id of the network it connects to.
    network: str
    #: MAC address (``52:54:00:...``); generated if None.
    mac: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class VmSpec(_Data):
    """What a VM is. ``max_memory_mib`` defaults to ``memory_mib``."""

    name: str
    vcpus: int = 1
    memory_mib: int = 512
    max_memory_mib: Optional[int] = None
    domain_type: DomainType = DomainType.PV_HVM
    boot: BootSource = TestGuestBoot()
    #: Virtual disks (any sequence; kept as a tuple).
    disks: Sequence[DiskSpec] = ()
    #: Virtual NICs (any sequence; kept as a tuple).
    nics: Sequence[NicSpec] = ()
    #: Restart elsewhere when its server fails (if the pool has HA too).
    ha_enabled: bool = False
    #: Ids of preferred servers (any sequence; kept as a tuple).
    preferred_servers: Sequence[str] = ()
    preferred_mode: PreferredMode = PreferredMode.AUTO
    #: Start order: lower starts first (HA restarts, assemblies).
    start_priority: int = 0
    #: VMs sharing an affinity group are kept on one server.
    affinity_group: Optional[str] = None
    #: VMs sharing an anti-affinity group are kept on different servers.
    anti_affinity_group: Optional[str] = None

    def __post_init__(self) -> None:
        if self.max_memory_mib is None:
            object.__setattr__(self, "max_memory_mib", self.memory_mib)
        _freeze(self, "disks", tuple)
        _freeze(self, "nics", tuple)
        _freeze(self, "preferred_servers", tuple)
        if isinstance(self.domain_type, str) and not isinstance(self.domain_type, DomainType):
            object.__setattr__(self, "domain_type", DomainType(self.domain_type))
        if isinstance(self.preferred_mode, str) and not isinstance(
            self.preferred_mode, PreferredMode
        ):
            object.__setattr__(self, "preferred_mode", PreferredMode(self.preferred_mode))


@dataclasses.dataclass(frozen=True)
class Vm(_Data):
    """A VM as the manager records it."""

    id: str
    #: The id of the pool it lives in.
    pool: str
    spec: VmSpec
    state: VmState
    #: The id of the server it runs on (or last ran on).
    server: Optional[str] = None
    #: When it was last migrated.
    last_moved: Optional[datetime] = None

    @property
    def name(self) -> str:
        """The VM's name (``spec.name``)."""
        return self.spec.name


# ----- servers and pools ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class AgentEndpoint(_Data):
    """Where a server's agent listens, and the certificate it must present."""

    #: ``https://HOST:PORT``.
    url: str
    #: SHA-256 fingerprint of the agent's certificate, pinned when the server was added.
    fingerprint: str


@dataclasses.dataclass(frozen=True)
class Server(_Data):
    """A hypervisor host."""

    id: str
    name: str
    #: How to reach it (for the simulator: ``cpus=..,memory_mib=..``).
    address: str
    hypervisor: HypervisorKind
    cpus: int
    memory_mib: int
    roles: FrozenSet[ServerRole] = frozenset()
    state: ServerState = ServerState.RUNNING
    #: The id of its pool.
    pool: Optional[str] = None
    #: Ids of the networks it is connected to.
    networks: FrozenSet[str] = frozenset()
    #: The agent serving it, for a server on another machine.
    agent: Optional[AgentEndpoint] = None

    def __post_init__(self) -> None:
        _freeze(self, "roles", frozenset)
        _freeze(self, "networks", frozenset)


@dataclasses.dataclass(frozen=True)
class PlacementSettings(_Data):
    """Placement settings of a pool."""

    memory_overcommit: float = 1.0
    cpu_overcommit: float = 4.0
    memory_weight: float = 1.0
    cpu_weight: float = 1.0
    network_weight: float = 0.5
    ha_host_failures: int = 1


@dataclasses.dataclass(frozen=True)
class DrsSettings(_Data):
    """Distributed Resource Scheduler settings of a pool."""

    enabled: bool = False
    threshold_pct: float = 80.0
    max_moves: int = 8
    hold_secs: int = 600
    interval_secs: int = 120


@dataclasses.dataclass(frozen=True)
class DpmSettings(_Data):
    """Dynamic Power Management settings of a pool."""

    enabled: bool = False
    low_pct: float = 45.0
    high_pct: float = 81.0
    min_servers: int = 1


@dataclasses.dataclass(frozen=True)
class PoolPolicies(_Data):
    """The policies of a pool."""

    placement: PlacementSettings = PlacementSettings()
    drs: DrsSettings = DrsSettings()
    dpm: DpmSettings = DpmSettings()


@dataclasses.dataclass(frozen=True)
class ServerPool(_Data):
    """A server pool: servers sharing storage and networks, among which VMs move."""

    id: str
    name: str
    #: Ids of its servers.
    servers: Tuple[str, ...] = ()
    #: Ids of its repositories.
    repositories: Tuple[str, ...] = ()
    ha_enabled: bool = False
    policies: PoolPolicies = PoolPolicies()
    max_servers: int = 32

    def __post_init__(self) -> None:
        _freeze(self, "servers", tuple)
        _freeze(self, "repositories", tuple)


# ----- networks and storage ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Network(_Data):
    """A network: roles, VLAN and the ports it uses on each server."""

    id: str
    name: str
    pool: Optional[str] = None
    roles: FrozenSet[NetworkRole] = frozenset()
    #: 802.1Q VLAN id (1..=4094), untagged if None.
    vlan: Optional[int] = None
    bond_ports: Tuple[str, ...] = ()
    bridge: Optional[str] = None

    def __post_init__(self) -> None:
        _freeze(self, "roles", frozenset)
        _freeze(self, "bond_ports", tuple)


@dataclasses.dataclass(frozen=True)
class Repository(_Data):
    """A storage repository: where virtual disks, templates and ISOs live."""

    id: str
    name: str
    #: The Storage Connect plugin that serves it.
    plugin: str
    location: str
    pool: Optional[str] = None
    capacity_bytes: int = 0
    free_bytes: int = 0


@dataclasses.dataclass(frozen=True)
class Volume(_Data):
    """A volume (virtual disk) in a repository."""

    id: str
    repo: str
    name: str
    size_bytes: int
    allocated_bytes: int = 0
    format: VolumeFormat = VolumeFormat.RAW
    path: Optional[str] = None
    parent: Optional[str] = None
    created_at: Optional[datetime] = None


@dataclasses.dataclass(frozen=True)
class StorageCapabilities(_Data):
    """What a storage plugin can do."""

    thin_provisioning: bool = False
    reflink_clone: bool = False
    copy_clone: bool = False
    snapshot: bool = False
    resize: bool = False
    shared: bool = False
    import_formats: Tuple[VolumeFormat, ...] = ()


@dataclasses.dataclass(frozen=True)
class PluginInfo(_Data):
    """A registered Storage Connect plugin."""

    name: str
    version: str
    kind: StorageKind
    capabilities: StorageCapabilities = StorageCapabilities()


# ----- scheduling (DRS and DPM) ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Migration(_Data):
    """A live migration DRS or DPM proposes (ids of the VM and servers)."""

    vm: str
    #: From this server.
    from_: str
    #: To this server.
    to: str
    #: Why, for people.
    reason: str = ""

    # `from` is a keyword in Python: the field is `from_`, the plain-data key `from`.
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Migration":
        return cls(vm=data["vm"], from_=data["from"], to=data["to"], reason=data.get("reason", ""))

    def to_dict(self) -> Dict[str, Any]:
        return {"vm": self.vm, "from": self.from_, "to": self.to, "reason": self.reason}


@dataclasses.dataclass(frozen=True)
class PowerOff(_Data):
    """DPM: move these VMs away, then power the server off."""

    _TAG_KEY: ClassVar[str] = "action"
    _TAG: ClassVar[str] = "power_off"
    server: str
    #: The VMs' new homes.
    evacuate: Tuple[Migration, ...] = ()
    reason: str = ""

    def __post_init__(self) -> None:
        _freeze(self, "evacuate", tuple)


@dataclasses.dataclass(frozen=True)
class PowerOn(_Data):
    """DPM: power the server on."""

    _TAG_KEY: ClassVar[str] = "action"
    _TAG: ClassVar[str] = "power_on"
    server: str
    reason: str = ""


#: A power action DPM proposes (the ``action`` key tells which).
PowerAction = Union[PowerOff, PowerOn]


def _power_action_from_dict(data: Mapping[str, Any]) -> PowerAction:
    """Reads a power action's plain-data form."""
    action: PowerAction = _tagged_converters([PowerOff, PowerOn])[0](data)
    return action


@dataclasses.dataclass(frozen=True)
class ScheduleReport(_Data):
    """What one DRS or DPM pass did: the rest went on where something failed."""

    migrated: Tuple[Migration, ...] = ()
    #: Ids of the servers powered off.
    powered_off: Tuple[str, ...] = ()
    #: Ids of the servers powered on.
    powered_on: Tuple[str, ...] = ()
    errors: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for name in ("migrated", "powered_off", "powered_on", "errors"):
            _freeze(self, name, tuple)


# ----- templates -------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Template(_Data):
    """A template: a VM spec and its disks, from which VMs are made."""

    id: str
    name: str
    #: The id of the repository holding its disks.
    repo: str
    spec: VmSpec
    #: Ids of its disk volumes, in order.
    volumes: Tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        _freeze(self, "volumes", tuple)


@dataclasses.dataclass(frozen=True)
class Assembly(_Data):
    """Several templates with their networks and start order (an OVF VirtualSystemCollection)."""

    id: str
    name: str
    repo: str
    #: Ids of its member templates, in start order.
    templates: Tuple[str, ...] = ()
    #: Ids of the networks its members connect to.
    networks: Tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        _freeze(self, "templates", tuple)
        _freeze(self, "networks", tuple)


@dataclasses.dataclass(frozen=True)
class ImportSummary(_Data):
    """What an OVF import made (the result of ``Manager.import_ovf``)."""

    #: Names of the templates made, in start order for an assembly.
    templates: Tuple[str, ...] = ()
    #: The assembly's name, for a multi-VM package.
    assembly: Optional[str] = None
    #: Warnings about the descriptor, the package or the mapping.
    warnings: Tuple[str, ...] = ()
    #: What the package asks for that ovm does not honour, as ``template: what``.
    not_honoured: Tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _freeze(self, "templates", tuple)
        _freeze(self, "warnings", tuple)
        _freeze(self, "not_honoured", tuple)


# ----- history and placement --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Event(_Data):
    """One entry of the audit history: who did what to which object, when, how it ended."""

    seq: int
    time: datetime
    initiator: str
    object_kind: str
    object_id: str
    #: The action (``vm.start``, ``vm.crashed``, ...).
    action: str
    outcome: Outcome
    detail: str = ""
    #: The id of the job it belongs to.
    job: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Rejected(_Data):
    """A server fails a hard constraint."""

    _TAG_KEY: ClassVar[str] = "verdict"
    _TAG: ClassVar[str] = "rejected"
    reason: str


@dataclasses.dataclass(frozen=True)
class Scored(_Data):
    """A server passes every constraint; a higher score is better."""

    _TAG_KEY: ClassVar[str] = "verdict"
    _TAG: ClassVar[str] = "scored"
    score: float


#: Why a server was not chosen, or how it scored.
Verdict = Union[Rejected, Scored]


@dataclasses.dataclass(frozen=True)
class ServerVerdict(_Data):
    """One server's verdict in an explanation."""

    server: str
    name: str
    verdict: Verdict


@dataclasses.dataclass(frozen=True)
class Explanation(_Data):
    """Why a placement came out as it did: the chosen server and every server's verdict."""

    chosen: Optional[str] = None
    servers: Tuple[ServerVerdict, ...] = ()

    def __post_init__(self) -> None:
        _freeze(self, "servers", tuple)


# ----- construction ------------------------------------------------------------------------


def _fast_init(cls: Type[_Data]) -> Callable[..., None]:
    """An ``__init__`` for a frozen data class, equal in signature to the one
    ``dataclasses`` makes, that fills the instance's ``__dict__`` directly.

    The generated one assigns each field through ``object.__setattr__`` (frozen classes
    refuse plain assignment): ~0.3 µs a field, several µs for a ``VmSpec`` — paid on every
    spec built and every record read back from Rust.
    """
    namespace: Dict[str, Any] = {}
    params = []
    body = ["    _d = self.__dict__"]
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if f.default_factory is not dataclasses.MISSING or not f.init:
            raise TypeError(f"{cls.__name__}.{f.name}: only plain defaults are supported")
        if f.default is dataclasses.MISSING:
            params.append(f.name)
        else:
            namespace[f"_default_{f.name}"] = f.default
            params.append(f"{f.name}=_default_{f.name}")
        body.append(f"    _d[{f.name!r}] = {f.name}")
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    exec(f"def __init__(self, {', '.join(params)}):\n" + "\n".join(body) + "\n", namespace)
    init: Callable[..., None] = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    return init


def _direct_layout(cls: Type[_Data]) -> Optional[Tuple[str, str, Tuple[str, ...]]]:
    fields = cls._fields()
    if not all(enc in _PLAIN for _, _, enc in fields):
        return None
    return (cls._TAG_KEY if cls._TAG else "", cls._TAG, tuple(name for name, _, _ in fields))


for _cls in list(globals().values()):
    if isinstance(_cls, type) and issubclass(_cls, _Data) and "__dataclass_fields__" in _cls.__dict__:
        setattr(_cls, "__init__", _fast_init(_cls))
        _cls._DIRECT = _direct_layout(_cls)
del _cls
