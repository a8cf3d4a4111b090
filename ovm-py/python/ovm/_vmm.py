"""A VMM process of the KVM backend: ``python -m ovm._vmm --config ... --api-sock ...``.

The KVM backend runs each VM in a process of its own; this package embeds the VMM, so
the interpreter runs it (it never returns: the process exits with the VM).
"""

import sys

from ovm._ovm import _vmm_main

if __name__ == "__main__":
    _vmm_main(sys.argv[1:])
