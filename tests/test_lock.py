"""The locked environment: what requirements.lock holds and how an install is compared with it."""

import sys
import tomllib

from conftest import REPO_ROOT
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

sys.path.insert(0, str(REPO_ROOT / "scripts"))
import lock_diff  # noqa: E402

LOCK = REPO_ROOT / "requirements.lock"


def test_the_lock_pins_every_dependency_with_hashes_and_no_torch_build():
    locked = lock_diff.locked_versions(LOCK)
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    wanted = [Requirement(r) for r in [*project["dependencies"], *project["optional-dependencies"]["dev"]]]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        if name == "torch":
            continue
        assert name in locked, f"{name} is not in the lock: make lock"
        assert requirement.specifier.contains(locked[name]), f"{name}=={locked[name]} outside {requirement}"
    assert not [name for name in locked if lock_diff.NOT_LOCKED.match(name)]
    entries = [line for line in LOCK.read_text().splitlines() if line[:1].isalnum()]
    assert all(line.endswith("\\") for line in entries)  # each followed by its --hash lines


def test_markers_pick_the_entry_for_this_python(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text(
        "# comment\n"
        "numpy==1.0 ; python_full_version < '3.0' \\\n    --hash=sha256:aa\n"
        "numpy==2.0 ; python_full_version >= '3.0' \\\n    --hash=sha256:bb\n"
        "six==1.16.0 \\\n    --hash=sha256:cc\n"
    )
    assert lock_diff.locked_versions(lock) == {"numpy": "2.0", "six": "1.16.0"}


def test_differences_name_changed_missing_and_unlocked_packages():
    locked = {"numpy": "2.0", "six": "1.16.0", "pandas": "3.0"}
    visible = {"numpy": "2.1", "pandas": "3.0", "rich": "14.0", "torch": "2.13.0", "system-only": "1.0"}
    own = {"numpy", "rich", "torch"}  # system-only sits outside this environment: not ours to report
    assert lock_diff.lock_differences(locked, visible, own) == [
        "  ~ numpy 2.0 -> 2.1",
        "  + rich 14.0 (not in the lock)",
        "  - six 1.16.0 (locked, not installed)",
    ]
