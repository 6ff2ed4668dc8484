"""The prepared device check (``scripts/gpu_check.py`` is its entry point; ``scripts/gpu_check.sh`` runs it):
EvoPrune's fused attention on the device, encoder latency, time to first token.

Steps 1 and 2 need torch and transformers only (the lent GPU machines have no lmms-eval and no network), and so
does this module:
1. `check_attention`: `evoprune.attention` in float16, bfloat16 and float32 at CLIP-L's and SigLIP's shapes
   (`SHAPES`), random and peaked attention: the importance's largest relative error against the explicit formula
   in float64, whether the protected set (CTR 0.25) is the same, the output's largest error, and whether a fused
   kernel served it (else the explicit fallback). This is where the CUDA kernels' log-sum-exp conventions are
   checked.
2. Encoder latency, eager (`encoder`, as ``bench_encoder.py`` runs it): `ENCODER_RUNS`.
3. `ttft_step`: time to first token, eager and compiled (`ttft`, as ``ttft_check.py`` runs it: `TTFT_RUNS`). It
   needs the harness's packages (omegaconf, pillow, decord, this repo's transformers): on a lent machine from the
   wheels ``make device-wheels`` downloads (gpu_check.sh installs them when .device-wheels is carried); without
   them it says so.

Each benchmark of these steps is a part of one `Parts` (a failure or the time limit costs only its part; the files
are rewritten after each part).
"""

from __future__ import annotations

from pathlib import Path

import torch

from evoprune import attention
from evoprune.harness.benchmarks import device_targets
from evoprune.harness.benchmarks.encoder import EncoderBench, benchmark_encoder, result_stem
from evoprune.harness.benchmarks.machine import device_label
from evoprune.harness.benchmarks.parts import Parts
from evoprune.harness.common.outputs import write_json, write_text
from evoprune.harness.common.text_tables import markdown_table
from evoprune.merge import protection_levels

SHAPES = {  # (label, heads, tokens, head dim)
    "real": [("CLIP-L/336", 16, 577, 64), ("SigLIP-so400m", 16, 729, 72)],
    "tiny": [("CLIP tiny", 2, 145, 16), ("SigLIP tiny", 2, 144, 16)],
}
ENCODER_RUNS = {  # `EncoderBench` fields per shapes
    "real": [{"tower": "clip"}, {"tower": "siglip", "frames": 64}],
    "tiny": [
        {"tower": "clip", "shapes": "tiny", "repeats": 1, "warmup": 0},
        {"tower": "siglip", "shapes": "tiny", "frames": 2, "repeats": 1, "warmup": 0},
    ],
}
TTFT_RUNS = {  # `ttft.check_ttft` arguments per shapes
    "real": {"models": ["llava15", "llava_video"], "runtimes": ["eager", "compiled"], "repeats": 5},
    "tiny": {"models": ["llava15"], "runtimes": ["eager", "compiled"], "repeats": 1},
}
STEPS = ("attention", "encoder", "ttft")


def check_attention(device: torch.device, shapes: str) -> list[dict]:
    rows = []
    for label, heads, tokens, dim in SHAPES[shapes]:
        for dtype in (torch.float16, torch.bfloat16, torch.float32):
            for peaked in (False, True):
                generator = torch.Generator().manual_seed(0)
                q, k, v = (torch.randn(2, heads, tokens, dim, generator=generator) for _ in range(3))
                if peaked:  # a sink key most queries attend, and sharp rows
                    q = q * 2.0
                    k[:, :, 1] = q.mean(dim=2) * 2.0
                q, k, v = (t.to(device, dtype) for t in (q, k, v))
                scale = dim**-0.5
                fused = attention._fused_with_lse(q, k, v, scale, None) is not None
                with attention.fused_on_cpu():  # on a CPU too: this step checks the fused passes
                    out, importance = attention.attention_with_importance(q, k, v, scale)
                exact_out, exact = attention.explicit_attention(q.double(), k.double(), v.double(), scale)
                error = ((importance.double() - exact).abs() / exact).max().item()
                same = torch.equal(
                    protection_levels(importance.float(), 0.25, 1) > 0, protection_levels(exact.float(), 0.25, 1) > 0
                )
                rows.append(
                    {
                        "shape": label,
                        "dtype": str(dtype).removeprefix("torch."),
                        "attention": "peaked" if peaked else "random",
                        "fused": fused,
                        "importance_max_rel_error": error,
                        "same_protected_set": same,
                        "output_max_abs_error": (out.double() - exact_out).abs().max().item(),
                    }
                )
    return rows


