"""Joint optimisation of every person's Gaussians (and optionally their poses) against the video.

Entry point: ``fit_avatars(frames, labels, motion, config)`` -- plain arrays and a motion bundle
in, a bundle with splats (and refined motion) plus metrics out, so it runs on synthetic scenes
(tests, benchmarks) as it does inside the ``avatars`` stage.

Per step: sample training frames (weighted so every person is covered; held-out frames never
trained on), pose all people's canonical Gaussians by LBS at those frames, render them
together (occlusions between people are right), composite over the background plate, and
minimise L1 + SSIM inside the people's masks, per-person alpha vs mask, and regularisers
(scale, opacity, offsets from the body surface, skin-weight smoothness, pose corrections).
Densification and pruning follow gsplat's DefaultStrategy rules (screen-space gradient,
clone small / split large, prune transparent or huge), in an own implementation because our
Gaussians carry integer buffers (person, skin joints) and surface anchors that must follow
every clone, split and prune.

Speed: a step is a few hundred small tensor operations around one rasterisation, so on a GPU its
cost is mostly their launch overhead. Everything that does not change per step is made once:
the frames of every step are drawn before training (host-side, so nothing waits on the GPU),
with their cameras, crops and loss weights; the joints' transforms for the motion's poses are
tabulated for all frames while the poses are not refined. Each step renders only a crop around
the people's masks (the colour loss reads nothing else, SSIM's window included), with cheap
batched FK and one gather per Gaussian for skinning, and Adam is fused.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .. import bundle
from . import model as M
from .config import AvatarConfig
from .plate import Plates, dilate, is_static
from .raster import Render, quat_to_rotmat, rasterize, sh_to_color

log = logging.getLogger("troupe.avatars")

BODY_JOINTS = 22  # joints whose rotations pose refinement may change (pelvis .. wrists)
HIDDEN_LOGIT = -30.0  # opacity logit of Gaussians of people not drawn in a frame
SKIN_SAMPLES = 8192  # Gaussians per step in the skin-smoothness term
# A training crop is the people's (dilated) masks' bounding box grown by CROP_MARGIN pixels plus
# CROP_MARGIN_FRACTION of its larger side: SSIM's window (5 px) stays inside, and so does most of
# the space a stray Gaussian could wander into, where the alpha-vs-mask loss still sees it.
CROP_MARGIN = 16
CROP_MARGIN_FRACTION = 0.1
CROP_ALIGN = 16  # crop sizes are rounded up to this many pixels (gsplat's tile; fewer distinct shapes)


class AvatarInputError(ValueError):
    """Inputs that do not fit together (the message names the array and the expected shape)."""


# --------------------------------------------------------------------------------------
# Image metrics
# --------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _ssim_window(dtype: torch.dtype, device: torch.device, channels: int = 15) -> tuple[Tensor, Tensor]:
    """The 11-tap Gaussian (sigma 1.5) as depthwise row and column filters for ``channels`` maps."""
    x = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(x * x) / (2 * 1.5**2))
    g = (g / g.sum()).to(dtype=dtype, device=device)
    return g.view(1, 1, 1, 11).repeat(channels, 1, 1, 1), g.view(1, 1, 11, 1).repeat(channels, 1, 1, 1)


def ssim_map(a: Tensor, b: Tensor) -> Tensor:
    """Per-pixel SSIM of images [B, H, W, 3] in [0, 1] (11x11 Gaussian window, sigma 1.5, edges
    replicated) -> [B, H, W], the mean over the channels.

    The window's five local moments (means, second moments, cross moment) of the three channels
    are filtered together: 15 maps, one depthwise convolution per direction."""
    x = a.permute(0, 3, 1, 2)
    y = b.permute(0, 3, 1, 2)
    maps = torch.cat([x, y, x * x, y * y, x * y], 1)  # [B, 15, H, W]
    rows, cols = _ssim_window(a.dtype, a.device)
    maps = F.pad(maps, (5, 5, 5, 5), mode="replicate")
    mx, my, exx, eyy, exy = F.conv2d(F.conv2d(maps, rows, groups=15), cols, groups=15).split(3, 1)
    mxy, mxx, myy = mx * my, mx * mx, my * my
    c1, c2 = 0.01**2, 0.03**2
    num = (2 * mxy + c1) * (2 * (exy - mxy) + c2)
    den = (mxx + myy + c1) * ((exx - mxx) + (eyy - myy) + c2)
    return (num / den).mean(1)


@torch.no_grad()
def knn_same_group(points: Tensor, group: Tensor, k: int, chunk: int = 2048) -> Tensor:
    """Indices [N, k] of each point's k nearest other points of the same group (itself if alone)."""
    out = torch.arange(len(points), device=points.device)[:, None].repeat(1, k)
    for g in torch.unique(group):
        idx = torch.nonzero(group == g).squeeze(1)
        pts = points[idx]
        kk = min(k, len(idx) - 1)
        if kk <= 0:
            continue
        for s in range(0, len(idx), chunk):
            d = torch.cdist(pts[s : s + chunk], pts)
            d[torch.arange(d.shape[0], device=d.device), torch.arange(s, s + d.shape[0], device=d.device)] = (
                torch.inf
            )
            nb = idx[d.topk(kk, largest=False).indices]
            out[idx[s : s + chunk]] = torch.cat([nb, nb[:, -1:].expand(-1, k - kk)], 1)
    return out


# --------------------------------------------------------------------------------------
# The model: all people's Gaussians in one set of tensors
# --------------------------------------------------------------------------------------


class Avatars:
    """Canonical Gaussians of P people (concatenated), their rigs and motion, on one device.

    ``params`` (optimised, gsplat-style names): means [N,3] canonical, quats [N,4] wxyz,
    scales [N,3] log, opacities [N] logit, sh0 [N,1,3], shN [N,K-1,3], skin_logits [N,k].
    ``buffers`` (follow every densify/prune): anchors [N,3] surface points, person [N],
    skin_ids [N,k] joint ids. Pose corrections: pose_delta [P,T,22,3], trans_delta [P,T,3],
    applied once ``use_corrections`` is set (until then the joints' transforms of every frame are
    computed once and looked up).
    """

    def __init__(self, motion: bundle.Bundle, config: AvatarConfig, device: torch.device) -> None:
        self.config = config
        self.device = device
        self.people = motion.people
        num_t = motion.frame_count
        f32 = dict(dtype=torch.float32, device=device)
        self.joints = torch.as_tensor(np.stack([p.rig.joints for p in self.people]), **f32)  # [P,J,3]
        self.parents = np.asarray(self.people[0].rig.parents)
        for p in self.people:
            if not np.array_equal(p.rig.parents, self.parents):
                raise AvatarInputError(f"person {p.id}: rig.parents differ from {self.people[0].id}'s "
                                       "(every person must use the SMPL-X tree)")  # fmt: skip
        poses = np.stack([p.motion.poses for p in self.people]).reshape(len(self.people), num_t, -1, 3)
        self.poses = torch.as_tensor(poses, **f32)  # [P,T,J,3] axis-angle
        self.trans = torch.as_tensor(np.stack([p.motion.trans for p in self.people]), **f32)  # [P,T,3]
        self.pose_delta = torch.zeros(len(self.people), num_t, BODY_JOINTS, 3, **f32).requires_grad_()
        self.trans_delta = torch.zeros(len(self.people), num_t, 3, **f32).requires_grad_()
        self.use_corrections = False  # pose_delta / trans_delta applied (pose refinement under way or done)
        self._table: Tensor | None = None  # [T, P*J, 16] joint table of the uncorrected motion
        self.params: dict[str, Tensor] = {}
        self.buffers: dict[str, Tensor] = {}
        self.neighbours: Tensor | None = None  # [N, skin_neighbours] (skin smoothness)
        self.table_rows: Tensor | None = None  # [N, k] rows of the joint table: person * J + skin joint
        self.identity: Tensor | None = None  # [N, P] one-hot person (the per-person alpha channels)
        self.shared_joints: Tensor | None = None  # [N, nb, k, k] bool: skin joint a of n is joint b of neighbour

    @property
    def count(self) -> int:
        return int(self.params["means"].shape[0])

    def counts(self) -> list[int]:
        return torch.bincount(self.buffers["person"], minlength=len(self.people)).tolist()

    def set_gaussians(self, values: dict[str, np.ndarray]) -> None:
        f32 = dict(dtype=torch.float32, device=self.device)
        for name in ("means", "quats", "scales", "opacities", "sh0", "shN", "skin_logits"):
            self.params[name] = torch.as_tensor(values[name], **f32).requires_grad_()
        self.buffers["anchors"] = torch.as_tensor(values["anchors"], **f32)
        self.buffers["person"] = torch.as_tensor(values["person"], dtype=torch.long, device=self.device)
        self.buffers["skin_ids"] = torch.as_tensor(values["skin_ids"], dtype=torch.long, device=self.device)
        self.refresh()

    def refresh(self) -> None:
        """Recompute what follows from the buffers (after the Gaussians were set, densified or pruned):
        table rows, person one-hots and the k nearest Gaussians of the same person in canonical
        space (for skin smoothness)."""
        person = self.buffers["person"]
        self.table_rows = person[:, None] * bundle.NUM_JOINTS + self.buffers["skin_ids"]
        self.identity = F.one_hot(person, len(self.people)).float()
        self.neighbours = knn_same_group(self.params["means"].detach(), person, self.config.skin_neighbours)
        ids = self.buffers["skin_ids"]
        self.shared_joints = ids[:, None, :, None] == ids[self.neighbours][:, :, None, :]

    def skin_weights(self) -> Tensor:
        return torch.softmax(self.params["skin_logits"], -1)

    def transforms(self, frames: Tensor) -> Tensor:
        """Skinning transforms of every person at ``frames`` [B] -> [B, P, J, 4, 4]."""
        rot = self.poses.index_select(1, frames)  # [P,B,J,3]
        trans = self.trans.index_select(1, frames)  # [P,B,3]
        if self.use_corrections:  # (index_select: its gradient is an index_add, no sort on CUDA)
            rot = rot + F.pad(self.pose_delta.index_select(1, frames), (0, 0, 0, bundle.NUM_JOINTS - BODY_JOINTS))
            trans = trans + self.trans_delta.index_select(1, frames)
        return M.forward_kinematics(self.joints[:, None], self.parents, rot, trans)[1].transpose(0, 1)

    def joint_table(self, frames: Tensor) -> Tensor:
        """``M.joint_table`` of every person's joints at ``frames`` [B] -> [B, P*J, 16]."""
        if self.use_corrections:
            return M.joint_table(self.transforms(frames)).flatten(1, 2)
        if self._table is None:
            with torch.no_grad():
                num_t = self.poses.shape[1]
                chunks = torch.arange(num_t, device=self.device).split(512)
                self._table = torch.cat([M.joint_table(self.transforms(c)).flatten(1, 2) for c in chunks])
        return self._table.index_select(0, frames)

    def posed(self, frames: Tensor, weights: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Posed means [B,N,3], quats [B,N,4] and blend rotations [B,N,4] at ``frames`` [B]
        (quaternions not normalised; ``weights``: the skin weights, if already computed)."""
        assert self.table_rows is not None
        w = self.skin_weights() if weights is None else weights
        return M.skin_gaussians(self.params["means"], self.params["quats"], self.table_rows, w,
                                self.joint_table(frames))  # fmt: skip

    def colors(self, sh_degree: int, means: Tensor, blend: Tensor, viewmats: Tensor) -> Tensor:
        """RGB [B,N,3] (or [N,3] at degree 0) seen from the cameras ``viewmats`` [B,1,4,4] (view direction
        in canonical space)."""
        if sh_degree == 0:  # no view dependence: [N,3]
            return sh_to_color(0, means, self.params["sh0"])
        rot, t = viewmats[:, 0, :3, :3], viewmats[:, 0, :3, 3:]
        campos = -(rot.mT @ t)[..., 0]  # [B,3] camera centres
        dirs = M.quat_rotate(M.quat_conjugate(F.normalize(blend, dim=-1)), means - campos[:, None])
        sh = torch.cat([self.params["sh0"], self.params["shN"][:, : (sh_degree + 1) ** 2 - 1]], 1)
        return sh_to_color(sh_degree, dirs, sh)

    def render(self, frames: Tensor, viewmats: Tensor, Ks: Tensor, width: int, height: int, sh_degree: int,
               hidden: Tensor | None = None, weights: Tensor | None = None) -> Render:  # fmt: skip
        """Render everyone at ``frames`` [B] into cameras [B,1,4,4] / [B,1,3,3].

        ``hidden`` [B,P] bool says whose Gaussians are not drawn in each frame (None: everyone's
        are). The output colour has 3 + P channels: RGB (no background) and each person's own alpha."""
        assert self.identity is not None
        means, quats, blend = self.posed(frames, weights)
        num_b = len(frames)
        rgb = self.colors(sh_degree, means, blend, viewmats)
        logits, scales = self.params["opacities"], self.params["scales"]
        if hidden is not None:
            logits = torch.where(hidden[:, self.buffers["person"]], HIDDEN_LOGIT, logits)
        cfg = self.config
        kw = dict(near_plane=cfg.near_plane, far_plane=cfg.far_plane, antialiased=cfg.antialiased, backend=cfg.backend)
        if num_b == 1:  # one frame: no batch dimension, so nothing is expanded (and summed back in backward)
            feats = torch.cat([rgb.reshape(-1, 3), self.identity], -1)
            out = rasterize(means[0], quats[0], scales, logits.reshape(-1), feats, viewmats[0], Ks[0], width, height,
                            **kw)  # fmt: skip
            return Render(color=out.color[None], alpha=out.alpha[None], depth=out.depth[None],
                          means2d=out.means2d, radii=out.radii[None], backend=out.backend)  # fmt: skip
        feats = torch.cat([rgb.expand(num_b, -1, -1), self.identity.expand(num_b, -1, -1)], -1)
        return rasterize(means, quats, scales.expand(num_b, -1, -1), logits.expand(num_b, -1), feats, viewmats, Ks,
                         width, height, **kw)  # fmt: skip


# --------------------------------------------------------------------------------------
# Densification and pruning
# --------------------------------------------------------------------------------------


@dataclass
class DensifyState:
    """Running screen-space gradient statistics (gsplat-style state dict entries)."""

    grad2d: Tensor  # [N] summed norm of the normalised 2D-mean gradient
    count: Tensor  # [N] number of steps the Gaussian was drawn

    @classmethod
    def zeros(cls, n: int, device: torch.device) -> DensifyState:
        return cls(torch.zeros(n, device=device), torch.zeros(n, device=device))


def accumulate_grads(state: DensifyState, out: Render, ndc: Tensor, loss_area: float) -> None:
    """Add this step's screen-space gradients.

    ``ndc`` [2] is (W/2, H/2) of the whole frame: pixel gradients become normalised device
    coordinates, as gsplat does (a crop's gradients are the frame's). ``loss_area`` is the
    fraction of the frame the colour loss averages over: gradients are rescaled to a whole-image
    mean, so ``grad_threshold`` means what it means in 3DGS / gsplat."""
    grad = out.means2d.grad
    if grad is None:
        return
    n = grad.shape[-2]
    g = torch.linalg.vector_norm(grad.reshape(-1, n, 2) * ndc, dim=-1)  # [B*C, N]
    drawn = (out.radii.reshape(-1, n, 2) > 0).all(-1)
    state.grad2d += torch.where(drawn, g, 0.0).sum(0) * loss_area
    state.count += drawn.sum(0)


def _remap(avatars: Avatars, opt: torch.optim.Optimizer, keep: Tensor, src: Tensor,
           new_rows: dict[str, Tensor]) -> None:  # fmt: skip
    """Keep rows ``keep`` and append rows copied from ``src`` (with ``new_rows`` overriding some
    entries), in every parameter, buffer and Adam state."""
    for name, p in list(avatars.params.items()):
        added = new_rows.get(name, p.detach()[src])
        new_p = torch.cat([p.detach()[keep], added]).requires_grad_()
        for group in opt.param_groups:
            if group["params"][0] is p:
                state = opt.state.pop(p, None)
                group["params"][0] = new_p
                if state:
                    for key in ("exp_avg", "exp_avg_sq"):
                        s = state[key]
                        state[key] = torch.cat(
                            [s[keep], torch.zeros((len(src),) + s.shape[1:], device=s.device)]
                        )
                    opt.state[new_p] = state
        avatars.params[name] = new_p
    for name, b in list(avatars.buffers.items()):
        avatars.buffers[name] = torch.cat([b[keep], new_rows.get(name, b[src])])


@torch.no_grad()
def densify_and_prune(avatars: Avatars, opt: torch.optim.Optimizer, state: DensifyState, cfg: AvatarConfig,
                      gen: torch.Generator, densify: bool = True) -> dict[str, int]:  # fmt: skip
    """One round: clone / split where the mean 2D gradient is high, prune weak or huge ones."""
    p = avatars.params
    n = avatars.count
    avg = state.grad2d / state.count.clamp_min(1)
    scale = torch.exp(p["scales"]).amax(-1)
    grow = (
        (avg > cfg.grad_threshold) & (state.count > 0)
        if densify
        else torch.zeros(n, dtype=torch.bool, device=avg.device)
    )
    # Respect each person's budget: keep the highest gradients.
    person = avatars.buffers["person"]
    counts = torch.bincount(person, minlength=len(avatars.people))
    for q in range(len(avatars.people)):
        idx = torch.nonzero(grow & (person == q)).squeeze(1)
        room = max(0, cfg.max_gaussians_per_person - int(counts[q]))
        if len(idx) > room:
            drop = idx[torch.argsort(avg[idx], descending=True)[room:]]
            grow[drop] = False
    clone = grow & (scale <= cfg.split_scale)
    split = grow & (scale > cfg.split_scale)
    prune = (torch.sigmoid(p["opacities"]) < cfg.prune_opacity) | (scale > 3 * cfg.max_scale)
    keep = torch.nonzero(~(prune | split)).squeeze(1)
    clone_idx = torch.nonzero(clone & ~prune).squeeze(1)
    split_idx = torch.nonzero(split & ~prune).squeeze(1)
    src = torch.cat([clone_idx, split_idx, split_idx])
    means = p["means"].detach()[src].clone()
    scales = p["scales"].detach()[src].clone()
    ns = len(split_idx)
    if ns:
        # Two samples from each split Gaussian, each 1.6x smaller (3DGS / gsplat rule).
        sl = slice(len(clone_idx), None)
        rot = quat_to_rotmat(p["quats"].detach()[src[sl]])
        sd = torch.exp(scales[sl])
        noise = torch.randn(sd.shape, generator=gen, device=sd.device) * sd
        means[sl] = means[sl] + (rot @ noise[..., None])[..., 0]
        scales[sl] = scales[sl] - math.log(1.6)
    _remap(avatars, opt, keep, src, {"means": means, "scales": scales})
    total = len(keep) + len(src)
    for name in ("grad2d", "count"):
        setattr(state, name, torch.zeros(total, device=avg.device))
    avatars.refresh()
    return {"cloned": len(clone_idx), "split": ns, "pruned": int((prune).sum()), "total": total}


# --------------------------------------------------------------------------------------
# Inputs, initialisation, training
# --------------------------------------------------------------------------------------


@dataclass
class AvatarResult:
    bundle: bundle.Bundle  # the motion bundle with splats (and refined motion) per person
    metrics: dict[str, Any]  # held-out PSNR/SSIM before/after, speed, counts
    config: AvatarConfig
    train_frames: list[int]
    heldout_frames: list[int]
    history: list[dict[str, float]] = field(default_factory=list)
    avatars: Avatars | None = None  # the fitted model (for renders)
    data: _Data | None = None
    # Held-out frames saved as images (``max_saved_heldout`` of them), kept from the final evaluation:
    # frame -> ground truth | render, (H, 2W, 3) uint8 RGB.
    heldout_images: dict[int, np.ndarray] = field(default_factory=dict)


@dataclass
class _Data:
    frames: Tensor  # [T,H,W,3] uint8
    labels: Tensor  # [T,H,W] uint8
    plates: Plates  # background plate per frame (and the dilated people masks, ``plates.occupied``)
    viewmats: Tensor  # [T,4,4]
    Ks: Tensor  # [T,3,3] (scaled to the working resolution)
    drawn: Tensor  # [T,P] bool: person drawn (motion visibility > 0; occluders must be drawn too)
    seen: np.ndarray  # (T,P) bool: person has mask pixels in the frame
    area: np.ndarray  # (T,P) mask pixels of each person in each frame
    occupied_area: np.ndarray  # (T,) pixels of the people's dilated masks (where the colour loss looks)
    boxes: np.ndarray  # (T,4) x0, y0, x1, y1: the dilated masks' bounding box (the whole frame if empty)
    width: int
    height: int


def _check_inputs(frames: np.ndarray, labels: np.ndarray, motion: bundle.Bundle) -> None:
    t = motion.frame_count
    w, h = motion.image_size
    if frames.ndim != 4 or frames.shape[0] != t or frames.shape[3] != 3 or frames.dtype != np.uint8:
        raise AvatarInputError(f"frames must be uint8 (T={t}, H, W, 3), got {frames.dtype} {frames.shape}")
    if labels.shape != frames.shape[:3] or labels.dtype != np.uint8:
        raise AvatarInputError(f"labels must be uint8 {frames.shape[:3]}, got {labels.dtype} {labels.shape}")
    if (frames.shape[2], frames.shape[1]) != (w, h):
        raise AvatarInputError(f"frames are {frames.shape[2]}x{frames.shape[1]} but the motion bundle's "
                               f"image_size is {w}x{h}")  # fmt: skip
    if not motion.people:
        raise AvatarInputError("the motion bundle has no people: nothing to build avatars of")
    if int(labels.max(initial=0)) > len(motion.people):
        raise AvatarInputError(f"labels hold values up to {int(labels.max())} but the motion bundle has only "
                               f"{len(motion.people)} people (label i+1 = person i)")  # fmt: skip


def _extent(m: Tensor) -> tuple[Tensor, Tensor]:
    """First and one-past-last True index along dim 1 of [T, L] bool (first >= last where none)."""
    idx = torch.arange(m.shape[1], device=m.device)
    return torch.where(m, idx, m.shape[1]).amin(1), torch.where(m, idx, -1).amax(1) + 1


def _prepare(frames: np.ndarray, labels: np.ndarray, motion: bundle.Bundle, cfg: AvatarConfig,
             device: torch.device) -> _Data:  # fmt: skip
    s = cfg.resolution_scale
    w0, h0 = motion.image_size
    w, h = max(8, round(w0 * s)), max(8, round(h0 * s))
    if (w, h) != (w0, h0):
        frames = np.stack([cv2.resize(f, (w, h), interpolation=cv2.INTER_AREA) for f in frames])
        labels = np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_NEAREST) for m in labels])
    ks = motion.camera.K.astype(np.float64).copy()
    ks[:, 0, :] *= w / w0
    ks[:, 1, :] *= h / h0
    frames_t = torch.as_tensor(frames, device=device)
    labels_t = torch.as_tensor(labels, device=device)
    plates = Plates(frames_t, dilate(labels_t > 0, cfg.mask_dilate), is_static(motion.camera))
    vis = np.stack([p.motion.visibility for p in motion.people], 1) > 0  # [T,P]
    counts = torch.stack([torch.bincount(lab.flatten().long(), minlength=256) for lab in labels_t])
    area = counts[:, 1 : len(motion.people) + 1].cpu().numpy()  # (T,P) mask pixels per person
    seen = area > 0
    occ = plates.occupied
    (x0, x1), (y0, y1) = _extent(occ.any(1)), _extent(occ.any(2))
    boxes = torch.stack([x0, y0, x1, y1], 1).cpu().numpy()
    boxes[boxes[:, 2] <= boxes[:, 0]] = (0, 0, w, h)  # nobody in the frame
    return _Data(
        frames=frames_t,
        labels=labels_t,
        plates=plates,
        viewmats=torch.as_tensor(motion.camera.world_to_cam, dtype=torch.float32, device=device),
        Ks=torch.as_tensor(ks, dtype=torch.float32, device=device),
        drawn=torch.as_tensor(vis | seen, device=device),
        seen=seen,
        area=area,
        occupied_area=occ.sum((1, 2)).cpu().numpy(),
        boxes=boxes,
        width=w,
        height=h,
    )


