"""Which code made a run: the package version and, from a git checkout, the commit and whether
the tree differed from it.

Every MLflow run ``pal`` logs carries these as tags (:data:`TAGS`, named in :mod:`pal.vocabulary`),
and ``pal report`` warns when a study's runs come from more than one code version: trials import
``pal`` when they start, so a study that runs across a code change would otherwise mix versions
silently. Imports no MLflow.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import subprocess
from importlib import metadata
from pathlib import Path

from pal.vocabulary import CODE_VERSION_TAG, COMMIT_TAG, DIRTY_TAG, VERSION_TAG

PACKAGE_VERSION = "0.1.0"
"""``pal.__version__``: the version of this source tree (``pyproject.toml``'s, kept equal), the
``pal.version`` tag when the installed package's metadata is not found."""

# the package version; the checkout's HEAD (absent outside a git checkout); "true" when tracked
# or untracked files differ from HEAD; one comparable word (space-separated when resumed)
TAGS = (VERSION_TAG, COMMIT_TAG, DIRTY_TAG, CODE_VERSION_TAG)

_ROOT = Path(__file__).resolve().parents[1]  # the checkout when pal is installed editable


@functools.cache
def code_version() -> dict[str, str]:
    """The tags of this process's code, computed once (when first asked, near import time).

    ``pal.code_version`` is ``<version>`` outside a checkout, ``<version>+g<commit[:12]>`` on a
    clean one and ``<version>+g<commit[:12]>.dirty<hash[:8]>`` on a dirty one, the hash over
    ``git diff HEAD`` and the untracked files' names and bytes, so two different uncommitted
    states are two versions.
    """
    try:
        version = metadata.version("pal")
    except metadata.PackageNotFoundError:
        version = PACKAGE_VERSION
    tags = {VERSION_TAG: version, CODE_VERSION_TAG: version}
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return tags
    commit = commit.decode().strip()
    diff = _git("diff", "HEAD", "--binary") or b""
    untracked = (_git("ls-files", "--others", "--exclude-standard", "-z") or b"").split(b"\0")
    digest = hashlib.sha256(diff)
    for name in filter(None, untracked):
        digest.update(name)
        with contextlib.suppress(OSError):
            digest.update((_ROOT / name.decode()).read_bytes())
    dirty = bool(diff.strip()) or any(untracked)
    tags[COMMIT_TAG] = commit
    tags[DIRTY_TAG] = "true" if dirty else "false"
    tags[CODE_VERSION_TAG] = f"{version}+g{commit[:12]}" + (
        f".dirty{digest.hexdigest()[:8]}" if dirty else ""
    )
    return tags


def merge_versions(before: str | None, now: str) -> str:
    """The ``pal.code_version`` of a run resumed with code ``now`` that was made with
    ``before`` (space-separated, each version once, in order)."""
    words = (before or "").split()
    return " ".join(words if now in words else [*words, now])


def _git(*args: str) -> bytes | None:
    """``git -C <checkout> args`` output, or ``None`` outside a checkout or without git."""
    if not (_ROOT / ".git").exists() or not (_ROOT / "pal").is_dir():
        return None
    try:
        done = subprocess.run(
            ["git", "-C", str(_ROOT), *args], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout if done.returncode == 0 else None
