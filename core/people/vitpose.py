"""Learned models through ``transformers``: a person detector (RT-DETR, DETR, ... any
``AutoModelForObjectDetection`` with a "person" label) and ViTPose 2D keypoints on tracked boxes.

Shapes: images BGR uint8 [H, W, 3]; boxes x0, y0, x1, y1 in image pixels.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from ..pipeline import JobError, RunConfig
from .hfmodels import find_hf_model
from .ingest import Frames
from .tracks import Tracks, empty_keypoints

log = logging.getLogger("troupe.people")

# COCO-WholeBody (133 points) beyond COCO-17: feet, face, hands (names used for extra_keypoints).
WHOLEBODY_EXTRA = (
    ["left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel"]
    + [f"face_{i}" for i in range(68)] + [f"left_hand_{i}" for i in range(21)] + [f"right_hand_{i}" for i in range(21)]
)  # fmt: skip


def load_image_processor(source: str):
    """The model's image processor; without torchvision (which transformers 5's default "fast"
    processors need) its Pillow twin, ``<Name>ImageProcessorPil``, from the same config."""
    import transformers

    try:
        return transformers.AutoImageProcessor.from_pretrained(source)
    except ImportError:
        cfg = json.loads((Path(source) / "preprocessor_config.json").read_text())
        name = str(cfg.get("image_processor_type", "")).removesuffix("Fast").removesuffix("Pil")
        cls = getattr(transformers, name + "Pil", None)
        if cls is None:
            raise JobError(f"{source}: image processor {name!r} needs torchvision, which is not installed") from None
        return cls.from_pretrained(source)


def _torch_device(device: str):
    import torch

    return torch.device(device)


class PersonDetector:
    """``detector(img, threshold)`` -> (boxes [K, 4], scores [K]) of people, best first."""

    def __init__(self, source: str, device: str) -> None:
        try:
            from transformers import AutoModelForObjectDetection
        except ImportError:
            raise JobError("the sam2 tracker needs the Python package 'transformers' (scripts/setup.sh)") from None
        self.processor = load_image_processor(source)
        self.model = AutoModelForObjectDetection.from_pretrained(source).to(_torch_device(device)).eval()
        labels = {int(k): str(v).lower() for k, v in self.model.config.id2label.items()}
        self.person = [k for k, v in labels.items() if v == "person"]
        if not self.person:
            raise JobError(f"detector {source}: no 'person' label in its id2label ({sorted(labels.values())[:10]}...)")
        self.device = device

    def __call__(self, img: np.ndarray, threshold: float = 0.5, max_det: int = 50) -> tuple[np.ndarray, np.ndarray]:
        import torch

        h, w = img.shape[:2]
        inputs = self.processor(images=img[..., ::-1].copy(), return_tensors="pt").to(_torch_device(self.device))
        with torch.inference_mode():
            out = self.model(**inputs)
        res = self.processor.post_process_object_detection(out, threshold=threshold, target_sizes=[(h, w)])[0]
        keep = np.isin(res["labels"].cpu().numpy(), self.person)
        boxes = res["boxes"].float().cpu().numpy()[keep]
        scores = res["scores"].float().cpu().numpy()[keep]
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, w)
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, h)
        order = np.argsort(-scores)
        from .blazepose import nms

        sel = [order[i] for i in nms(boxes[order], scores[order], 0.6)][:max_det]
        ok = [i for i in sel if boxes[i, 2] - boxes[i, 0] >= 2 and boxes[i, 3] - boxes[i, 1] >= 2]
        return boxes[ok], scores[ok]


def find_vitpose(config: RunConfig, settings, required: bool) -> str | None:
    return find_hf_model("vitpose", settings.vitpose, config.weights_dir, allow_hub=required)


def vitpose_keypoints(frames: Frames, tracks: Tracks, source: str, device: str, progress):
    """(keypoints [N, T, 17, 3], extra [N, T, K, 3] or None, extra names) for every visible tracked box."""
    import torch

    try:
        from transformers import VitPoseForPoseEstimation
    except ImportError:
        raise JobError("ViTPose needs the Python package 'transformers' (scripts/setup.sh)") from None
    processor = load_image_processor(source)
    model = VitPoseForPoseEstimation.from_pretrained(source).to(_torch_device(device)).eval()
    experts = int(getattr(model.config.backbone_config, "num_experts", 1) or 1)
    n, T = tracks.num, tracks.num_frames
    kp = empty_keypoints(n, T)
    extra = None
    for t in range(T):
        who = np.flatnonzero(tracks.visibility[:, t])
        if len(who):
            b = tracks.boxes[who, t]
            xywh = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], 1)
            inputs = processor(images=frames[t][..., ::-1].copy(), boxes=[xywh], return_tensors="pt")
            inputs = inputs.to(_torch_device(device))
            if experts > 1:  # ViTPose++: pick the COCO expert
                inputs["dataset_index"] = torch.zeros(len(who), dtype=torch.long, device=_torch_device(device))
            with torch.inference_mode():
                out = model(**inputs)
            res = processor.post_process_pose_estimation(out, boxes=[xywh])[0]
            for i, r in zip(who, res):
                pts = r["keypoints"].float().cpu().numpy()
                sc = r["scores"].float().cpu().numpy()
                full = np.concatenate([pts, sc[:, None]], 1)
                kp[i, t] = full[:17]
                if len(full) > 17:
                    if extra is None:
                        extra = empty_keypoints(n, T, len(full) - 17)
                    extra[i, t] = full[17:]
        progress((t + 1) / T, f"ViTPose {t + 1}/{T}")
    kp[..., 2] = np.clip(kp[..., 2], 0.0, 1.0)
    names: list[str] = []
    if extra is not None:
        extra[..., 2] = np.clip(extra[..., 2], 0.0, 1.0)
        k = extra.shape[2]
        names = WHOLEBODY_EXTRA if k == len(WHOLEBODY_EXTRA) else [f"keypoint_{17 + i}" for i in range(k)]
    log.info("keypoints: ViTPose %s on %d person-frames", source, int(tracks.visibility.sum()))
    return kp, extra, list(names)
