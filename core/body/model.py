"""SMPL-X through the ``smplx`` package, with every choice stated.

Choices (recorded in each bundle's ``body_model``):
    - ``use_pca=False``: hand poses are full axis-angle (45 values per hand);
    - ``flat_hand_mean=True``: a zero hand pose is a flat hand, so the stored rotations are the
      joints' rotations with nothing added (what Blender and FK see);
    - ``num_betas`` shape and ``num_expression`` expression coefficients (10 and 10 by default).

Model files are looked up in this order:
    1. an explicit path (a ``SMPLX_<GENDER>.npz`` file, or a folder holding it or ``smplx/`` with it);
    2. the folder in the environment variable ``TROUPE_BODY_MODELS``;
    3. the user's config folder, ``<config>/troupe/body_models`` (see ``user_config_dir``).
The SMPL-X model comes from its authors (https://smpl-x.is.tue.mpg.de) under their licence;
Troupe never ships it. Tests and the demo use a generated stand-in (``core.body.standin``).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import bundle

MODEL_ENV = "TROUPE_BODY_MODELS"
GENDERS = ("neutral", "male", "female")
STANDIN_KEY = "troupe_standin"  # present (True) in files made by core.body.standin


class BodyModelNotFound(FileNotFoundError):
    """No SMPL-X model file where Troupe looked; the message says what to put where."""


def user_config_dir() -> Path:
    """Per-user configuration folder of Troupe (platform convention)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "troupe"


def model_filename(gender: str) -> str:
    if gender not in GENDERS:
        raise ValueError(f"gender must be one of {GENDERS}, not {gender!r}")
    return f"SMPLX_{gender.upper()}.npz"


def _candidates(folder: Path, gender: str) -> list[Path]:
    name = model_filename(gender)
    return [folder / name, folder / "smplx" / name, folder / "models" / "smplx" / name]


def find_model_file(path: str | os.PathLike[str] | None = None, gender: str = "neutral") -> Path:
    """Locate ``SMPLX_<GENDER>.npz``; raise BodyModelNotFound naming every place looked in."""
    searched: list[Path] = []
    sources: list[tuple[str, Path]] = []
    if path:
        p = Path(path).expanduser()
        if p.is_file():
            return p
        sources.append(("the path given", p))
    env = os.environ.get(MODEL_ENV)
    if env:
        sources.append((f"${MODEL_ENV}", Path(env).expanduser()))
    sources.append(("the user config folder", user_config_dir() / "body_models"))
    for _, folder in sources:
        for cand in _candidates(folder, gender):
            searched.append(cand)
            if cand.is_file():
                return cand
    where = "\n".join(f"  - {c}" for c in searched)
    raise BodyModelNotFound(
        f"SMPL-X body model not found: expected the file {model_filename(gender)}. Looked in:\n{where}\n"
        "The SMPL-X model is distributed by its authors under their licence: register at "
        "https://smpl-x.is.tue.mpg.de, download 'SMPL-X v1.1 (NPZ)', and put the SMPLX_*.npz files in "
        f"one of the folders above (or set {MODEL_ENV}, or pass the folder to --body-model / the add-on's "
        "Body model preference). For tests only: `python -m core standin --out DIR` writes a generated "
        "stand-in with the same structure (not a human body model)."
    )


def is_standin(path: Path) -> bool:
    with np.load(path, allow_pickle=False) as z:
        return STANDIN_KEY in z.files and bool(z[STANDIN_KEY])


@dataclass(frozen=True)
class RestBody:
    """One person's shaped body in the zero pose (the rig's rest pose)."""

    vertices: np.ndarray  # (V,3)
    joints: np.ndarray  # (55,3) regressed from the shaped vertices


