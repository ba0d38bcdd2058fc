"""Finding learned weights: a local folder first, the model hub on a user's machine second, and one
clear error naming what to download and where to put it when neither works.

Folders under ``RunConfig.weights_dir`` (or ``$TROUPE_WEIGHTS``)::

    detector/        a transformers object detector (save_pretrained layout: config.json, weights,
                     preprocessor_config.json), default hub id PekingU/rtdetr_r50vd_coco_o365
    vitpose/         a transformers ViTPose model, default hub id usyd-community/vitpose-base-simple
    sam2/            SAM 2.1 checkpoints, e.g. sam2.1_hiera_base_plus.pt (see sam2_backend.py)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from ..pipeline import JobError

log = logging.getLogger("troupe.people")

DEFAULT_HUB = {
    "detector": "PekingU/rtdetr_r50vd_coco_o365",
    "vitpose": "usyd-community/vitpose-base-simple",
}


def hub_offline() -> bool:
    """True when the model hub must not be tried (HF_HUB_OFFLINE=1, as on machines without internet)."""
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def weights_root(weights_dir: str | None) -> Path | None:
    root = weights_dir or os.environ.get("TROUPE_WEIGHTS")
    return Path(root) if root else None


def find_hf_model(kind: str, explicit: str, weights_dir: str | None, allow_hub: bool) -> str | None:
    """A folder (or hub id) to ``from_pretrained`` for ``kind`` ("detector" | "vitpose").

    Order: ``explicit`` (a folder or hub id), ``<weights_dir>/<kind>``, the hub's local cache,
    then (``allow_hub``) a download. None when nothing is found and ``allow_hub`` is False."""
    if explicit and Path(explicit).is_dir():
        return explicit
    root = weights_root(weights_dir)
    if not explicit and root is not None and (root / kind / "config.json").is_file():
        return str(root / kind)
    hub_id = explicit or DEFAULT_HUB[kind]
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(hub_id, local_files_only=True, cache_dir=_cache(root))
    except Exception:  # any failure means: not in the cache
        pass
    if not allow_hub:
        return None
    try:
        if hub_offline():
            raise ConnectionError("HF_HUB_OFFLINE is set")
        from huggingface_hub import snapshot_download

        log.info("downloading %s from the model hub", hub_id)
        return snapshot_download(hub_id, cache_dir=_cache(root))
    except Exception as exc:
        where = root / kind if root else Path("<weights_dir>") / kind
        raise JobError(
            f"the {kind} model '{hub_id}' is not here and could not be downloaded ({type(exc).__name__}). "
            f"Download it on a machine with internet (e.g. `hf download {hub_id} --local-dir {where}`) and put the "
            f"folder at {where} (weights_dir is --weights-dir or $TROUPE_WEIGHTS)"
        ) from None


def _cache(root: Path | None) -> str | None:
    return str(root / "hub") if root is not None else None
