"""Predicted step times on every shipped datasheet GPU profile, in one table.

Llama-3-8B on each single-device profile (TP1) and Llama-3-70B on each node that hosts TP4 / TP8:
decode step time at batch 1 and batch 64 (every sequence at 1,024 tokens of context) and the
prefill time of one 2,048-token prompt, from `sim.cost_model.CostModel.decode_time` /
`prefill_time`. A configuration whose weights + one max-length sequence of KV do not fit
(`sim.report.catalog.fits_report`) shows "no fit"; a batch-64 figure marked "*" is for a batch
whose KV (64 x 1,025 tokens) exceeds the memory left after the weights.

Usage: python benchmarks/datasheet_table.py [PROFILES_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sim.cost_model import CostModel  # noqa: E402
from sim.spec.model import ModelSpec, get_preset  # noqa: E402
from sim.spec.profile import REPO_PROFILES_DIR, Profile, load_profile  # noqa: E402
from sim.report.catalog import fits_report  # noqa: E402

CONTEXT = 1024
PROMPT = 2048
BATCHES = (1, 64)


def gpu_datasheet_profiles(folder: Path) -> list[Profile]:
    profiles = [load_profile(p) for p in sorted(folder.glob("*.json"))]
    return [p for p in profiles if p.source == "datasheet" and p.device.kind == "gpu"]


def row(model: ModelSpec, prof: Profile, tp: int) -> list[str]:
    fit = fits_report(model, prof, tp)
    head = [prof.name, model.name, str(tp)]
    if not fit["fits"]:
        return head + ["no fit"] + [""] * (len(BATCHES) + 2)
    cm = CostModel(model, prof, tp)
    cells = []
    for batch in BATCHES:
        ms = cm.decode_time(batch, CONTEXT) * 1e3
        short = batch * (CONTEXT + 1) > fit["kv_capacity_tokens"]
        cells.append(f"{ms:.2f}{'*' if short else ''}")
    tok_s = BATCHES[-1] / cm.decode_time(BATCHES[-1], CONTEXT)
    return head + ["yes"] + cells + [f"{tok_s:,.0f}", f"{cm.prefill_time(PROMPT) * 1e3:.1f}"]


def table(folder: Path = REPO_PROFILES_DIR) -> str:
    small, large = get_preset("llama-3-8b"), get_preset("llama-3-70b")
    profiles = gpu_datasheet_profiles(folder)
    rows = [row(small, p, 1) for p in profiles if p.device.count == 1]
    for tp in (4, 8):
        rows += [row(large, p, tp) for p in profiles if p.device.count >= tp]
    header = ["profile", "model", "TP", "fits", *(f"decode b{b} ms" for b in BATCHES),
              f"b{BATCHES[-1]} tok/s", f"prefill {PROMPT // 1024}k ms"]
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths)),
             "-|-".join("-" * w for w in widths)]
    for r in rows:
        lines.append(" | ".join(c.ljust(w) if i < 4 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
    notes = [f"decode: one step of a batch whose sequences each hold {CONTEXT} tokens of context; "
             f"prefill: one {PROMPT}-token prompt; bf16 weights and KV.",
             "* the batch's KV does not fit in the memory left after the weights (90% utilisation).",
             "Datasheet profiles (method v1, profiles/README.md): predictions, not measurements."]
    return "\n".join(lines + [""] + notes)


if __name__ == "__main__":
    print(table(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO_PROFILES_DIR))
