"""The ``sam2`` people backend: a person detector prompts SAM 2's video predictor, which propagates
masks; the detector runs again every ``detect_every`` frames to catch people who enter and to
re-anchor the tracked ones.

The video is cut into chunks of ``detect_every`` frames. At each chunk's first frame the detector's
boxes are matched to the tracked masks (box IoU): a matched track is re-prompted with the fresh
box (no drift), an unmatched track that is still visible is carried over with its mask as the
prompt, and an unmatched box starts a new track. SAM 2 then propagates the chunk. Tracks that
vanish and come back later get joined by the same appearance stitching as the offline backend.

Checkpoints (``<weights_dir>/sam2/``): ``sam2.1_hiera_{tiny,small,base_plus,large}.pt`` from the
SAM 2.1 release (also on the model hub as facebook/sam2.1-hiera-<size>). Quality picks the size
(preview: tiny, standard: base_plus, high: large); ``extra.people.sam2_model`` names another one.
A ``<checkpoint>.json`` beside a checkpoint may give ``{"config": ..., "overrides": [...]}`` (the
tiny test stand-ins use it).
"""

from __future__ import annotations

import json
import logging
from contextlib import nullcontext
from pathlib import Path

import cv2
import numpy as np

from ..pipeline import JobError, RunConfig
from .hfmodels import find_hf_model, hub_offline, weights_root
from .ingest import Frames
from .metrics import box_iou_matrix
from .offline import _stitch, _Track, appearance
from .tracks import Tracks, label_boxes

log = logging.getLogger("troupe.people")

SIZES = {  # size -> (config inside the sam2 package, checkpoint file, hub id)
    "tiny": ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny.pt", "facebook/sam2.1-hiera-tiny"),
    "small": ("configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1_hiera_small.pt", "facebook/sam2.1-hiera-small"),
    "base_plus": ("configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1_hiera_base_plus.pt", "facebook/sam2.1-hiera-base-plus"),
    "large": ("configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1_hiera_large.pt", "facebook/sam2.1-hiera-large"),
}
MAX_OBJECTS_PER_VIDEO = 254  # object o is label value o + 1 in a uint8 label map
BY_QUALITY = {"preview": "tiny", "standard": "base_plus", "high": "large"}
DETECT_EVERY = {"preview": 10, "standard": 5, "high": 3}
RELEASE_URL = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"


def find_sam2(config: RunConfig, settings) -> tuple[str, Path, list[str]]:
    """(config name, checkpoint path, hydra overrides) for the run's SAM 2 model."""
    choice = settings.sam2_model or BY_QUALITY.get(config.quality, "base_plus")
    root = weights_root(config.weights_dir)
    folder = root / "sam2" if root else None
    if Path(choice).is_file():
        ckpt = Path(choice)
    elif choice in SIZES:
        ckpt = folder / SIZES[choice][1] if folder else Path(SIZES[choice][1])
        if not ckpt.is_file() and folder is not None and not settings.sam2_model:
            others = sorted(folder.glob("sam2*.pt"))
            if others:
                log.info("sam2: %s not in %s, using %s", ckpt.name, folder, others[-1].name)
                ckpt = others[-1]
        if not ckpt.is_file():
            ckpt = _download(choice, folder)
    else:
        raise JobError(f"extra.people.sam2_model={choice!r}: not a file nor one of {sorted(SIZES)}")
    side = ckpt.with_suffix(".json")
    if side.is_file():
        d = json.loads(side.read_text())
        return d["config"], ckpt, list(d.get("overrides", []))
    size = next((s for s, (_, f, _) in SIZES.items() if f == ckpt.name), None)
    if size is None:
        raise JobError(f"{ckpt}: unknown SAM 2 checkpoint name; add {side.name} with {{\"config\": ..., \"overrides\": []}}")
    return SIZES[size][0], ckpt, []


def _download(size: str, folder: Path | None) -> Path:
    _, name, hub_id = SIZES[size]
    where = folder or Path("<weights_dir>/sam2")
    try:
        if hub_offline():
            raise ConnectionError("HF_HUB_OFFLINE is set")
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(hub_id, name, cache_dir=str(folder / "hub") if folder else None))
    except Exception as exc:
        raise JobError(
            f"SAM 2 checkpoint {name} not found in {where} and not downloadable here ({type(exc).__name__}). "
            f"Download {RELEASE_URL}{name} (or the hub's {hub_id}) and put it in {where} "
            "(weights_dir is --weights-dir or $TROUPE_WEIGHTS); or use --tracker offline"
        ) from None


