"""Post-training quantization as a student of ``cotdistill run`` (``ptq: {bits: 4|8}``): nothing is trained; the
init_from student's trained model is quantized weight-only (cotdistill/quant.py) into ``final/``."""

from __future__ import annotations

import json
from pathlib import Path

from cotdistill.config import PTQStage
from cotdistill.quant import ptq
from cotdistill.store import write_atomic


def run(cfg: PTQStage) -> dict:
    final = Path(cfg.output_dir) / "final"
    info = ptq(cfg.source, final, cfg.bits)
    summary = {"method": f"ptq int{cfg.bits}", "final_model": str(final), **info}
    write_atomic(Path(cfg.output_dir) / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary
