"""Tiny randomly initialised stand-ins of the learned people models, so the real loading and
inference code (SAM 2's video predictor, a transformers detector, ViTPose) runs in CI and on a
GPU machine without downloads. Their outputs are meaningless: they test plumbing, not accuracy.

``python -m core.people.testmodels --out DIR`` writes, in the ``weights_dir`` layout::

    DIR/sam2/sam2.1_hiera_tiny.pt (+ .json: config and overrides: 256 px, a 5-block Hiera)
    DIR/detector/     RT-DETR, 2 labels (person, other), a few hundred thousand parameters
    DIR/vitpose/      ViTPose, 17 keypoints, 64x48 input
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

SAM2_TINY_OVERRIDES = [
    "++model.image_size=256",
    "++model.image_encoder.trunk.embed_dim=16",
    "++model.image_encoder.trunk.stages=[1,1,2,1]",
    "++model.image_encoder.trunk.global_att_blocks=[3]",
    "++model.image_encoder.trunk.window_pos_embed_bkg_spatial_size=[4,4]",
    "++model.image_encoder.neck.backbone_channel_list=[128,64,32,16]",
    "++model.memory_attention.num_layers=1",
    "++model.memory_attention.layer.dim_feedforward=64",
]
SAM2_TINY_CONFIG = "configs/sam2.1/sam2.1_hiera_t.yaml"


def make_sam2(folder: Path, seed: int = 0) -> Path:
    import sam2  # noqa: F401  (registers its config module with hydra)
    import torch
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    torch.manual_seed(seed)
    cfg = compose(config_name=SAM2_TINY_CONFIG, overrides=SAM2_TINY_OVERRIDES)
    OmegaConf.resolve(cfg)
    model = instantiate(cfg.model, _recursive_=True)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sam2.1_hiera_tiny.pt"
    torch.save({"model": model.state_dict()}, path)
    path.with_suffix(".json").write_text(json.dumps({"config": SAM2_TINY_CONFIG, "overrides": SAM2_TINY_OVERRIDES}, indent=1))
    return path


def make_detector(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        RTDetrConfig,
        RTDetrForObjectDetection,
        RTDetrImageProcessorPil,
        RTDetrResNetConfig,
    )

    torch.manual_seed(seed)
    backbone = RTDetrResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1],
                                  layer_type="basic", out_features=["stage2", "stage3", "stage4"])  # fmt: skip
    cfg = RTDetrConfig(
        backbone_config=backbone, encoder_hidden_dim=32, encoder_in_channels=[32, 64, 128], d_model=32,
        encoder_ffn_dim=64, decoder_ffn_dim=64, decoder_layers=1, encoder_layers=1, num_queries=30,
        decoder_attention_heads=2, encoder_attention_heads=2, decoder_in_channels=[32, 32, 32], num_denoising=0,
        num_labels=2, id2label={0: "person", 1: "other"}, label2id={"person": 0, "other": 1},
    )  # fmt: skip
    RTDetrForObjectDetection(cfg).save_pretrained(folder)
    RTDetrImageProcessorPil(size={"height": 160, "width": 160}).save_pretrained(folder)
    return folder


def make_vitpose(folder: Path, seed: int = 0) -> Path:
    import torch
    from transformers import (
        VitPoseBackboneConfig,
        VitPoseConfig,
        VitPoseForPoseEstimation,
        VitPoseImageProcessorPil,
    )

    torch.manual_seed(seed)
    backbone = VitPoseBackboneConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                     image_size=[64, 48], patch_size=[16, 16])  # fmt: skip
    VitPoseForPoseEstimation(VitPoseConfig(backbone_config=backbone, num_labels=17)).save_pretrained(folder)
    VitPoseImageProcessorPil(size={"height": 64, "width": 48}).save_pretrained(folder)
    return folder


def make_all(out: Path | str) -> Path:
    out = Path(out)
    make_sam2(out / "sam2")
    make_detector(out / "detector")
    make_vitpose(out / "vitpose")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="weights folder to fill (use it as --weights-dir)")
    args = p.parse_args(argv)
    print(f"tiny random people models in {make_all(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