class BodyModel:
    """An SMPL-X model loaded through ``smplx.create`` with explicit settings.

    Args:
        path: model file or folder (see ``find_model_file``); None = environment / config folder.
        gender: neutral | male | female.
        num_betas, num_expression: number of shape and expression coefficients used.
        device: torch device for ``forward``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        gender: str = "neutral",
        num_betas: int = 10,
        num_expression: int = 10,
        device: str = "cpu",
    ) -> None:
        import contextlib
        import io

        import smplx
        import torch

        self.path = find_model_file(path, gender)
        self.gender = gender
        self.standin = is_standin(self.path)
        # smplx prints warnings to stdout (e.g. for 10+10 component models): keep them off the
        # worker's protocol stream.
        with contextlib.redirect_stdout(io.StringIO()):
            self.layer = smplx.create(
                str(self.path),
                model_type="smplx",
                gender=gender,
                ext="npz",
                use_pca=False,
                flat_hand_mean=True,
                num_betas=num_betas,
                num_expression_coeffs=num_expression,
                use_face_contour=False,
                batch_size=1,
            ).to(device)
        self.num_betas = int(self.layer.num_betas)
        self.num_expression = int(self.layer.num_expression_coeffs)
        self.device = torch.device(device)
        self.faces = np.asarray(self.layer.faces, dtype=np.int32)
        self.parents = self.layer.parents.cpu().numpy().astype(np.int32)
        self.parents[0] = -1
        self.weights = self.layer.lbs_weights.detach().cpu().numpy().astype(np.float32)

    @property
    def info(self) -> bundle.BodyModelInfo:
        return bundle.BodyModelInfo(
            type="smplx",
            gender=self.gender,
            num_betas=self.num_betas,
            num_expression=self.num_expression,
            flat_hand_mean=True,
            use_pca=False,
            standin=self.standin,
        )

    @property
    def num_vertices(self) -> int:
        return int(self.layer.v_template.shape[0])

    def forward(self, betas, poses, trans, expression=None):  # type: ignore[no-untyped-def]
        """Posed SMPL-X (torch, differentiable).

        Args:
            betas: (B,num_betas) or (num_betas,) broadcast over the batch.
            poses: (B,165) axis-angle in bundle.POSE_PARTS order.
            trans: (B,3).
            expression: (B,num_expression) or None.

        Returns:
            vertices (B,V,3) and joints (B,55,3) in the world frame.
        """
        import torch

        poses = torch.as_tensor(poses, dtype=torch.float32, device=self.device)
        b = poses.shape[0]
        betas = torch.as_tensor(betas, dtype=torch.float32, device=self.device)
        if betas.dim() == 1:
            betas = betas[None].expand(b, -1)
        trans = torch.as_tensor(trans, dtype=torch.float32, device=self.device)
        if expression is None:
            expression = torch.zeros(b, self.num_expression, device=self.device)
        expression = torch.as_tensor(expression, dtype=torch.float32, device=self.device)
        parts = {}
        start = 0
        for name, size in bundle.POSE_PARTS:
            parts[name] = poses[:, start : start + size]
            start += size
        out = self.layer(betas=betas, expression=expression, transl=trans, return_verts=True, **parts)
        return out.vertices, out.joints[:, : bundle.NUM_JOINTS]

    def rest(self, betas: np.ndarray) -> RestBody:
        """Shaped zero-pose vertices and the joints regressed from them (numpy, float64 math)."""
        layer = self.layer
        b = np.zeros(self.num_betas)
        betas = np.asarray(betas, dtype=np.float64).reshape(-1)
        b[: min(len(betas), self.num_betas)] = betas[: self.num_betas]
        v_template = layer.v_template.detach().cpu().numpy().astype(np.float64)
        shapedirs = layer.shapedirs.detach().cpu().numpy().astype(np.float64)  # (V,3,num_betas)
        verts = v_template + shapedirs @ b
        jreg = layer.J_regressor.detach().cpu().numpy().astype(np.float64)
        return RestBody(vertices=verts, joints=jreg @ verts)

    def rig(self, betas: np.ndarray) -> bundle.Rig:
        """The bundle rig of a person with these betas (DESIGN.md: rig.npz)."""
        rest = self.rest(betas)
        return bundle.Rig(
            joints=rest.joints.astype(np.float32),
            parents=self.parents.copy(),
            vertices=rest.vertices.astype(np.float32),
            faces=self.faces.copy(),
            weights=self.weights.copy(),
        )
