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
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
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


class AvatarInputError(ValueError):
    """Inputs that do not fit together (the message names the array and the expected shape)."""


# --------------------------------------------------------------------------------------
# Image metrics
# --------------------------------------------------------------------------------------


def _gauss_window(size: int = 11, sigma: float = 1.5, device: torch.device | None = None) -> Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - size // 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_map(a: Tensor, b: Tensor) -> Tensor:
    """Per-pixel SSIM of images [B, H, W, 3] in [0, 1] (11x11 Gaussian window, sigma 1.5) -> [B, H, W]."""
    x = a.permute(0, 3, 1, 2).reshape(-1, 1, a.shape[1], a.shape[2])
    y = b.permute(0, 3, 1, 2).reshape(-1, 1, b.shape[1], b.shape[2])
    win = _gauss_window(device=a.device).to(a.dtype)

    def filt(z: Tensor) -> Tensor:
        return F.conv2d(F.pad(z, (5, 5, 5, 5), mode="replicate"), win)

    mx, my = filt(x), filt(y)
    sxx = filt(x * x) - mx * mx
    syy = filt(y * y) - my * my
    sxy = filt(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.reshape(a.shape[0], 3, a.shape[1], a.shape[2]).mean(1)


def masked_psnr(pred: Tensor, gt: Tensor, mask: Tensor) -> float:
    """PSNR (dB) over the pixels of ``mask`` [H, W] of images [H, W, 3] in [0, 1]."""
    m = mask.to(pred.dtype)[..., None]
    mse = float(((pred - gt) ** 2 * m).sum() / (m.sum() * 3).clamp_min(1))
    return 10 * math.log10(1.0 / max(mse, 1e-12))


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
    skin_ids [N,k] joint ids. Pose corrections: pose_delta [P,T,22,3], trans_delta [P,T,3].
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
        self.poses = torch.as_tensor(np.stack([p.motion.poses for p in self.people]), **f32)  # [P,T,165]
        self.trans = torch.as_tensor(np.stack([p.motion.trans for p in self.people]), **f32)  # [P,T,3]
        self.pose_delta = torch.zeros(len(self.people), num_t, BODY_JOINTS, 3, **f32).requires_grad_()
        self.trans_delta = torch.zeros(len(self.people), num_t, 3, **f32).requires_grad_()
        self.params: dict[str, Tensor] = {}
        self.buffers: dict[str, Tensor] = {}
        self.neighbours: Tensor | None = None

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
        self.update_neighbours()

    def skin_weights(self) -> Tensor:
        return torch.softmax(self.params["skin_logits"], -1)

    def update_neighbours(self) -> None:
        """k nearest Gaussians of the same person in canonical space (for skin smoothness)."""
        self.neighbours = knn_same_group(self.params["means"].detach(), self.buffers["person"],
                                         self.config.skin_neighbours)  # fmt: skip

    def transforms(self, frames: Tensor) -> Tensor:
        """Skinning transforms of every person at ``frames`` [B] -> [B, P, J, 4, 4]."""
        num_b = len(frames)
        rot = self.poses[:, frames].reshape(-1, num_b, bundle.NUM_JOINTS, 3)  # [P,B,J,3]
        rot = rot + F.pad(self.pose_delta[:, frames], (0, 0, 0, bundle.NUM_JOINTS - BODY_JOINTS))
        trans = self.trans[:, frames] + self.trans_delta[:, frames]  # [P,B,3]
        return M.forward_kinematics(self.joints[:, None], self.parents, rot, trans)[1].transpose(0, 1)

    def posed(self, frames: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Posed means [B,N,3], quats [B,N,4] and blend rotations [B,N,4] at ``frames`` [B]."""
        tr = self.transforms(frames)  # [B,P,J,4,4]
        jq = M.matrix_to_quat(tr[..., :3, :3])  # [B,P,J,4]
        sel = (self.buffers["person"][:, None], self.buffers["skin_ids"])
        means, quats = M.skin_gaussians(self.params["means"], self.params["quats"], self.buffers["skin_ids"],
                                        self.skin_weights(), tr[:, sel[0], sel[1]], jq[:, sel[0], sel[1]])  # fmt: skip
        q_blend = M.quat_multiply(quats, M.quat_conjugate(F.normalize(self.params["quats"], dim=-1)))
        return means, quats, q_blend

    def colors(self, sh_degree: int, means: Tensor, q_blend: Tensor, campos: Tensor) -> Tensor:
        """RGB [B,N,3] seen from camera centres ``campos`` [B,3] (view direction in canonical space)."""
        sh = self.params["sh0"] if sh_degree == 0 else torch.cat([self.params["sh0"], self.params["shN"]], 1)
        if sh_degree == 0:  # no view dependence
            return sh_to_color(0, means, sh.expand(means.shape[0], -1, -1, -1))
        dirs = M.quat_rotate(M.quat_conjugate(q_blend), means - campos[:, None])
        return sh_to_color(sh_degree, dirs, sh.expand(means.shape[0], -1, -1, -1))

    def render(self, frames: Tensor, viewmats: Tensor, Ks: Tensor, width: int, height: int, sh_degree: int,
               drawn: Tensor) -> Render:  # fmt: skip
        """Render everyone at ``frames`` [B] into cameras [B,1,4,4] / [B,1,3,3].

        ``drawn`` [B,P] bool says whose Gaussians are drawn in each frame. The output colour has
        3 + P channels: RGB (no background) and each person's own alpha."""
        means, quats, q_blend = self.posed(frames)
        campos = -(viewmats[:, 0, :3, :3].transpose(-1, -2) @ viewmats[:, 0, :3, 3:])[..., 0]
        rgb = self.colors(sh_degree, means, q_blend, campos)
        person = self.buffers["person"]
        onehot = F.one_hot(person, len(self.people)).to(rgb.dtype).expand(len(frames), -1, -1)
        feats = torch.cat([rgb, onehot], -1)
        show = drawn[:, person]  # [B,N]
        logits = torch.where(
            show, self.params["opacities"][None], torch.full_like(show, HIDDEN_LOGIT, dtype=rgb.dtype)
        )
        scales = self.params["scales"][None].expand(len(frames), -1, -1)
        cfg = self.config
        return rasterize(means, quats, scales, logits, feats, viewmats, Ks, width, height,
                         near_plane=cfg.near_plane, far_plane=cfg.far_plane, antialiased=cfg.antialiased,
                         backend=cfg.backend)  # fmt: skip


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


def accumulate_grads(state: DensifyState, out: Render, width: int, height: int, loss_area: Tensor) -> None:
    """Add this step's screen-space gradients. ``loss_area`` is the fraction of the image the
    colour loss averages over: gradients are rescaled to a whole-image mean, so
    ``grad_threshold`` means what it means in 3DGS / gsplat."""
    grad = out.means2d.grad
    if grad is None:
        return
    g = grad.detach().reshape(-1, grad.shape[-2], 2) * loss_area
    g[..., 0] *= width / 2.0  # pixels -> normalised device coordinates, as gsplat does
    g[..., 1] *= height / 2.0
    drawn = (out.radii.reshape(-1, grad.shape[-2], 2) > 0).all(-1)
    state.grad2d += (g.norm(dim=-1) * drawn).sum(0)
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
    avatars.update_neighbours()
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


@dataclass
class _Data:
    frames: Tensor  # [T,H,W,3] uint8
    labels: Tensor  # [T,H,W] uint8
    plates: Plates  # background plate per frame (and the dilated people masks)
    viewmats: Tensor  # [T,4,4]
    Ks: Tensor  # [T,3,3] (scaled to the working resolution)
    drawn: Tensor  # [T,P] bool: person drawn (motion visibility > 0; occluders must be drawn too)
    seen: Tensor  # [T,P] bool: person has mask pixels in the frame
    area: np.ndarray  # (T,P) mask pixels of each person in each frame
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
    return _Data(
        frames=frames_t,
        labels=labels_t,
        plates=plates,
        viewmats=torch.as_tensor(motion.camera.world_to_cam, dtype=torch.float32, device=device),
        Ks=torch.as_tensor(ks, dtype=torch.float32, device=device),
        drawn=torch.as_tensor(vis | seen, device=device),
        seen=torch.as_tensor(seen, device=device),
        area=area,
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


def _losses(avatars: Avatars, data: _Data, frames: Tensor, out: Render, cfg: AvatarConfig,
            step: int) -> dict[str, Tensor]:  # fmt: skip
    num_p = len(avatars.people)
    color = out.color[:, 0]  # [B,H,W,3+P]
    alpha = out.alpha[:, 0]
    gt = data.frames[frames].float() / 255.0
    pred = color[..., :3] + (1.0 - alpha) * data.plates.get(frames)
    masks = F.one_hot(data.labels[frames].long(), num_p + 1)[..., 1:].float()  # [B,H,W,P]
    union = data.plates.occupied[frames][..., None].float()  # the people's masks, dilated
    area = union.sum().clamp_min(1.0)
    l1 = ((pred - gt).abs() * union).sum() / (area * 3)
    ssim = (ssim_map(pred * union + gt * (1 - union), gt)[..., None] * union).sum() / area
    drawn = data.drawn[frames].float()  # [B,P]
    mask_l = ((color[..., 3:] - masks).abs().mean((1, 2)) * drawn).sum() / drawn.sum().clamp_min(1)
    p = avatars.params
    scale_l = F.relu(torch.exp(p["scales"]) - cfg.max_scale).pow(2).sum(-1).mean() / cfg.max_scale**2
    op = torch.sigmoid(p["opacities"])
    opacity_l = (op * (1 - op)).mean()
    offset = (p["means"] - avatars.buffers["anchors"]).norm(dim=-1)
    offset_l = F.relu(offset - cfg.offset_free).pow(2).mean()
    w = avatars.skin_weights()
    n = avatars.count
    dense = torch.zeros(n, bundle.NUM_JOINTS, device=w.device).scatter_add(1, avatars.buffers["skin_ids"], w)
    assert avatars.neighbours is not None
    some = torch.randint(0, n, (min(n, SKIN_SAMPLES),), device=w.device)  # a random subset per step
    skin_l = (dense[some, None] - dense[avatars.neighbours[some]]).pow(2).sum(-1).mean()
    terms = {
        "l1": l1,
        "ssim": 1 - ssim,
        "mask": mask_l,
        "scale": scale_l,
        "opacity": opacity_l,
        "offset": offset_l,
        "skin": skin_l,
    }
    if cfg.refine_poses and step >= cfg.pose_start:
        pd, td = avatars.pose_delta, avatars.trans_delta
        terms["pose"] = pd.pow(2).sum(-1).mean() + 10 * td.pow(2).sum(-1).mean()
        terms["pose_smooth"] = (pd[:, 1:] - pd[:, :-1]).pow(2).sum(-1).mean() + 10 * (
            td[:, 1:] - td[:, :-1]
        ).pow(2).sum(-1).mean()
    weights = {"l1": 1 - cfg.lambda_ssim, "ssim": cfg.lambda_ssim, "mask": cfg.lambda_mask,
               "scale": cfg.lambda_scale, "opacity": cfg.lambda_opacity, "offset": cfg.lambda_offset,
               "skin": cfg.lambda_skin_smooth, "pose": cfg.lambda_pose, "pose_smooth": cfg.lambda_pose_smooth}  # fmt: skip
    terms["total"] = sum(weights[k] * v for k, v in terms.items())
    return terms


def _camera(data: _Data, frames: Tensor) -> tuple[Tensor, Tensor]:
    return data.viewmats[frames][:, None], data.Ks[frames][:, None]


@torch.no_grad()
def evaluate(avatars: Avatars, data: _Data, frames: list[int], sh_degree: int) -> dict[str, float]:
    """Mean PSNR and SSIM inside the people's masks over ``frames`` (renders over the plate)."""
    if not frames:
        return {}
    psnrs, ssims = [], []
    for t in frames:
        idx = torch.tensor([t], device=avatars.device)
        pred, gt, mask = render_composite(avatars, data, idx, sh_degree)
        if mask.sum() == 0:
            continue
        psnrs.append(masked_psnr(pred[0], gt[0], mask[0]))
        sm = ssim_map(pred, gt)[0]
        ssims.append(float((sm * mask[0]).sum() / mask[0].sum()))
    if not psnrs:
        return {}
    return {"psnr": float(np.mean(psnrs)), "ssim": float(np.mean(ssims)), "frames": len(psnrs)}


@torch.no_grad()
def render_composite(
    avatars: Avatars, data: _Data, frames: Tensor, sh_degree: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Render [B] frames over the plate: prediction [B,H,W,3], ground truth, people mask [B,H,W]."""
    vm, ks = _camera(data, frames)
    out = avatars.render(frames, vm, ks, data.width, data.height, sh_degree, data.drawn[frames])
    pred = (out.color[:, 0, ..., :3] + (1 - out.alpha[:, 0]) * data.plates.get(frames)).clamp(0, 1)
    gt = data.frames[frames].float() / 255.0
    return pred, gt, (data.labels[frames] > 0).float()


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
    _check_inputs(frames, labels, motion)
    cfg = config
    dev = torch.device(device)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    t0 = time.perf_counter()
    data = _prepare(frames, labels, motion, cfg, dev)
    train, held = split_frames(motion.frame_count, cfg.holdout_every)
    avatars = Avatars(motion, cfg, dev)
    avatars.set_gaussians(initial_gaussians(motion, data, train, cfg, rng))
    t_init = time.perf_counter() - t0
    metrics: dict[str, Any] = {"init": evaluate(avatars, data, held, 0), "init_seconds": t_init}

    groups = [
        ("means", cfg.lr_means), ("quats", cfg.lr_quats), ("scales", cfg.lr_scales),
        ("opacities", cfg.lr_opacities), ("sh0", cfg.lr_sh0), ("shN", cfg.lr_shN), ("skin_logits", cfg.lr_skin),
    ]  # fmt: skip
    param_groups = [{"params": [avatars.params[n]], "lr": lr, "name": n} for n, lr in groups]
    if cfg.refine_poses:
        param_groups += [{"params": [avatars.pose_delta], "lr": cfg.lr_pose, "name": "pose_delta"},
                         {"params": [avatars.trans_delta], "lr": cfg.lr_trans, "name": "trans_delta"}]  # fmt: skip
    base_lr = {g["name"]: g["lr"] for g in param_groups}
    opt = torch.optim.Adam(param_groups, eps=1e-15)
    weights = torch.as_tensor(_sampler_weights(train, data.seen.cpu().numpy()), device=dev)
    train_t = torch.as_tensor(train, device=dev)
    state = DensifyState.zeros(avatars.count, dev)
    history: list[dict[str, float]] = []
    t_train = time.perf_counter()
    for step in range(cfg.iterations):
        frac = step / max(1, cfg.iterations)
        for g in opt.param_groups:
            if g["name"] in ("means", "pose_delta", "trans_delta"):
                g["lr"] = base_lr[g["name"]] * cfg.lr_final_factor**frac
        deg = min(cfg.sh_degree, step // max(1, cfg.sh_degree_interval))
        fr = train_t[torch.multinomial(weights, cfg.frames_per_step, replacement=True, generator=gen)]
        vm, ks = _camera(data, fr)
        out = avatars.render(fr, vm, ks, data.width, data.height, deg, data.drawn[fr])
        terms = _losses(avatars, data, fr, out, cfg, step)
        terms["total"].backward()
        if cfg.refine_poses and step < cfg.pose_start:
            avatars.pose_delta.grad = None
            avatars.trans_delta.grad = None
        if cfg.densify and step < cfg.densify_stop:
            accumulate_grads(state, out, data.width, data.height, data.plates.occupied[fr].float().mean())
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (
            cfg.densify
            and cfg.densify_start <= step < cfg.densify_stop
            and (step + 1) % cfg.densify_every == 0
        ):
            info = densify_and_prune(avatars, opt, state, cfg, gen)
            log.debug("step %d densify: %s", step, info)
        if step % cfg.log_every == 0 or step == cfg.iterations - 1:
            rec = {k: float(v.detach()) for k, v in terms.items()}
            rec["step"] = step
            rec["gaussians"] = avatars.count
            history.append(rec)
        if progress is not None:  # every step: it is also where a cancel is noticed
            last = history[-1]
            progress(frac, f"step {step}/{cfg.iterations}, loss {last['total']:.4f}, {avatars.count} Gaussians")
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    seconds = time.perf_counter() - t_train
    final_deg = min(cfg.sh_degree, max(0, cfg.iterations - 1) // max(1, cfg.sh_degree_interval))
    metrics.update({
        "heldout": evaluate(avatars, data, held, final_deg),
        "train_frames_metrics": evaluate(avatars, data, train[:: max(1, len(train) // 8)], final_deg),
        "train_seconds": seconds,
        "iterations": cfg.iterations,
        "iterations_per_second": cfg.iterations / max(seconds, 1e-9),
        "gaussians": dict(zip([p.id for p in motion.people], avatars.counts())),
        "resolution": [data.width, data.height],
        "backend": out.backend,
        "device": str(dev),
        "lpips": None,  # needs network weights, not available offline
    })  # fmt: skip
    result_bundle = export_bundle(avatars, motion, final_deg)
    return AvatarResult(bundle=result_bundle, metrics=metrics, config=cfg, train_frames=train,
                        heldout_frames=held, history=history, avatars=avatars, data=data)  # fmt: skip


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
