"""Publishing ``dal synth``'s output all at once: a finished temp tree is renamed into place."""

from __future__ import annotations

import os
import shutil
import uuid

from components.common.errors import DalError

SYNTH_JSON = "synth.json"  # marks a directory as dal synth output, which a rerun may replace


def staging_path(output: str) -> str:
    """A hidden temp directory beside ``output``: on the same file system, so publish is a rename."""
    parent, name = os.path.split(output)
    return os.path.join(parent, f".{name}.tmp-{uuid.uuid4().hex[:12]}")


def check_output(output: str) -> None:
    """Refuse to replace anything that is not empty or an earlier dal synth output."""
    if os.path.isdir(output):
        if os.listdir(output) and not os.path.isfile(os.path.join(output, SYNTH_JSON)):
            raise DalError(
                f"output: {output} exists and is not an earlier dal synth output (no {SYNTH_JSON})"
            )
    elif os.path.exists(output):
        raise DalError(f"output: {output} exists and is not a directory")


def publish(tmp: str, output: str) -> None:
    """Move the finished tree into place; an earlier output is swapped out, then deleted."""
    old = None
    if os.path.isdir(output) and os.listdir(output):
        old = f"{tmp}.old"
        os.rename(output, old)
    os.replace(tmp, output)
    if old:
        shutil.rmtree(old, ignore_errors=True)
