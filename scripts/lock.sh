#!/usr/bin/env bash
# Regenerate requirements.lock (make lock): every package the install resolves, at exact versions with
# their hashes, from pyproject.toml's ranges (the dev extra included), universal across platforms and
# Python versions from 3.11 up. torch itself, and what only a torch build brings (torchvision, triton, nvidia-*,
# cuda-*), are left out: install_env.sh installs the CPU wheel or keeps the machine's CUDA torch.
# Pre-releases are refused (uv would otherwise pick sympy 1.14.0rc1 to satisfy mpmath 1.4). Needs uv (in the dev extra: .venv/bin/uv after make install, or any uv on PATH).
set -euo pipefail
uv="${UV:-$(command -v .venv/bin/uv || command -v uv || true)}"
[ -n "$uv" ] || { echo "error: make lock needs uv (make install puts it in .venv/bin/uv; or pip install uv)" >&2; exit 2; }
torch_pin="torch==2.13.0"
out="${1:-requirements.lock}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "$torch_pin" > "$work/torch.txt"
compile() {
    "$uv" pip compile pyproject.toml --extra dev --universal --python-version 3.11 --index-url https://pypi.org/simple --prerelease disallow \
        -c "$work/torch.txt" --no-header --quiet "$@"
}
# First pass: the whole resolution, to name the packages that only a torch build brings.
compile -o "$work/full.txt"
skip=()
for name in $(grep -oE '^[A-Za-z0-9._-]+==' "$work/full.txt" | tr -d '=' | grep -E '^(torch|torchvision|triton|nvidia-.*|cuda-.*)$'); do
    skip+=(--no-emit-package "$name")
done
{
    echo "# The locked environment (make lock regenerates it; make install installs it with --require-hashes)."
    echo "# Resolved by uv from pyproject.toml (dev extra) with $torch_pin, universal (markers select per platform)."
    echo "# Left out, installed by scripts/install_env.sh or kept from the machine: torch, torchvision, triton,"
    echo "# nvidia-*, cuda-*."
    compile --generate-hashes "${skip[@]}"
} > "$work/lock.txt"
mv "$work/lock.txt" "$out"
echo "wrote $out: $(grep -cE '^[A-Za-z0-9._-]+==' "$out") packages"
