"""accelerate enables FSDP only on GPU-like devices; on CPU (gloo) its state says MULTI_CPU. This turns a MULTI_CPU
state into FSDP when the launcher asked for FSDP, so FSDP2's fully_shard runs on CPU for the tests."""
import os

from accelerate import state as _state
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

_orig = _state.AcceleratorState.__init__


def _init(self, *a, **kw):
    _orig(self, *a, **kw)
    if (
        os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
        and self.distributed_type == DistributedType.MULTI_CPU
    ):
        self.distributed_type = DistributedType.FSDP
        if getattr(self, "fsdp_plugin", None) is None:
            self.fsdp_plugin = kw.get("fsdp_plugin") or FullyShardedDataParallelPlugin()


_state.AcceleratorState.__init__ = _init