def track_sam2(frames: Frames, config: RunConfig, settings, work: Path, progress) -> Tracks:
    try:
        import torch
        from sam2.build_sam import build_sam2_video_predictor
    except ImportError as exc:
        raise JobError(
            f"the sam2 tracker needs the Python package '{exc.name}': install sam2==1.1.0 with "
            "`pip install --no-deps --no-build-isolation sam2==1.1.0` plus hydra-core and iopath (scripts/setup.sh)"
        ) from None
    from .stage import resolve_device
    from .vitpose import PersonDetector

    device = resolve_device(config.device)
    cfg_name, ckpt, overrides = find_sam2(config, settings)
    det_source = find_hf_model("detector", settings.detector, config.weights_dir, allow_hub=True)
    detector = PersonDetector(det_source, device)
    log.info("sam2: %s (%s) on %s, detector %s", ckpt, cfg_name, device, det_source)
    try:
        predictor = build_sam2_video_predictor(cfg_name, str(ckpt), device=device, hydra_overrides_extra=overrides)
    except RuntimeError as exc:
        raise JobError(f"{ckpt}: not a SAM 2 checkpoint matching {cfg_name} ({exc})") from None
    meta = frames.meta
    T = len(frames)
    w, h = meta.size
    every = settings.detect_every or DETECT_EVERY.get(config.quality, 5)
    max_objects = max(1, 2 * config.max_people)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else nullcontext()
    with torch.inference_mode(), autocast:
        state = predictor.init_state(video_path=str(frames.dir / "frames"), offload_video_to_cpu=True,
                                     offload_state_to_cpu=not device.startswith("cuda"))  # fmt: skip
        next_obj = 0
        carried: dict[int, np.ndarray] = {}  # obj -> bool mask at the chunk's first frame
        scores = {}
        for start in range(0, T, every):
            end = min(T - 1, start + every)
            boxes, det_scores = detector(frames[start], settings.detect_threshold, max_det=max_objects)
            predictor.reset_state(state)
            obj_boxes = {o: label_boxes(m.astype(np.uint8), 1)[0] for o, m in carried.items()}
            ids = list(obj_boxes)
            iou = box_iou_matrix(np.array([obj_boxes[o] for o in ids]).reshape(-1, 4), boxes) if ids else np.zeros((0, len(boxes)))
            used = set()
            for k, o in enumerate(ids):
                j = int(np.argmax(iou[k])) if iou.shape[1] else -1
                if j >= 0 and iou[k, j] >= 0.5 and j not in used:
                    used.add(j)
                    predictor.add_new_points_or_box(state, frame_idx=start, obj_id=o, box=boxes[j])
                    scores.setdefault(o, []).append(float(det_scores[j]))
                else:
                    predictor.add_new_mask(state, frame_idx=start, obj_id=o, mask=carried[o])
            for j in range(len(boxes)):
                if j in used or len(state["obj_ids"]) >= max_objects:
                    continue
                if next_obj >= MAX_OBJECTS_PER_VIDEO:
                    log.warning("sam2: %d objects started; no new ones after frame %d", next_obj, start)
                    break
                if ids and iou[:, j].max() >= 0.3:
                    continue  # a tracked person partly overlapping the box: not someone new
                predictor.add_new_points_or_box(state, frame_idx=start, obj_id=next_obj, box=boxes[j])
                scores.setdefault(next_obj, []).append(float(det_scores[j]))
                next_obj += 1
            carried = {}
            if not state["obj_ids"]:
                for t in range(start, end + (end == T - 1)):
                    _write_labels(work, t, {}, h, w)
                progress(end / T, f"frame {end}/{T}: nobody")
                continue
            for t, obj_ids, mask_logits in predictor.propagate_in_video(state, start_frame_idx=start,
                                                                         max_frame_num_to_track=end - start):  # fmt: skip
                logits = mask_logits[:, 0].float().cpu().numpy()
                cur = {int(o): logits[k] for k, o in enumerate(obj_ids)}
                if t == end and end != T - 1:
                    carried = {o: lg > 0 for o, lg in cur.items() if (lg > 0).sum() >= 20}
                    continue  # the next chunk starts here
                _write_labels(work, t, cur, h, w)
            progress(end / T, f"frame {end}/{T}: {len(state['obj_ids'])} people")
    return _to_tracks(frames, work, next_obj, scores)


