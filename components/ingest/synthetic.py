"""``dal synth``: a synthetic multi-camera dataset written in the raw layout of a real one.

The step: plan the tracklets (``synthetic_plan``), render and write their frames into a hidden
temp directory (``synthetic_write``), add MARS's ``info/`` (``synthetic_mars_info``) and
``synth.json`` (the config and counts), and rename the tree into place (``synthetic_publish``), so
an error publishes nothing. The files are named as the real releases (``synthetic_names``), so the
real readers are exercised.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from typing import Any

from components.common import storage
from components.common.config import to_dict
from components.common.errors import DalError
from components.ingest.synthetic_config import SynthConfig
from components.ingest.synthetic_mars_info import write_mars_info
from components.ingest.synthetic_plan import plan_dataset
from components.ingest.synthetic_publish import SYNTH_JSON, check_output, publish, staging_path
from components.ingest.synthetic_tracklets import plan_counts
from components.ingest.synthetic_write import write_frames

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def run(config: SynthConfig) -> dict[str, Any]:
    started = time.perf_counter()
    output = storage.resolve(config.output)[1]
    check_output(output)
    plan = plan_dataset(config.planned)
    if not plan.tracklets:
        raise DalError("the config selects no tracklets")
    counts = plan_counts(plan)
    tmp = staging_path(output)
    try:
        os.makedirs(tmp)
        if config.layout == "tracklets":
            from components.ingest.synthetic_tracklets_layout import write_tracklets_layout

            write_tracklets_layout(config.planned, tmp, plan)
        elif config.layout == "videos":
            from components.ingest.synthetic_videos import write_videos_layout

            write_videos_layout(config.planned, tmp, plan)
        else:
            write_frames(config, tmp, plan)
        if config.layout == "mars" and config.with_info:
            write_mars_info(tmp, plan)
        storage.write_json(
            os.path.join(tmp, SYNTH_JSON),
            {"generator": "dal synth", "format": FORMAT_VERSION, "config": to_dict(config), "counts": counts},
        )
        check_output(output)  # again: something may have appeared while rendering
        publish(tmp, output)
    except OSError as exc:
        raise DalError(f"output: writing {output} failed ({exc})") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    seconds = time.perf_counter() - started
    summary = {
        "output": output,
        "layout": config.layout,
        **counts,
        "seconds": round(seconds, 2),
        "frames_per_second": round(counts["frames"] / max(seconds, 1e-9), 1),
    }
    log.info("dal synth: %s", summary)
    return summary