def render(device_name: str, rows: list[dict], tables: list[str], parts: Parts, targets: list[dict]) -> str:
    header = [
        "shape",
        "dtype",
        "attention",
        "fused kernel",
        "importance rel. error",
        "same protected",
        "out abs. error",
    ]
    table = [header]
    for row in rows:
        table.append(
            [
                row["shape"],
                row["dtype"],
                row["attention"],
                "yes" if row["fused"] else "no (explicit)",
                f"{row['importance_max_rel_error']:.1e}",
                "yes" if row["same_protected_set"] else "NO",
                f"{row['output_max_abs_error']:.1e}",
            ]
        )
    lines = [
        f"# Device check on {device_name}",
        "",
        "## Its parts (one that failed or came after the time limit is named here; the rest ran)",
        "",
        parts.markdown(),
        "",
        "## Issue 25's targets (an H100 at the real shapes; from the time to first token below)",
        "",
        device_targets.markdown(targets) if targets else "not judged: the time-to-first-token step did not run",
        "",
        "## EvoPrune's importance beside fused attention vs the explicit formula (float64 reference)",
        "",
        markdown_table(table, left=3) if rows else "not run",
        "",
        "## Encoder latency (eager), from bench_encoder.py; then time to first token, from ttft_check.py",
        "",
        *tables,
    ]
    return "\n".join(lines) + "\n"


def ttft_step(shapes: str, device: str, out: Path, clip: Path | None, parts: Parts) -> tuple[str, list[dict] | None]:
    """Step 3 (`ttft.check_ttft`, its model builds and runs each a part of ``parts``): its table, or why it did not
    run (its imports need the harness's packages: on a lent machine, the wheels `make device-wheels` downloads, which
    gpu_check.sh installs), and its rows (None when it did not run)."""
    try:
        from evoprune.harness.benchmarks import ttft
    except ImportError as err:
        why = f"{type(err).__name__}: {err}"
        parts.skip("time to first token", f"{why}; run `make device-wheels` and carry .device-wheels")
        return f"## Time to first token: not run ({why}); run `make device-wheels` and carry .device-wheels", None
    rows = ttft.check_ttft(shapes, device, out=out, clip=clip, parts=parts, **TTFT_RUNS[shapes])
    if not rows:
        return "## Time to first token: no run completed (see the parts above)", []
    return (out / f"{ttft.result_stem(torch.device(device).type, shapes)}.md").read_text(), rows


def run_device_check(
    shapes: str, device: str, out: Path, steps: list[str], clip: Path | None = None, time_limit: float | None = None
) -> int:
    """Run ``steps``, each benchmark a part of a `Parts` with ``time_limit`` (seconds); write
    <out>/gpu_check_<device>[_tiny].{json,md} after each part (a kill loses only the part running) and print the
    tables last. Returns the exit status: 1 when a part failed or a float32 protected set differs."""
    where = torch.device(device)
    device_name = device_label(where)
    suffix = where.type if shapes == "real" else f"{where.type}_tiny"
    rows: list[dict] = []
    tables: list[str] = []
    targets: list[dict] = []

    def write() -> str:
        record = {"device": device_name, "shapes": shapes, "torch": torch.__version__, "attention": rows}
        write_json(out / f"gpu_check_{suffix}.json", record | {"parts": parts.records, "targets": targets})
        text = render(f"{device_name}, {shapes} shapes", rows, tables, parts, targets)
        write_text(out / f"gpu_check_{suffix}.md", text)
        return text

    parts = Parts(time_limit, on_change=write)
    if "attention" in steps:
        parts.run("fused importance vs the explicit formula", lambda: rows.extend(check_attention(where, shapes)))
    for run in ENCODER_RUNS[shapes] if "encoder" in steps else []:
        bench = EncoderBench(**run, device=device, out=out)
        stem = result_stem(bench.tower, where.type, bench.frames, bench.shapes)

        def encoder(bench=bench, stem=stem) -> None:
            benchmark_encoder(bench)
            tables.append((out / f"{stem}.md").read_text())

        parts.run(f"encoder latency: {stem}", encoder)
    if "ttft" in steps:
        table, ttft_rows = ttft_step(shapes, device, out, clip, parts)
        targets.extend(device_targets.judge(ttft_rows) if ttft_rows is not None else [])
        tables.append(table)
    text = write()
    print(text, end="")
    print(f"\ngpu_check: parts {parts.summary()} Files: {out}/gpu_check_{suffix}.{{json,md}} and beside them.")
    protected = all(row["same_protected_set"] for row in rows if row["dtype"] == "float32")
    return 0 if protected and not parts.named("failed") else 1
