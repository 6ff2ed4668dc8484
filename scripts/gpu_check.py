"""The prepared device check: EvoPrune's fused attention checked on the device, then encoder latency.

Needs torch and transformers only (the lent GPU machines have no lmms-eval and no network). Steps:
1. `evoprune.attention` on the device, in float16, bfloat16 and float32, at CLIP-L's and SigLIP's
   shapes (heads 16; 577 × 64 and 729 × 72), random and peaked attention: the importance's largest
   relative error against the explicit formula in float64, whether the protected set (CTR 0.25) is
   the same, the output's largest error, and whether a fused kernel served it (else the explicit
   fallback). This is where the CUDA kernels' log-sum-exp conventions are checked.
2. Encoder latency, eager: `bench_encoder.py` for CLIP-L/336 on one image and SigLIP-so400m on 64
   frames (Native and the paper's budgets), which writes its own results/bench_encoder*_<device>.*.

Writes results/gpu_check_<device>.{json,md} and prints the tables last. ``--shapes tiny`` runs the
same steps with tiny towers on whatever device there is (the CPU test: under a minute).

    bash scripts/gpu_check.sh [--shapes real|tiny] [--device cuda|cpu]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_encoder  # noqa: E402

from evoprune import attention  # noqa: E402
from evoprune.harness.outputs import write_json, write_text  # noqa: E402
from evoprune.harness.text_tables import markdown_table  # noqa: E402
from evoprune.merge import protection_levels  # noqa: E402

SHAPES = {  # (label, heads, tokens, head dim)
    "real": [("CLIP-L/336", 16, 577, 64), ("SigLIP-so400m", 16, 729, 72)],
    "tiny": [("CLIP tiny", 2, 145, 16), ("SigLIP tiny", 2, 144, 16)],
}
ENCODER_RUNS = {  # bench_encoder arguments per shapes
    "real": [["--tower", "clip"], ["--tower", "siglip", "--frames", "64"]],
    "tiny": [
        ["--tower", "clip", "--shapes", "tiny", "--repeats", "1", "--warmup", "0"],
        ["--tower", "siglip", "--shapes", "tiny", "--frames", "2", "--repeats", "1", "--warmup", "0"],
    ],
}


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


def render(device_name: str, rows: list[dict], encoder_tables: list[str], seconds: float) -> str:
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
        f"# Device check on {device_name} ({seconds:.0f} s)",
        "",
        "## EvoPrune's importance beside fused attention vs the explicit formula (float64 reference)",
        "",
        markdown_table(table, left=3),
        "",
        "## Encoder latency (eager), from bench_encoder.py",
        "",
        *encoder_tables,
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", choices=sorted(SHAPES), default="real")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=bench_encoder.RESULTS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    started = time.perf_counter()
    rows = check_attention(device, args.shapes)
    encoder_tables = []
    for run in ENCODER_RUNS[args.shapes]:
        stem = bench_encoder.result_stem(run[1], device.type, _frames(run), args.shapes)
        bench_encoder.main([*run, "--device", args.device, "--out", str(args.out)])
        encoder_tables.append((args.out / f"{stem}.md").read_text())
    seconds = time.perf_counter() - started
    suffix = device.type if args.shapes == "real" else f"{device.type}_tiny"
    write_json(
        args.out / f"gpu_check_{suffix}.json",
        {"device": device_name, "torch": torch.__version__, "seconds": seconds, "attention": rows},
    )
    text = render(device_name, rows, encoder_tables, seconds)
    write_text(args.out / f"gpu_check_{suffix}.md", text)
    print(text, end="")
    return 0 if all(row["same_protected_set"] for row in rows if row["dtype"] == "float32") else 1


def _frames(run: list[str]) -> int:
    return int(run[run.index("--frames") + 1]) if "--frames" in run else 1


if __name__ == "__main__":
    sys.exit(main())