def split_frames(num_t: int, holdout_every: int) -> tuple[list[int], list[int]]:
    """Training and held-out frame indices (every n-th frame held out, starting at n // 2)."""
    if holdout_every <= 1 or num_t < 3:
        return list(range(num_t)), []
    held = list(range(holdout_every // 2, num_t, holdout_every))
    return [t for t in range(num_t) if t not in set(held)], held


def initial_gaussians(motion: bundle.Bundle, data: _Data, train: list[int], cfg: AvatarConfig,
                      rng: np.random.Generator) -> dict[str, np.ndarray]:  # fmt: skip
    """Gaussians on every person's rest surface, coloured from the frames where they are best seen."""
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("means", "quats", "scales", "opacities", "sh0", "shN",
                                                          "skin_logits", "anchors", "person", "skin_ids")}  # fmt: skip
    for i, person in enumerate(motion.people):
        s = M.sample_surface(person.rig, cfg.gaussians_per_person, rng, flatness=cfg.flatness)
        area = data.area[train, i]
        best = [train[j] for j in np.argsort(-area)[: cfg.init_color_frames] if area[j] > 0]
        if best:
            _, skin = bundle.forward_kinematics(person.rig.joints, person.rig.parents,
                                                person.motion.rotvecs[best], person.motion.trans[best])  # fmt: skip
            pts = bundle.skin_points(s.points, s.skin_joints, s.skin_weights, skin)
            blended = np.einsum("nk,tnkab->tnab", s.skin_weights, skin[:, s.skin_joints, :3, :3])
            nrm = np.einsum("tnab,nb->tna", blended, s.normals)
            nrm /= np.maximum(np.linalg.norm(nrm, axis=-1, keepdims=True), 1e-9)
            col, seen = M.project_colors(pts, nrm, data.frames[best].cpu().numpy(),
                                         data.labels[best].cpu().numpy() == i + 1,
                                         data.Ks[best].cpu().numpy(), data.viewmats[best].cpu().numpy())  # fmt: skip
            if seen.any():
                col[seen == 0] = col[seen > 0].mean(0)
        else:
            col = np.full((len(s.points), 3), 0.5)
        sh = M.init_sh(col, cfg.sh_degree)
        n = len(s.points)
        parts["means"].append(s.points)
        parts["anchors"].append(s.points)
        parts["quats"].append(s.quats)
        parts["scales"].append(s.log_scales)
        parts["opacities"].append(np.full(n, math.log(cfg.init_opacity / (1 - cfg.init_opacity))))
        parts["sh0"].append(sh[:, :1])
        parts["shN"].append(sh[:, 1:])
        parts["skin_logits"].append(np.log(np.maximum(s.skin_weights, 1e-4)))
        parts["person"].append(np.full(n, i))
        parts["skin_ids"].append(s.skin_joints)
    return {k: np.concatenate(v) for k, v in parts.items()}


def _sampler_weights(train: list[int], seen: np.ndarray) -> np.ndarray:
    """Frame weights so every person is trained on about equally often (``seen`` [T,P] bool)."""
    d = seen[train].astype(np.float64)  # [F,P]
    per_person = d.sum(0)
    w = (d / np.maximum(per_person, 1)[None]).sum(1)
    if w.sum() <= 0:
        raise AvatarInputError("no training frame shows any person (masks empty or visibility 0 everywhere)")
    return w / w.sum()


def _crop_window(box: np.ndarray, w: int, h: int, width: int, height: int) -> tuple[int, int]:
    """Top-left corner of a w x h window inside the image, centred on ``box`` (x0, y0, x1, y1)."""
    x = min(max(0, (int(box[0]) + int(box[2]) - w) // 2), width - w)
    y = min(max(0, (int(box[1]) + int(box[3]) - h) // 2), height - h)
    return x, y


def _stack(parts: list[Tensor]) -> Tensor:
    """torch.stack, but a view (no copy) for one part."""
    return parts[0][None] if len(parts) == 1 else torch.stack(parts)


def _stack_crops(images: Tensor, frames: np.ndarray, corners: list[tuple[int, int]], w: int, h: int) -> Tensor:
    """[T, H, W, ...] -> [B, h, w, ...]: one window per frame (a view when B = 1)."""
    return _stack([images[t, y : y + h, x : x + w] for t, (x, y) in zip(frames.tolist(), corners)])


def _skin_smoothness(avatars: Avatars, weights: Tensor, gen: torch.Generator) -> Tensor:
    """Mean squared distance between the dense skin weights of ``SKIN_SAMPLES`` random Gaussians and
    those of their neighbours, from the top-k weights [N, k] alone: |a - b|^2 = |a|^2 + |b|^2 - 2 a.b,
    where a.b sums the products of the weights of the joints the two share."""
    assert avatars.neighbours is not None and avatars.shared_joints is not None
    n, k = weights.shape
    some = torch.randint(0, n, (min(n, SKIN_SAMPLES),), device=weights.device, generator=gen)
    nb = avatars.neighbours.index_select(0, some)  # [S, nb]
    wi = weights.index_select(0, some)  # [S, k]
    wj = weights.index_select(0, nb.flatten()).view(nb.shape + (k,))  # [S, nb, k]
    dot = (wi[:, None, :, None] * wj[:, :, None, :] * avatars.shared_joints.index_select(0, some)).sum((-2, -1))
    return (wi.square().sum(-1)[:, None] + wj.square().sum(-1) - 2.0 * dot).mean()


TERMS = ("l1", "ssim", "mask", "scale", "opacity", "offset", "skin", "pose", "pose_smooth")  # loss terms, in order


class Trainer:
    """The optimisation, one step at a time (``fit_avatars`` runs it; benchmarks profile it).

    Made once, before the first step: every step's frames (drawn on the host with the sampler
    weights), their crops (around the people's dilated masks, see ``CROP_MARGIN``; one size for all
    frames of a step), cameras with the crop's principal point, the mask-loss weights, the loss
    weights and a fused Adam."""

    def __init__(self, avatars: Avatars, data: _Data, cfg: AvatarConfig, train: list[int], held: list[int],
                 rng: np.random.Generator, gen: torch.Generator) -> None:  # fmt: skip
        self.avatars, self.data, self.cfg, self.gen = avatars, data, cfg, gen
        self.train, self.held = train, held  # frame indices: trained on, held out
        dev = avatars.device
        num_p = len(avatars.people)
        width, height = data.width, data.height
        pick = rng.choice(len(train), size=(cfg.iterations, cfg.frames_per_step), p=_sampler_weights(train, data.seen))
        self.frames = np.asarray(train)[pick]  # (S,B)
        self.frames_dev = torch.as_tensor(self.frames, device=dev)
        self.crops: list[tuple[list[tuple[int, int]], int, int]] = []  # per step: corners, w, h
        ks = data.Ks.cpu().numpy()[self.frames]  # (S,B,3,3)
        for s, frames in enumerate(self.frames):
            box = data.boxes[frames]
            bw, bh = int((box[:, 2] - box[:, 0]).max()), int((box[:, 3] - box[:, 1]).max())
            margin = CROP_MARGIN + int(CROP_MARGIN_FRACTION * max(bw, bh))
            w = min(width, -(-(bw + 2 * margin) // CROP_ALIGN) * CROP_ALIGN)
            h = min(height, -(-(bh + 2 * margin) // CROP_ALIGN) * CROP_ALIGN)
            corners = [_crop_window(b, w, h, width, height) for b in box]
            ks[s, :, 0, 2] -= [x for x, _ in corners]
            ks[s, :, 1, 2] -= [y for _, y in corners]
            self.crops.append((corners, w, h))
        self.Ks = torch.as_tensor(ks[:, :, None], dtype=torch.float32, device=dev)  # [S,B,1,3,3]
        self.viewmats = data.viewmats[self.frames_dev][:, :, None]  # [S,B,1,4,4]
        drawn = data.drawn.cpu().numpy()[self.frames]  # (S,B,P)
        self.any_hidden = (~drawn).any((1, 2))  # (S,) host: skip the hiding where everyone is drawn
        self.hidden = torch.as_tensor(~drawn, device=dev)
        # Per-person alpha vs mask: the mean over the whole frame, averaged over the people drawn.
        mask_w = drawn / np.maximum(drawn.sum((1, 2), keepdims=True), 1) / (width * height)
        self.mask_w = torch.as_tensor(mask_w, dtype=torch.float32, device=dev)  # [S,B,P]
        self.area = np.maximum(data.occupied_area[self.frames].sum(1), 1).astype(np.float64)  # (S,) loss pixels
        self.person_labels = torch.arange(1, num_p + 1, dtype=torch.uint8, device=dev)
        self.ndc = torch.tensor([width / 2.0, height / 2.0], device=dev)
        lambdas = {"l1": 1 - cfg.lambda_ssim, "ssim": cfg.lambda_ssim, "mask": cfg.lambda_mask,
                   "scale": cfg.lambda_scale, "opacity": cfg.lambda_opacity, "offset": cfg.lambda_offset,
                   "skin": cfg.lambda_skin_smooth, "pose": cfg.lambda_pose, "pose_smooth": cfg.lambda_pose_smooth}  # fmt: skip
        self.lambdas = torch.tensor([lambdas[k] for k in TERMS], device=dev)
        groups = [
            ("means", cfg.lr_means), ("quats", cfg.lr_quats), ("scales", cfg.lr_scales),
            ("opacities", cfg.lr_opacities), ("sh0", cfg.lr_sh0), ("shN", cfg.lr_shN), ("skin_logits", cfg.lr_skin),
        ]  # fmt: skip
        param_groups = [{"params": [avatars.params[n]], "lr": lr, "name": n} for n, lr in groups]
        if cfg.refine_poses:
            param_groups += [{"params": [avatars.pose_delta], "lr": cfg.lr_pose, "name": "pose_delta"},
                             {"params": [avatars.trans_delta], "lr": cfg.lr_trans, "name": "trans_delta"}]  # fmt: skip
        self.base_lr = {g["name"]: g["lr"] for g in param_groups}
        # One fused kernel per group instead of a dozen per parameter (CPU and CUDA alike).
        self.opt = torch.optim.Adam(param_groups, eps=1e-15, fused=True)
        self.state = DensifyState.zeros(avatars.count, dev)
        self.backend = ""

    def step(self, step: int) -> Tensor:
        """One optimisation step (with densification when it is due); returns the loss terms
        (``TERMS`` so far, then the weighted total) as a detached vector, without waiting for it."""
        cfg, av, data = self.cfg, self.avatars, self.data
        frac = step / max(1, cfg.iterations)
        for g in self.opt.param_groups:
            if g["name"] in ("means", "pose_delta", "trans_delta"):
                g["lr"] = self.base_lr[g["name"]] * cfg.lr_final_factor**frac
        if cfg.refine_poses and step >= cfg.pose_start:
            av.use_corrections = True
        deg = min(cfg.sh_degree, step // max(1, cfg.sh_degree_interval))
        frames = self.frames[step]
        corners, w, h = self.crops[step]
        weights = av.skin_weights()
        out = av.render(self.frames_dev[step], self.viewmats[step], self.Ks[step], w, h, deg,
                        self.hidden[step] if self.any_hidden[step] else None, weights)  # fmt: skip
        self.backend = out.backend
        gt = _stack_crops(data.frames, frames, corners, w, h).float() * (1 / 255)
        plate = _stack([data.plates.crop(int(t), y, y + h, x, x + w) for t, (x, y) in zip(frames, corners)])
        union = _stack_crops(data.plates.occupied, frames, corners, w, h)
        labels = _stack_crops(data.labels, frames, corners, w, h)
        terms = self._losses(out, gt, plate, union, labels, self.mask_w[step], float(self.area[step]), weights)
        total = terms @ self.lambdas[: len(terms)]
        total.backward()
        if cfg.densify and step < cfg.densify_stop:
            loss_area = float(self.area[step]) / (len(frames) * data.width * data.height)
            accumulate_grads(self.state, out, self.ndc, loss_area)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if cfg.densify and cfg.densify_start <= step < cfg.densify_stop and (step + 1) % cfg.densify_every == 0:
            info = densify_and_prune(av, self.opt, self.state, cfg, self.gen)
            log.debug("step %d densify: %s", step, info)
        return torch.cat([terms.detach(), total.detach()[None]])

    def _losses(self, out: Render, gt: Tensor, plate: Tensor, union: Tensor, labels: Tensor, mask_w: Tensor,
                area: float, weights: Tensor) -> Tensor:  # fmt: skip
        """The loss terms (``TERMS``; the pose terms only while poses are refined) of a rendered crop:
        ``gt`` / ``plate`` [B,h,w,3], ``union`` [B,h,w] the dilated masks, ``labels`` [B,h,w],
        ``mask_w`` [B,P] per-person weights, ``area`` the pixels of ``union``."""
        cfg, av = self.cfg, self.avatars
        rgb, person_alpha = out.color[:, 0].split([3, out.color.shape[-1] - 3], -1)  # [B,h,w,3], [B,h,w,P]
        alpha = out.alpha[:, 0]  # [B,h,w,1]
        pred = torch.addcmul(rgb, 1.0 - alpha, plate)
        # Outside the masks the prediction is replaced by the frame: no loss there, SSIM included.
        pred = torch.where(union[..., None], pred, gt)
        l1 = (pred - gt).abs().sum() * (1.0 / (3.0 * area))
        ssim = torch.where(union, ssim_map(pred, gt), 0.0).sum() * (1.0 / area)
        masks = labels[..., None] == self.person_labels  # [B,h,w,P]
        mask_l = ((person_alpha - masks.float()).abs().sum((1, 2)) * mask_w).sum()
        p = av.params
        scale_l = F.relu(torch.exp(p["scales"]) - cfg.max_scale).square().mean() * (3.0 / cfg.max_scale**2)
        op = torch.sigmoid(p["opacities"])
        opacity_l = (op * (1.0 - op)).mean()
        offset = torch.linalg.vector_norm(p["means"] - av.buffers["anchors"], dim=-1)
        offset_l = F.relu(offset - cfg.offset_free).square().mean()
        skin_l = _skin_smoothness(av, weights, self.gen)
        terms = [l1, 1.0 - ssim, mask_l, scale_l, opacity_l, offset_l, skin_l]
        if av.use_corrections and cfg.refine_poses:
            pd, td = av.pose_delta, av.trans_delta  # sizes and frame-to-frame changes (x3: summed over xyz)
            terms.append(3.0 * (pd.square().mean() + 10.0 * td.square().mean()))
            terms.append(3.0 * (torch.diff(pd, dim=1).square().mean() + 10.0 * torch.diff(td, dim=1).square().mean()))
        return torch.stack(terms)


EVAL_BATCH = 4  # frames rendered per call when evaluating (fewer launches on a GPU; memory stays small)


@torch.no_grad()
def evaluate(avatars: Avatars, data: _Data, frames: list[int], sh_degree: int,
             keep: set[int] | frozenset[int] = frozenset()) -> dict[str, Any]:  # fmt: skip
    """Mean PSNR and SSIM inside the people's masks over ``frames`` (renders over the plate).

    Frames are rendered ``EVAL_BATCH`` at a time and read back once per batch. The frames in
    ``keep`` are returned too, under "images": {frame: ground truth | render, (H, 2W, 3) uint8 RGB}
    (the held-out images the outputs save, not rendered twice)."""
    if not frames:
        return {}
    psnrs: list[float] = []
    ssims: list[float] = []
    images: dict[int, np.ndarray] = {}
    for s in range(0, len(frames), EVAL_BATCH):
        chunk = frames[s : s + EVAL_BATCH]
        pred, gt, mask = render_composite(avatars, data, torch.tensor(chunk, device=avatars.device), sh_degree)
        area = mask.sum((1, 2))  # [B]
        mse = ((pred - gt) ** 2 * mask[..., None]).sum((1, 2, 3)) / (3 * area).clamp_min(1)
        ssim = (ssim_map(pred, gt) * mask).sum((1, 2)) / area.clamp_min(1)
        for a, m, q in zip(area.tolist(), mse.tolist(), ssim.tolist()):
            if a > 0:
                psnrs.append(10 * math.log10(1.0 / max(m, 1e-12)))
                ssims.append(q)
        for i, t in enumerate(chunk):
            if t in keep:
                images[t] = (torch.cat([gt[i], pred[i]], 1) * 255).round().byte().cpu().numpy()
    out: dict[str, Any] = {}
    if psnrs:
        out = {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "frames": len(psnrs)}
    if keep:
        out["images"] = images
    return out


@torch.no_grad()
def render_composite(
    avatars: Avatars, data: _Data, frames: Tensor, sh_degree: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Render [B] frames over the plate: prediction [B,H,W,3], ground truth, people mask [B,H,W]."""
    vm, ks = data.viewmats[frames][:, None], data.Ks[frames][:, None]
    out = avatars.render(frames, vm, ks, data.width, data.height, sh_degree, ~data.drawn[frames])
    pred = (out.color[:, 0, ..., :3] + (1 - out.alpha[:, 0]) * data.plates.get(frames)).clamp(0, 1)
    gt = data.frames[frames].float() / 255.0
    return pred, gt, (data.labels[frames] > 0).float()


def prepare(frames: np.ndarray, labels: np.ndarray, motion: bundle.Bundle, config: AvatarConfig,
            device: str | torch.device = "cpu") -> Trainer:  # fmt: skip
    """Everything before the first step (arguments as ``fit_avatars``): inputs checked, frames at the
    working resolution, plates, the initial Gaussians, and the trainer with its step plan."""
    _check_inputs(frames, labels, motion)
    cfg = config
    dev = torch.device(device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    data = _prepare(frames, labels, motion, cfg, dev)
    train, held = split_frames(motion.frame_count, cfg.holdout_every)
    avatars = Avatars(motion, cfg, dev)
    avatars.set_gaussians(initial_gaussians(motion, data, train, cfg, rng))
    return Trainer(avatars, data, cfg, train, held, rng, gen)


def fit_avatars(
    frames: np.ndarray,
    labels: np.ndarray,
    motion: bundle.Bundle,
    config: AvatarConfig,
    *,
    device: str | torch.device = "cpu",
    progress: Callable[[float, str], None] | None = None,
) -> AvatarResult:
    """Fit every person's Gaussians (and, with ``refine_poses``, their poses) to the video.

    Args:
        frames: (T,H,W,3) uint8 RGB frames, T = the bundle's frame count, W x H its image size.
        labels: (T,H,W) uint8 label maps: 0 = background, i+1 = ``motion.people[i]``.
        motion: camera + people (motion, rig) as the motion stage writes it.
        config: the settings (``AvatarConfig.preset(quality)``).
        device: torch device ("cuda" uses gsplat when ``config.backend`` is auto).
        progress: ``progress(fraction, message)``; may raise to cancel.
    """
    with cpu_threads(config, device):
        return _fit(frames, labels, motion, config, device, progress)


@contextlib.contextmanager
def cpu_threads(config: AvatarConfig, device: str | torch.device) -> Iterator[None]:
    """torch runs ``config.cpu_threads`` intra-op threads inside (on the CPU; restored after)."""
    threads = torch.get_num_threads()
    if torch.device(device).type == "cpu" and config.cpu_threads > 0:
        torch.set_num_threads(config.cpu_threads)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _fit(frames: np.ndarray, labels: np.ndarray, motion: bundle.Bundle, config: AvatarConfig,
         device: str | torch.device, progress: Callable[[float, str], None] | None) -> AvatarResult:  # fmt: skip
    cfg = config
    t0 = time.perf_counter()
    trainer = prepare(frames, labels, motion, cfg, device)
    avatars, data, train, held = trainer.avatars, trainer.data, trainer.train, trainer.held
    dev = avatars.device
    seconds = {"prepare": time.perf_counter() - t0}
    t_eval = time.perf_counter()
    metrics: dict[str, Any] = {"init": evaluate(avatars, data, held, 0)}
    seconds["evaluate_init"] = time.perf_counter() - t_eval
    history: list[dict[str, float]] = []
    t_train = time.perf_counter()
    for step in range(cfg.iterations):
        terms = trainer.step(step)
        if step % cfg.log_every == 0 or step == cfg.iterations - 1:  # the one wait for the device
            values = terms.tolist()
            rec = dict(zip(TERMS[: len(values) - 1], values))
            rec.update(total=values[-1], step=step, gaussians=avatars.count)
            history.append(rec)
        if progress is not None:  # every step: it is also where a cancel is noticed
            last = history[-1]
            progress(step / max(1, cfg.iterations),
                     f"step {step}/{cfg.iterations}, loss {last['total']:.4f}, {avatars.count} Gaussians")  # fmt: skip
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds["train"] = time.perf_counter() - t_train
    final_deg = min(cfg.sh_degree, max(0, cfg.iterations - 1) // max(1, cfg.sh_degree_interval))
    t_eval = time.perf_counter()
    saved = held[:: max(1, math.ceil(len(held) / max(1, cfg.max_saved_heldout)))] if cfg.max_saved_heldout else []
    heldout = evaluate(avatars, data, held, final_deg, keep=set(saved))
    images = heldout.pop("images", {})
    metrics.update({
        "heldout": heldout,
        "train_frames_metrics": evaluate(avatars, data, train[:: max(1, len(train) // 4)][:4], final_deg),
    })  # fmt: skip
    seconds["evaluate"] = time.perf_counter() - t_eval
    metrics.update({
        "seconds": seconds,
        "init_seconds": seconds["prepare"],
        "train_seconds": seconds["train"],
        "iterations": cfg.iterations,
        "iterations_per_second": cfg.iterations / max(seconds["train"], 1e-9),
        "gaussians": dict(zip([p.id for p in motion.people], avatars.counts())),
        "resolution": [data.width, data.height],
        "backend": trainer.backend,
        "device": str(dev),
        "lpips": None,  # needs network weights, not available offline
    })  # fmt: skip
    result_bundle = export_bundle(avatars, motion, final_deg)
    return AvatarResult(bundle=result_bundle, metrics=metrics, config=cfg, train_frames=train,
                        heldout_frames=held, history=history, avatars=avatars, data=data,
                        heldout_images=images)  # fmt: skip


def export_bundle(avatars: Avatars, motion: bundle.Bundle, sh_degree: int) -> bundle.Bundle:
    """The motion bundle with each person's splats (and refined poses) filled in."""
    import copy

    out = copy.deepcopy(motion)
    p = {k: v.detach().cpu().numpy() for k, v in avatars.params.items()}
    person = avatars.buffers["person"].cpu().numpy()
    ids = avatars.buffers["skin_ids"].cpu().numpy()
    w = avatars.skin_weights().detach().cpu().numpy()
    nb = (sh_degree + 1) ** 2
    sh = np.concatenate([p["sh0"], p["shN"]], 1)[:, :nb]
    pd = avatars.pose_delta.detach().cpu().numpy()
    td = avatars.trans_delta.detach().cpu().numpy()
    for i, per in enumerate(out.people):
        sel = person == i
        quats = p["quats"][sel] / np.linalg.norm(p["quats"][sel], axis=1, keepdims=True)
        per.splats = bundle.Splats(
            means=p["means"][sel].astype(np.float32),
            sh=sh[sel].astype(np.float32),
            opacity=p["opacities"][sel].astype(np.float32),
            log_scales=p["scales"][sel].astype(np.float32),
            quats=quats.astype(np.float32),
            skin_joints=ids[sel].astype(np.int32),
            skin_weights=(w[sel] / w[sel].sum(1, keepdims=True)).astype(np.float32),
        )
        if avatars.config.refine_poses:
            rv = per.motion.poses.reshape(len(per.motion.poses), bundle.NUM_JOINTS, 3).copy()
            rv[:, :BODY_JOINTS] += pd[i]
            per.motion.poses = rv.reshape(len(rv), -1).astype(np.float32)
            per.motion.trans = (per.motion.trans + td[i]).astype(np.float32)
    return out