def _write_labels(work: Path, t: int, logits: dict[int, np.ndarray], h: int, w: int) -> None:
    """Label map (value obj+1, argmax of the positive logits) and each object's own mask area."""
    labels = np.zeros((h, w), np.uint8)
    own = {}
    if logits:
        objs = sorted(logits)
        stack = np.stack([logits[o] for o in objs])
        best = stack.argmax(0)
        pos = stack.max(0) > 0
        lut = np.array([o + 1 for o in objs], np.uint8)
        labels[pos] = lut[best[pos]]
        own = {o: int((logits[o] > 0).sum()) for o in objs}
    cv2.imwrite(str(work / f"sam_{t:06d}.png"), labels)
    (work / f"sam_{t:06d}.json").write_text(json.dumps(own))


def _to_tracks(frames: Frames, work: Path, n_obj: int, det_scores: dict) -> Tracks:
    T = len(frames)
    n = max(n_obj, 1)
    boxes = np.full((n, T, 4), np.nan, np.float32)
    occ = np.full((n, T), np.nan, np.float32)
    tracklets = [_Track(id=o) for o in range(n)]
    for t in range(T):
        labels = cv2.imread(str(work / f"sam_{t:06d}.png"), cv2.IMREAD_UNCHANGED)
        own = {int(k): v for k, v in json.loads((work / f"sam_{t:06d}.json").read_text()).items()}
        boxes[:, t] = label_boxes(labels, n)
        img = None
        for o in np.flatnonzero(np.isfinite(boxes[:, t, 0])):
            m = labels == o + 1
            occ[o, t] = 1.0 - m.sum() / max(own.get(int(o), 0), m.sum(), 1)
            if t % 3 == 0 or not tracklets[o].frames:  # appearance on every third frame is plenty
                img = frames[t] if img is None else img
                x0, y0, x1, y1 = boxes[o, t].astype(int)
                tr = tracklets[o]
                hist = appearance(img[y0:y1, x0:x1], m[y0:y1, x0:x1], (0, 0, x1 - x0, y1 - y0), (y0 + y1) / 2 - y0)
                tr.hist = hist if tr.hist is None else (tr.hist * tr.hist_n + hist) / (tr.hist_n + 1)
                tr.hist_n = min(tr.hist_n + 1, 30)
            if tracklets[o].first_box is None:
                tracklets[o].first_box = boxes[o, t].copy()
            tracklets[o].frames.append(t)
            tracklets[o].box = boxes[o, t].copy()
    alive = [o for o in range(n) if tracklets[o].frames]
    meta = frames.meta
    chains = _stitch([tracklets[o] for o in alive], tuple(meta.size), meta.fps)
    chains = [[alive[i] for i in c] for c in chains]
    m = len(chains)
    lut = np.zeros(256, np.uint8)
    out_boxes = np.full((m, T, 4), np.nan, np.float32)
    out_occ = np.full((m, T), np.nan, np.float32)
    human = np.zeros(m, np.float32)
    for c, chain in enumerate(chains):
        for o in chain:
            lut[o + 1] = c + 1
            sel = np.isfinite(boxes[o, :, 0])
            out_boxes[c, sel] = boxes[o, sel]
            out_occ[c, sel] = occ[o, sel]
        human[c] = float(np.mean([s for o in chain for s in det_scores.get(o, [0.0])]))
    vis = np.isfinite(out_boxes[..., 0])

    def label_fn(t: int) -> np.ndarray:
        return lut[cv2.imread(str(work / f"sam_{t:06d}.png"), cv2.IMREAD_UNCHANGED)]

    log.info("sam2: %d objects joined into %d tracks", len(alive), m)
    return Tracks(boxes=out_boxes, visibility=vis, occlusion=out_occ, scores=vis.astype(np.float32),
                  label_fn=label_fn, names=[f"sam2 objects {'+'.join(map(str, c))}" for c in chains],
                  human_score=human)  # fmt: skip
