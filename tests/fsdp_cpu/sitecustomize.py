# Imported at interpreter start by the processes tests/test_multiprocess.py launches with this folder on
# PYTHONPATH: FSDP on CPU for the sharded-save test (fsdp_on_cpu.py).
import os

if os.environ.get("COTDISTILL_TEST_FSDP_ON_CPU") == "1":
    import fsdp_on_cpu  # noqa: F401
