"""Settings of the avatar optimisation: one flat dataclass, a comment per field, named presets.

``AvatarConfig.preset(name)`` gives the settings of ``RunConfig.quality`` (preview | standard |
high); ``RunConfig.extra["avatars"]`` may override any field by name. The resolved config is
written next to the outputs (``<job>/avatars/config.json``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class AvatarConfig:
    # --- schedule and data
    iterations: int = 3000  # optimisation steps
    frames_per_step: int = 1  # frames rendered per step (all people together in each)
    holdout_every: int = 10  # every n-th frame is held out (never trained on, evaluated); 0 = none
    resolution_scale: float = 1.0  # train and evaluate at this fraction of the frame size
    seed: int = 0  # random seed (sampling, initialisation)
    # --- Gaussians
    gaussians_per_person: int = 20000  # initial Gaussians on each body surface
    max_gaussians_per_person: int = 60000  # densification adds no more above this count
    sh_degree: int = 1  # spherical-harmonic degree of the colours (0..3)
    sh_degree_interval: int = 1000  # the active SH degree rises by one every this many steps
    flatness: float = 0.2  # initial normal scale / tangent scale (flat splats along the surface)
    init_color_frames: int = 16  # frames (best visible) used to project colours onto the initial Gaussians
    init_opacity: float = 0.9  # initial opacity of every Gaussian
    # --- learning rates (Adam), decayed exponentially to lr_final_factor x at the last step
    lr_means: float = 3e-4  # canonical positions (metres)
    lr_quats: float = 1e-3  # orientations
    lr_scales: float = 5e-3  # log scales
    lr_opacities: float = 5e-2  # opacity logits
    lr_sh0: float = 5e-3  # DC colour coefficients
    lr_shN: float = 2.5e-4  # higher SH coefficients
    lr_skin: float = 1e-3  # skin-weight logits (top-k per Gaussian)
    lr_pose: float = 1e-3  # per-frame joint rotation corrections (radians)
    lr_trans: float = 2e-4  # per-frame root translation corrections (metres)
    lr_final_factor: float = 0.05  # final learning rate / initial (positions, poses)
    # --- losses
    lambda_ssim: float = 0.2  # weight of (1 - SSIM) against L1 in the colour loss (masked)
    lambda_mask: float = 0.5  # per-person alpha vs mask (L1)
    lambda_scale: float = 10.0  # penalty on scales above max_scale
    max_scale: float = 0.04  # metres; larger Gaussians are penalised (and pruned at 3x)
    lambda_opacity: float = 0.01  # pushes opacities towards 0 or 1 (o * (1 - o))
    lambda_offset: float = 100.0  # penalty on canonical offsets from the body surface beyond offset_free
    offset_free: float = 0.03  # metres a Gaussian may leave its surface anchor unpenalised (clothes, hair)
    lambda_skin_smooth: float = 0.1  # skin weights close to those of the nearest Gaussians
    skin_neighbours: int = 8  # neighbours for the skin-smoothness term
    mask_dilate: int = 2  # pixels added around the people's masks for the colour loss and the plate
    # --- pose refinement (the motion stage's poses are the start, not ground truth)
    refine_poses: bool = True  # optimise per-frame body joint rotations and root translation
    pose_start: int = 300  # step from which poses are refined
    lambda_pose: float = 1.0  # L2 of the pose corrections (radians^2, metres^2 x 10)
    lambda_pose_smooth: float = 10.0  # squared frame-to-frame change of the corrections
    # --- densification and pruning (own strategy, gsplat DefaultStrategy's rules)
    densify: bool = True  # clone / split Gaussians with large screen-space gradients, prune weak ones
    densify_start: int = 300  # first step of densification
    densify_stop: int = 2000  # last step of densification
    densify_every: int = 100  # steps between densification rounds
    grad_threshold: float = 2e-4  # mean normalised screen-space gradient that triggers clone / split
    split_scale: float = 0.01  # metres: Gaussians larger than this split, smaller ones clone
    prune_opacity: float = 0.005  # Gaussians less opaque than this are removed
    # --- rendering
    backend: str = "auto"  # rasteriser: auto (gsplat on CUDA) | torch | gsplat
    antialiased: bool = False  # Mip-Splatting opacity compensation for the 0.3 px^2 dilation
    # torch intra-op threads while fitting on the CPU (0 = leave torch's setting): a step is many small
    # tensor operations, and a pool of threads that waits on a busy machine made the demo 6x slower
    cpu_threads: int = 1
    near_plane: float = 0.01  # metres
    far_plane: float = 1000.0  # metres
    # --- outputs
    orbit_views: int = 12  # novel views per person (orbit around the person at orbit_frame)
    orbit_frame: int = -1  # frame of the orbit renders; -1 = the frame where the person is most visible
    max_saved_heldout: int = 8  # held-out frames saved as images (ground truth | render)
    log_every: int = 100  # steps between progress reports

    @classmethod
    def preset(cls, name: str) -> AvatarConfig:
        if name not in PRESETS:
            raise ValueError(f"avatar quality preset must be one of {tuple(PRESETS)}, not {name!r}")
        return dataclasses.replace(cls(), **PRESETS[name])

    def replace(self, **overrides: Any) -> AvatarConfig:
        """A copy with fields replaced; unknown names raise a ValueError naming them."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown avatar setting(s) {unknown}; known: {sorted(names)}")
        return dataclasses.replace(self, **overrides)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, dict[str, Any]] = {
    # Preview runs on the CPU (the demo): at half resolution a person is a few dozen pixels tall, so
    # 1500 Gaussians each (larger, smoother splats) and 400 steps with faster colour and position
    # rates come within 0.6 dB of 8000 and 800 steps on the demo (held-out PSNR in masks 22.2 vs
    # 22.8 dB), with fewer speckles in novel views, at a fifth of the time.
    "preview": dict(iterations=400, gaussians_per_person=1500, max_gaussians_per_person=4000, sh_degree=0,
                    resolution_scale=0.5, refine_poses=False, densify_start=100, densify_stop=300,
                    lr_sh0=1e-2, lr_means=1e-3, orbit_views=8),
    "standard": dict(),
    "high": dict(iterations=7000, gaussians_per_person=40000, max_gaussians_per_person=150000, sh_degree=3,
                 densify_start=500, densify_stop=5000, antialiased=True),
}  # fmt: skip
