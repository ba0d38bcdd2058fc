"""Generated SMPL-X-shaped stand-in body model: TEST AND DEMO DATA, NOT A HUMAN BODY MODEL.

The SMPL-X model is licensed by its authors and never ships with Troupe. This module generates a
file with exactly SMPL-X's NPZ structure, so the real loading code (``smplx.create(...,
model_type="smplx", ext="npz", use_pca=False, flat_hand_mean=True)``, ``core.body.BodyModel``)
runs in tests and in the demo. Its mesh is a closed mannequin built around a human skeleton in
T-pose; its shape space is hand-made, not learned from scans. Every file carries
``troupe_standin = True`` (``core.body.model.STANDIN_KEY``) and ``troupe_standin_version``.

Command line::

    python -m core standin --out DIR [--genders neutral,male,female] [--seed S]

Geometry (zero betas, zero expression, zero pose), SMPL-X's conventions:
    - metres, +Y up, the body faces +Z, its left side is +X; T-pose, palms down, thumbs forward;
    - the soles are the plane y = -1.15 (``FLOOR_Y``) for every gender, so ``transl = (0, 1.15, 0)``
      stands the zero-shape body on the world floor y = 0; the pelvis joint is at
      y = -1.15 + 0.555 * stature (-0.207 neutral, -0.173 male, -0.240 female);
    - statures (floor to the top of the head): neutral 1.70 m, male 1.76 m, female 1.64 m; the male
      has broader shoulders and chest, the female narrower shoulders and wider hips;
    - one closed (watertight, genus 0), outward-oriented surface of exactly 10475 vertices: a
      smooth union of tapered capsules and ellipsoids around the skeleton (torso, neck, head with
      nose and ears, arms, mitten hands with a free thumb and the four fingers suggested, legs,
      feet with heels and toes), meshed with marching cubes, decimated, then refined by splitting
      the longest edges until the count is exact.

Arrays (names, shapes and meaning as in SMPL-X):
    - ``v_template`` (10475,3), ``f`` (F,3) int32;
    - ``kintree_table`` (2,55): SMPL-X's parents (``core.bundle.SMPLX_PARENTS``), the root's parent
      stored as 4294967295 as in SMPL-X's own files;
    - ``J_regressor`` (55,10475): each row is a local, non-negative average of the surface vertices
      around its joint (maximum-entropy coordinates) that reproduces the designed joint exactly,
      so shaped bodies carry their joints along;
    - ``weights`` (10475,55): linear-blend-skinning weights, at most 4 joints per vertex, rows sum
      to 1, dominated by the bone the vertex lies on and blended smoothly across joints (the
      eye joints own no vertices: the stand-in has no eyeballs);
    - ``shapedirs`` (10475,3,20): 10 shape components then 10 expression components (see below);
    - ``posedirs`` (10475,3,486): zeros -- the stand-in has no pose correctives;
    - ``hands_componentsl/r`` (45,45): an orthonormal hand-pose basis (rows), the first ones
      meaningful (curl, spread, thumb opposition, ...); ``hands_meanl/r`` (45,): a relaxed curl
      (used by smplx only with ``flat_hand_mean=False``);
    - ``lmk_faces_idx`` (51,), ``lmk_bary_coords`` (51,3): 51 face landmarks (brows, nose, eyes,
      mouth) on the face; ``dynamic_lmk_faces_idx`` (79,17), ``dynamic_lmk_bary_coords``
      (79,17,3): the jaw contour for head yaws of -39..39 degrees;
    - smplx's hard-coded SMPL-X vertex ids (``smplx.vertex_ids.vertex_ids['smplx']``: nose, eyes,
      ears, finger tips, big/small toes, heels) are the corresponding places of this mesh.

Shape components (``betas``; one unit is about one standard deviation, betas in [-2, 2] keep a
plausible figure; every component is linear, like SMPL-X's, and they are roughly decorrelated:
|cosine| < 0.4 between any two as vertex displacement fields):
    0. stature: uniform scale about the point between the feet on the floor, +5.1 cm per unit
       for the neutral body (so +-3 units = +-15 cm); the soles stay on y = -1.15;
    1. girth / weight: radial thickening of the torso (most), limbs and neck around their bones;
    2. shoulder width: the shoulders move 1.2 cm outwards each side per unit, the hands stay;
    3. hip width: the legs move 1.3 cm apart each side at the hips (2 cm at the feet) and the
       pelvis widens between them;
    4. leg proportion: longer legs, shorter torso (hips +1.9 cm, top of the head -1.6 cm per unit;
       orthogonalised against stature);
    5. arm length: +2.4 cm per unit from shoulder to wrist, hands carried along;
    6. head size: +6 % per unit about the centre of the head;
    7. belly: the abdomen pushes forward, up to +3 cm per unit;
    8. chest depth: the chest gets deeper front and back;
    9. neck length: the head rises by 1 cm per unit (orthogonalised against stature).
Expression components (``expression``, millimetres per unit, face vertices only): 0 jaw open,
1 smile, 2 brows raised, 3 brows lowered (frown), 4 lips pushed forward, 5 cheeks puffed,
6 eyes narrowed, 7 mouth widened, 8 nose wrinkled, 9 one-sided smile (left).

``--seed`` 0 (the default) gives the canonical stand-in; another seed varies segment lengths
and girths by about 2 % (a different test individual). Generation takes a few seconds per gender.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .. import bundle
from .model import GENDERS, STANDIN_KEY, model_filename

GENERATOR_VERSION = 5  # bump whenever the generated arrays change
VERSION_KEY = "troupe_standin_version"
SEED_KEY = "troupe_standin_seed"
NOTE_KEY = "troupe_standin_note"
NOTE = "Troupe's generated SMPL-X-shaped stand-in: test and demo data, not a human body model."

NUM_VERTICES = 10475
NUM_JOINTS = bundle.NUM_JOINTS
NUM_SHAPE = 10
NUM_EXPRESSION = 10
FLOOR_Y = -1.15  # the soles of every zero-shape stand-in
ROOT_PARENT = 4294967295  # how SMPL-X's files store the root's parent (uint32 -1)

J = {name: i for i, name in enumerate(bundle.JOINT_NAMES)}
FINGERS = ("index", "middle", "pinky", "ring", "thumb")  # SMPL-X order of the hand joints

# smplx.vertex_ids.vertex_ids["smplx"], copied so the generator does not depend on smplx.
VERTEX_IDS: dict[str, int] = {
    "nose": 9120, "reye": 9929, "leye": 9448, "rear": 616, "lear": 6,
    "rthumb": 8079, "rindex": 7669, "rmiddle": 7794, "rring": 7905, "rpinky": 8022,
    "lthumb": 5361, "lindex": 4933, "lmiddle": 5058, "lring": 5169, "lpinky": 5286,
    "LBigToe": 5770, "LSmallToe": 5780, "LHeel": 8846,
    "RBigToe": 8463, "RSmallToe": 8474, "RHeel": 8635,
}  # fmt: skip


# --------------------------------------------------------------------------------------
# Proportions and skeleton
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Proportions:
    """Body measures of one stand-in. Widths are fractions of the stature."""

    stature: float  # floor to the top of the head, metres
    shoulder: float  # x of the shoulder (glenohumeral) joints / stature
    hip: float  # half width of the hips (soft tissue) / stature
    chest: float  # half width of the chest / stature
    waist: float  # half width of the waist / stature
    girth: float  # multiplier of limb and neck radii
    bust: float  # 0..1, breast volume
    arm: float = 1.0  # multiplier of arm segment lengths
    leg: float = 1.0  # multiplier of the hip-to-ankle height


BASE_PROPORTIONS = {
    "neutral": Proportions(
        stature=1.70, shoulder=0.110, hip=0.100, chest=0.091, waist=0.079, girth=1.0, bust=0.5
    ),
    "male": Proportions(
        stature=1.76, shoulder=0.117, hip=0.092, chest=0.096, waist=0.076, girth=1.05, bust=0.0
    ),
    "female": Proportions(
        stature=1.64, shoulder=0.102, hip=0.106, chest=0.086, waist=0.072, girth=0.94, bust=1.0
    ),
}


def proportions(gender: str, seed: int = 0) -> Proportions:
    """The measures of one gender; seed != 0 varies them by about 2 % (a different individual)."""
    p = BASE_PROPORTIONS[gender]
    if seed == 0:
        return p
    rng = np.random.default_rng(seed)
    k = 1.0 + 0.02 * np.clip(rng.standard_normal(8), -2.5, 2.5)
    return replace(
        p,
        stature=p.stature * k[0], shoulder=p.shoulder * k[1], hip=p.hip * k[2], chest=p.chest * k[3],
        waist=p.waist * k[4], girth=p.girth * k[5], arm=p.arm * k[6], leg=p.leg * k[7],
    )  # fmt: skip


@dataclass(frozen=True)
class Skeleton:
    """Designed T-pose joints and the extra points the mesh is built around (all (3,) or (55,3))."""

    joints: np.ndarray  # (55,3) in bundle.JOINT_NAMES order
    points: dict[str, np.ndarray]  # named landmarks: finger ends, heel, toe tips, crown, ...
    p: Proportions

    @property
    def scale(self) -> float:
        return self.p.stature / 1.70

    def y(self, frac: float) -> float:
        """Height ``frac`` of the stature above the floor, as a y coordinate."""
        return FLOOR_Y + frac * self.p.stature


def _mirror(v: np.ndarray) -> np.ndarray:
    return np.asarray(v, np.float64) * np.array([-1.0, 1.0, 1.0])


# Hand layout of the left hand in metres for a 1.70 m body, relative to the wrist (+x along the
# fingers, +y the back of the hand, +z the thumb side): knuckle (joint 1) position, bone lengths
# (1->2, 2->3, 3->centre of the fingertip), radius at the knuckle, spread angle (deg, about y).
HAND = {
    "index": ((0.088, 0.000, 0.0225), (0.038, 0.023, 0.019), 0.0098, 0.0),
    "middle": ((0.092, 0.002, 0.004), (0.043, 0.027, 0.021), 0.0100, 0.0),
    "ring": ((0.087, 0.000, -0.0135), (0.040, 0.026, 0.020), 0.0096, 0.0),
    "pinky": ((0.079, -0.003, -0.030), (0.031, 0.019, 0.018), 0.0088, 0.0),
}
THUMB = ((0.022, -0.012, 0.022), (0.048, -0.016, 0.047), (0.071, -0.017, 0.063), (0.089, -0.017, 0.075))


def skeleton(p: Proportions) -> Skeleton:
    """Joint positions of the stand-in in T-pose (see the module docstring for the frame)."""
    h = p.stature
    s = h / 1.70

    def y(frac: float) -> float:
        return FLOOR_Y + frac * h

    def leg_y(frac: float) -> float:  # heights below the hips follow the leg length
        hip = 0.505
        return y(hip - (hip - frac) * p.leg) if frac < hip else y(frac)

    jt = np.zeros((NUM_JOINTS, 3))
    pts: dict[str, np.ndarray] = {}
    hip_x = 0.5 * p.hip * h
    left = {
        "hip": (hip_x, leg_y(0.505), 0.005 * s),
        "knee": (hip_x + 0.012 * h, leg_y(0.285), 0.008 * s),
        "ankle": (hip_x + 0.018 * h, leg_y(0.046), -0.02 * s),
        "foot": (hip_x + 0.026 * h, FLOOR_Y + 0.024 * s, 0.115 * s),
        "collar": (0.042 * h, y(0.815), -0.012 * s),
        "shoulder": (p.shoulder * h, y(0.815), -0.015 * s),
    }
    upper, fore = 0.172 * h * p.arm, 0.148 * h * p.arm
    left["elbow"] = (left["shoulder"][0] + upper, y(0.812), -0.02 * s)
    left["wrist"] = (left["elbow"][0] + fore, y(0.810), -0.015 * s)
    jt[J["pelvis"]] = (0, y(0.555), 0.0)
    jt[J["spine1"]] = (0, y(0.62), -0.012 * s)
    jt[J["spine2"]] = (0, y(0.70), -0.012 * s)
    jt[J["spine3"]] = (0, y(0.735), -0.008 * s)
    jt[J["neck"]] = (0, y(0.85), -0.018 * s)
    jt[J["head"]] = (0, y(0.905), 0.004 * s)
    jt[J["jaw"]] = (0, y(0.895), 0.028 * s)
    jt[J["left_eye_smplhf"]] = (0.033 * s, y(0.936), 0.070 * s)
    jt[J["right_eye_smplhf"]] = _mirror(jt[J["left_eye_smplhf"]])
    for name, pos in left.items():
        lname = f"left_{name}"
        jt[J[lname]] = pos
        jt[J[f"right_{name}"]] = _mirror(pos)
    wrist = jt[J["left_wrist"]]
    for finger, (knuckle, lengths, _, spread) in HAND.items():
        a = np.radians(spread)
        d = np.array([np.cos(a), 0.0, np.sin(a)])
        pos = wrist + np.array(knuckle) * s
        for k in range(3):
            jt[J[f"left_{finger}{k + 1}"]] = pos
            pos = pos + d * lengths[k] * s
        pts[f"left_{finger}_end"] = pos  # centre of the fingertip's end sphere
    for k in range(3):
        jt[J[f"left_thumb{k + 1}"]] = wrist + np.array(THUMB[k]) * s
    pts["left_thumb_end"] = wrist + np.array(THUMB[3]) * s
    # right hand and finger ends: mirror images
    for name in bundle.JOINT_NAMES[J["left_index1"] : J["left_thumb3"] + 1]:
        jt[J["right" + name[4:]]] = _mirror(jt[J[name]])
    for name in list(pts):
        pts["right" + name[4:]] = _mirror(pts[name])
    ankle = jt[J["left_ankle"]]
    foot = jt[J["left_foot"]]
    pts["left_heel"] = np.array([ankle[0] - 0.002 * s, FLOOR_Y + 0.034 * s, -0.062 * s])
    pts["left_bigtoe"] = np.array([foot[0] - 0.028 * s, FLOOR_Y + 0.020 * s, 0.178 * s])
    pts["left_smalltoe"] = np.array([foot[0] + 0.030 * s, FLOOR_Y + 0.014 * s, 0.138 * s])
    for name in ("heel", "bigtoe", "smalltoe"):
        pts[f"right_{name}"] = _mirror(pts[f"left_{name}"])
    pts["crown"] = np.array([0.0, FLOOR_Y + h, -0.01 * s])
    pts["chin"] = np.array([0.0, y(0.862), 0.07 * s])
    pts["hips_mid"] = np.array([0.0, jt[J["left_hip"], 1], 0.0])
    return Skeleton(joints=jt, points=pts, p=p)


# --------------------------------------------------------------------------------------
# The implicit body: a smooth union of tapered capsules and ellipsoids
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prim:
    """One primitive of the implicit body.

    kind "cone": a capsule tapering from radius ``ra`` at ``a`` to ``rb`` at ``b`` (round cone).
    kind "ellipsoid": centre ``a``, axis-aligned radii ``b``.
    ``blend`` is the smooth-union radius with the primitives before it (the core's and its own
    group's); ``bones`` the joints whose bones may own the surface this primitive makes (the
    nearest of them wins); ``group`` "" for the core (torso, neck, head), else the limb it belongs
    to ("left_arm", ...): limbs blend into the core but never into each other.
    """

    kind: str
    a: np.ndarray
    b: np.ndarray
    ra: float = 0.0
    rb: float = 0.0
    blend: float = 0.0
    bones: tuple[int, ...] = ()
    group: str = ""

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "cone":
            lo = np.minimum(self.a - self.ra, self.b - self.rb)
            hi = np.maximum(self.a + self.ra, self.b + self.rb)
        else:
            lo, hi = self.a - self.b, self.a + self.b
        return lo, hi

    def distance(self, p: np.ndarray) -> np.ndarray:
        """Signed distance (negative inside) at points p (...,3); exact for cones, close for ellipsoids."""
        if self.kind == "ellipsoid":
            q = p - self.a
            k0 = np.linalg.norm(q / self.b, axis=-1)
            k1 = np.maximum(np.linalg.norm(q / self.b**2, axis=-1), 1e-12)
            return k0 * (k0 - 1.0) / k1
        ba = self.b - self.a
        l2 = float(ba @ ba)
        rr = self.ra - self.rb
        a2 = l2 - rr * rr
        pa = p - self.a
        yy = pa @ ba
        zz = yy - l2
        x2 = np.sum((pa * l2 - yy[..., None] * ba) ** 2, axis=-1)
        y2 = yy * yy * l2
        z2 = zz * zz * l2
        k = np.sign(rr) * rr * rr * x2
        end_b = np.sqrt(x2 + z2) / l2 - self.rb
        end_a = np.sqrt(x2 + y2) / l2 - self.ra
        side = (np.sqrt(np.maximum(x2 * a2 / l2, 0.0)) + yy * rr) / l2 - self.ra
        return np.where(np.sign(zz) * a2 * z2 > k, end_b, np.where(np.sign(yy) * a2 * y2 < k, end_a, side))


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (blend radius k; the plain minimum for k = 0)."""
    if k <= 0:
        return np.minimum(a, b)
    h = np.maximum(k - np.abs(a - b), 0.0) / k
    return np.minimum(a, b) - h * h * k * 0.25


def primitives(sk: Skeleton) -> list[Prim]:
    """The primitives of the stand-in, in union order (torso, head, arms and hands, legs and feet)."""
    p, s, jt, pts = sk.p, sk.scale, sk.joints, sk.points
    h = p.stature
    g = p.girth
    prims: list[Prim] = []
    y = sk.y

    limb = ""  # the limb group of the primitives being added ("arm", "leg"), "" = core

    def add(kind: str, a, b, ra: float, rb: float, blend: float, bones, mirror: bool) -> None:  # type: ignore[no-untyped-def]
        a, b = np.asarray(a, float), np.asarray(b, float)
        group = f"left_{limb}" if limb else ""
        prims.append(Prim(kind, a, b, ra, rb, blend, tuple(J[x] for x in bones), group))
        if mirror:
            a2, b2 = _mirror(a), (_mirror(b) if kind == "cone" else b)
            group = f"right_{limb}" if limb else ""
            prims.append(Prim(kind, a2, b2, ra, rb, blend, tuple(J[_other(x)] for x in bones), group))

    def ell(c, r, blend, bones, mirror=False):  # type: ignore[no-untyped-def]
        add("ellipsoid", c, r, 0.0, 0.0, blend, bones, mirror)

    def cone(a, b, ra, rb, blend, bones, mirror=False):  # type: ignore[no-untyped-def]
        add("cone", a, b, ra, rb, blend, bones, mirror)

    torso = ("pelvis", "spine1", "spine2", "spine3")
    # torso, bottom to top
    ell((0, y(0.53), -0.012 * s), (p.hip * h, 0.085 * h, 0.105 * s * g), 0.0, torso)
    ell(
        (0.055 * s, y(0.515), -0.055 * s),
        (0.075 * s * g, 0.085 * s, 0.07 * s * g),
        0.05 * s,
        torso,
        mirror=True,
    )
    ell((0, y(0.625), 0.0), (p.waist * h * g, 0.085 * s, 0.098 * s * g), 0.07 * s, torso)
    ell((0, y(0.715), -0.005 * s), (p.chest * h, 0.125 * s, 0.108 * s * g), 0.10 * s, torso)
    if p.bust > 0:
        rb = 0.05 * s * p.bust
        ell(
            (0.05 * s, y(0.712), 0.095 * s * g - 0.6 * rb),
            (rb, rb, rb),
            0.04 * s,
            ("spine2", "spine3"),
            mirror=True,
        )
    collar, shoulder = jt[J["left_collar"]], jt[J["left_shoulder"]]
    cone(
        _mirror(collar) + (0, -0.01 * s, 0),
        collar + (0, -0.01 * s, 0),
        0.075 * s * g,
        0.075 * s * g,
        0.05 * s,
        ("spine3",),
    )
    cone(collar, shoulder, 0.065 * s * g, 0.058 * s * g, 0.04 * s, ("left_collar",), mirror=True)
    # neck and head
    neck, head = jt[J["neck"]], jt[J["head"]]
    cone(
        neck + (0, -0.03 * s, 0.005 * s),
        head + (0, 0, -0.012 * s),
        0.062 * s * g,
        0.05 * s * g,
        0.035 * s,
        ("neck",),
    )
    crown = pts["crown"]
    cranium_r = np.array([0.077, 0.098, 0.099]) * s
    ell(crown - (0, cranium_r[1], -0.005 * s), cranium_r, 0.03 * s, ("head",))
    ell((0, y(0.893), 0.028 * s), np.array([0.060, 0.066, 0.072]) * s, 0.035 * s, ("jaw", "head"))
    ell((0, pts["chin"][1] + 0.018 * s, 0.072 * s), np.array([0.022, 0.017, 0.018]) * s, 0.02 * s, ("jaw",))
    ell(
        (0.036 * s, y(0.940), 0.076 * s),
        np.array([0.026, 0.010, 0.012]) * s,
        0.02 * s,
        ("head",),
        mirror=True,
    )  # brows
    cone(
        (0, y(0.935), 0.092 * s), (0, y(0.912), 0.113 * s), 0.009 * s, 0.0125 * s, 0.012 * s, ("head",)
    )  # nose
    ell(
        (0.011 * s, y(0.909), 0.104 * s),
        np.array([0.010, 0.008, 0.009]) * s,
        0.008 * s,
        ("head",),
        mirror=True,
    )
    ell((0, y(0.889), 0.090 * s), np.array([0.024, 0.007, 0.011]) * s, 0.014 * s, ("head",))  # upper lip
    ell((0, y(0.880), 0.088 * s), np.array([0.021, 0.007, 0.010]) * s, 0.014 * s, ("jaw",))  # lower lip
    ell(
        (0.079 * s, y(0.925), -0.01 * s),
        np.array([0.013, 0.029, 0.018]) * s,
        0.008 * s,
        ("head",),
        mirror=True,
    )
    # arms and hands (left, mirrored)
    limb = "arm"
    elbow, wrist = jt[J["left_elbow"]], jt[J["left_wrist"]]
    ell(
        shoulder + (0.005 * s, 0.004 * s, 0),
        np.array([0.062, 0.058, 0.057]) * s * g,
        0.04 * s,
        ("left_collar", "left_shoulder"),
        mirror=True,
    )
    cone(shoulder, elbow, 0.05 * s * g, 0.037 * s * g, 0.03 * s, ("left_shoulder",), mirror=True)
    cone(elbow, wrist, 0.041 * s * g, 0.028 * s * g, 0.02 * s, ("left_elbow",), mirror=True)
    ell(
        elbow + (0.06 * s, 0.004 * s, 0),
        np.array([0.07, 0.038, 0.039]) * s * g,
        0.02 * s,
        ("left_elbow",),
        mirror=True,
    )
    ell(
        wrist + (0.047 * s, -0.002 * s, 0.002 * s),
        np.array([0.05, 0.0155, 0.042]) * s,
        0.016 * s,
        ("left_wrist",),
        mirror=True,
    )
    for finger, (_, _, radius, _) in HAND.items():
        chain = [jt[J[f"left_{finger}{k}"]] for k in (1, 2, 3)] + [pts[f"left_{finger}_end"]]
        r = [radius * s, 0.97 * radius * s, 0.93 * radius * s, 0.9 * radius * s]
        base = wrist + np.array([0.045 * s, chain[0][1] - wrist[1], chain[0][2] - wrist[2]])
        cone(base, chain[0], radius * s, radius * s, 0.008 * s, ("left_wrist",), mirror=True)  # metacarpal
        for k in range(3):
            cone(chain[k], chain[k + 1], r[k], r[k + 1], 0.008 * s, (f"left_{finger}{k + 1}",), mirror=True)
    ell(
        wrist + (0.032 * s, -0.012 * s, 0.018 * s),
        np.array([0.03, 0.014, 0.02]) * s,
        0.012 * s,
        ("left_thumb1", "left_wrist"),
        mirror=True,
    )
    thumb = [jt[J[f"left_thumb{k}"]] for k in (1, 2, 3)] + [pts["left_thumb_end"]]
    tr = np.array([0.0125, 0.0115, 0.0102, 0.0088]) * s
    for k in range(3):
        cone(thumb[k], thumb[k + 1], tr[k], tr[k + 1], 0.008 * s, (f"left_thumb{k + 1}",), mirror=True)
    # legs and feet (left, mirrored)
    limb = "leg"
    hip, knee, ankle, foot = (jt[J[f"left_{n}"]] for n in ("hip", "knee", "ankle", "foot"))
    cone(
        hip + (0.016 * s, 0.01 * s, -0.005 * s),
        knee,
        0.072 * s * g,
        0.052 * s * g,
        0.04 * s,
        ("left_hip",),
        mirror=True,
    )
    ell(
        hip + 0.35 * (knee - hip) + (0.014 * s, 0, 0.012 * s),
        np.array([0.064, 0.14, 0.068]) * s * g,
        0.04 * s,
        ("left_hip",),
        mirror=True,
    )
    ell(
        knee + (0, 0.004 * s, 0.008 * s),
        np.array([0.047, 0.052, 0.047]) * s * g,
        0.02 * s,
        ("left_hip", "left_knee"),
        mirror=True,
    )
    cone(knee, ankle + (0, 0.01 * s, 0), 0.049 * s * g, 0.032 * s * g, 0.02 * s, ("left_knee",), mirror=True)
    ell(
        knee + 0.3 * (ankle - knee) + (0, 0, -0.022 * s),
        np.array([0.05, 0.095, 0.05]) * s * g,
        0.03 * s,
        ("left_knee",),
        mirror=True,
    )
    heel, bigtoe, smalltoe = pts["left_heel"], pts["left_bigtoe"], pts["left_smalltoe"]
    cone(
        ankle + (0, 0.005 * s, 0),
        heel + (0, 0.004 * s, 0.004 * s),
        0.034 * s,
        0.036 * s,
        0.02 * s,
        ("left_ankle",),
        mirror=True,
    )
    ell(
        (foot[0] - 0.004 * s, FLOOR_Y + 0.026 * s, 0.045 * s),
        np.array([0.045, 0.04, 0.095]) * s,
        0.03 * s,
        ("left_ankle",),
        mirror=True,
    )
    cone(
        foot + (-0.026 * s, -0.004 * s, 0),
        bigtoe - (0, 0, 0.012 * s),
        0.022 * s,
        0.018 * s,
        0.015 * s,
        ("left_foot",),
        mirror=True,
    )
    cone(
        foot + (0.02 * s, -0.008 * s, -0.01 * s),
        smalltoe - (0, 0, 0.01 * s),
        0.017 * s,
        0.013 * s,
        0.02 * s,
        ("left_foot",),
        mirror=True,
    )
    cone(
        foot + (0.0, -0.006 * s, 0.02 * s),
        0.5 * (bigtoe + smalltoe) - (0, 0, 0.01 * s),
        0.02 * s,
        0.015 * s,
        0.02 * s,
        ("left_foot",),
        mirror=True,
    )
    return prims


def _other(name: str) -> str:
    """The joint of the other side (left_x <-> right_x); a midline joint is its own mirror."""
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return name


def _groups(prims: list[Prim]) -> tuple[list[Prim], list[list[Prim]]]:
    core = [pr for pr in prims if not pr.group]
    names = sorted({pr.group for pr in prims if pr.group})
    return core, [[pr for pr in prims if pr.group == n] for n in names]


def _box(prims: list[Prim], margin: float) -> tuple[np.ndarray, np.ndarray]:
    lo = np.min([pr.bounds()[0] - pr.blend for pr in prims], axis=0) - margin
    hi = np.max([pr.bounds()[1] + pr.blend for pr in prims], axis=0) + margin
    return lo, hi


def body_sdf(prims: list[Prim], points: np.ndarray) -> np.ndarray:
    """Signed distance of the body (negative inside) at points (N,3), soles cut at FLOOR_Y.

    The core primitives are smoothly united in order; each limb group continues that union from
    the core on its own, and the body is the plain union of the limb fields (so the two thighs
    never web together).
    """
    pts = np.asarray(points, np.float64)
    core, limbs = _groups(prims)

    def union(field: np.ndarray, idx: np.ndarray, group: list[Prim]) -> np.ndarray:
        sub = pts[idx]
        order = np.argsort(sub[:, 0], kind="stable")
        xs = sub[order, 0]
        for pr in group:
            lo, hi = pr.bounds()
            m = pr.blend + 0.02
            cand = order[np.searchsorted(xs, lo[0] - m) : np.searchsorted(xs, hi[0] + m)]
            q = sub[cand, 1:]
            near = cand[np.all((q > lo[1:] - m) & (q < hi[1:] + m), axis=1)]
            if len(near):
                field[near] = _smin(field[near], pr.distance(sub[near]), pr.blend)
        return field

    everything = np.arange(len(pts))
    base = union(np.full(len(pts), 1.0), everything, core)
    field = base.copy()
    for group in limbs:
        lo, hi = _box(group, 0.02)
        idx = everything[np.all((pts > lo) & (pts < hi), axis=1)]
        field[idx] = np.minimum(field[idx], union(base[idx].copy(), idx, group))
    return np.maximum(field, FLOOR_Y - pts[:, 1])


def _sdf_grid(prims: list[Prim], lo: np.ndarray, step: float, shape: tuple[int, int, int]) -> np.ndarray:
    """body_sdf on the grid lo + step * (i, j, k), evaluating each primitive only near itself."""
    axes = [lo[d] + step * np.arange(shape[d]) for d in range(3)]

    def box(plo: np.ndarray, phi: np.ndarray, m: float) -> tuple[slice, ...]:
        i0 = np.maximum(np.floor((plo - m - lo) / step).astype(int), 0)
        i1 = np.minimum(np.ceil((phi + m - lo) / step).astype(int) + 1, shape)
        return tuple(slice(a, b) for a, b in zip(i0, i1))

    def union(field: np.ndarray, origin: tuple[slice, ...], group: list[Prim]) -> None:
        for pr in group:
            plo, phi = pr.bounds()
            sl = box(plo, phi, pr.blend + 2 * step)
            sl = tuple(slice(max(a.start, o.start), min(a.stop, o.stop)) for a, o in zip(sl, origin))
            xs, ys, zs = (axes[d][sl[d]] for d in range(3))
            pts = np.stack(
                np.broadcast_arrays(xs[:, None, None], ys[None, :, None], zs[None, None, :]), axis=-1
            )
            local = tuple(slice(a.start - o.start, a.stop - o.start) for a, o in zip(sl, origin))
            field[local] = _smin(field[local], pr.distance(pts), pr.blend)

    core, limbs = _groups(prims)
    whole = tuple(slice(0, n) for n in shape)
    base = np.full(shape, 1.0, dtype=np.float64)
    union(base, whole, core)
    field = base.copy()
    for group in limbs:
        sl = box(*_box(group, 2 * step), 0.0)
        part = base[sl].copy()
        union(part, sl, group)
        field[sl] = np.minimum(field[sl], part)
    field = np.maximum(field, FLOOR_Y - axes[1][None, :, None])
    return field.astype(np.float32)


# --------------------------------------------------------------------------------------
# Meshing: marching cubes -> decimation -> split longest edges to exactly NUM_VERTICES
# --------------------------------------------------------------------------------------

GRID_STEP = 0.005  # marching-cubes voxel size, metres
DECIMATED_VERTICES = 7600  # vertices kept by the decimation; edge splits add the rest


def _edges(faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique undirected edges (E,2) and, per face corner edge (F,3), its edge index.

    Face edge k of face (a, b, c) is (a,b), (b,c), (c,a) for k = 0, 1, 2.
    """
    faces = np.asarray(faces, np.int64)
    a, b = faces.ravel(), np.roll(faces, -1, axis=1).ravel()
    n = int(faces.max()) + 1
    keys, inverse = np.unique(np.minimum(a, b) * n + np.maximum(a, b), return_inverse=True)
    return np.stack([keys // n, keys % n], axis=1), inverse.reshape(-1, 3)


def _split_edges(verts: np.ndarray, faces: np.ndarray, split: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split the edges marked in ``split`` (E,) bool at their midpoints (one new vertex each).

    Faces are re-triangulated by how many of their edges are split (1 -> 2, 2 -> 3, 3 -> 4
    triangles), keeping their orientation, so a closed surface stays closed.
    """
    edges, fe = _edges(faces)
    new_id = np.full(len(edges), -1, np.int64)
    new_id[split] = len(verts) + np.arange(int(split.sum()))
    verts = np.concatenate([verts, 0.5 * (verts[edges[split, 0]] + verts[edges[split, 1]])])
    mids = new_id[fe]  # (F,3), -1 where not split
    out = [faces[(mids < 0).all(axis=1)]]
    for rot in range(3):  # rotate each face so its pattern starts at edge 0
        f = np.roll(faces, -rot, axis=1)
        m = np.roll(mids, -rot, axis=1)
        a, b, c = f.T
        m0, m1, m2 = m.T
        one = (m0 >= 0) & (m1 < 0) & (m2 < 0)
        out += [np.stack([a, m0, c], 1)[one], np.stack([m0, b, c], 1)[one]]
        two = (m0 >= 0) & (m1 >= 0) & (m2 < 0)  # edge (c,a) whole
        out += [np.stack([m0, b, m1], 1)[two], np.stack([a, m0, m1], 1)[two], np.stack([a, m1, c], 1)[two]]
    a, b, c = faces.T
    m0, m1, m2 = mids.T
    three = (mids >= 0).all(axis=1)
    out += [np.stack(t, 1)[three] for t in ((a, m0, m2), (m0, b, m1), (m2, m1, c), (m0, m1, m2))]
    return verts, np.concatenate(out).astype(np.int64)


def _project(prims: list[Prim], pts: np.ndarray, iters: int = 2) -> np.ndarray:
    """Move points onto the zero level of the body's distance field (Newton steps along the gradient)."""
    eps = 1e-5
    n = len(pts)
    for _ in range(iters):
        vals = body_sdf(prims, np.concatenate([pts] + [pts + eps * e for e in np.eye(3)]))
        d = vals[:n]
        grad = (vals[n:].reshape(3, n) - d).T / eps
        pts = pts - (d / np.maximum(np.sum(grad * grad, axis=1), 1e-8))[:, None] * grad
    return pts


def _neighbour_mean(verts: np.ndarray, faces: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over each vertex's edge neighbours (uniform weights)."""
    from scipy import sparse

    edges, _ = _edges(faces)
    n = len(verts)
    i = np.concatenate([edges[:, 0], edges[:, 1]])
    j = np.concatenate([edges[:, 1], edges[:, 0]])
    adj = sparse.csr_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    deg = np.asarray(adj.sum(axis=1)).ravel()
    return (adj @ values) / deg.reshape((-1,) + (1,) * (values.ndim - 1))


def build_mesh(
    sk: Skeleton, prims: list[Prim], num_vertices: int = NUM_VERTICES
) -> tuple[np.ndarray, np.ndarray]:
    """The closed, outward-oriented surface of the body with exactly ``num_vertices`` vertices.

    Marching cubes on a 5 mm grid, quadric decimation (curvature-adaptive), then the longest
    edges are split -- lengths weighted up on the hands, face and feet so these get finer -- with
    the new vertices put on the implicit surface, and a few rounds of tangential smoothing.
    """
    jt = sk.joints
    hand_x = jt[J["left_wrist"], 0] - 0.03 * sk.scale
    head_y = sk.points["chin"][1] - 0.03 * sk.scale

    def detail(p: np.ndarray) -> np.ndarray:  # how much finer than the body each region should be
        out = np.ones(len(p))
        out[np.abs(p[:, 0]) > hand_x] = 2.2
        out[(p[:, 1] > head_y) & (np.abs(p[:, 0]) < 0.15)] = 1.6
        out[p[:, 1] < FLOOR_Y + 0.1 * sk.scale] = 1.4
        return out

    import fast_simplification
    from skimage import measure

    lo = np.min([pr.bounds()[0] for pr in prims], axis=0) - 0.02
    hi = np.max([pr.bounds()[1] for pr in prims], axis=0) + 0.02
    lo[1] = FLOOR_Y - 2 * GRID_STEP
    shape = tuple(int(n) for n in np.ceil((hi - lo) / GRID_STEP).astype(int) + 1)
    field = _sdf_grid(prims, lo, GRID_STEP, shape)  # type: ignore[arg-type]
    verts, faces, _, _ = measure.marching_cubes(field, 0.0, spacing=(GRID_STEP,) * 3)
    verts = verts.astype(np.float64) + lo
    target_faces = 2 * DECIMATED_VERTICES - 4
    verts, faces = fast_simplification.simplify(
        verts, faces.astype(np.int32), target_count=target_faces, agg=5
    )
    verts = _project(prims, verts)
    # refine: split the longest edges, a share of the remainder per round, until the count is exact
    while len(verts) < num_vertices:
        edges, _ = _edges(faces)
        length = np.linalg.norm(verts[edges[:, 0]] - verts[edges[:, 1]], axis=1)
        length *= detail(0.5 * (verts[edges[:, 0]] + verts[edges[:, 1]]))
        need = num_vertices - len(verts)
        take = need if need < 200 else max(200, need // 3)
        split = np.zeros(len(edges), bool)
        split[np.argsort(-length, kind="stable")[:take]] = True
        verts, faces = _split_edges(verts, faces, split)
        verts[-take:] = _project(prims, verts[-take:])
    # relax: tangential smoothing for evenly shaped triangles, kept on the surface; a vertex
    # whose move would tilt one of its triangles away from the surface normal stays put
    for _ in range(4):
        normals = _vertex_normals(verts, faces)
        step = _neighbour_mean(verts, faces, verts) - verts
        step -= np.sum(step * normals, axis=1, keepdims=True) * normals
        moved = _project(prims, verts + 0.5 * step, iters=3)
        bad = faces[_misoriented(prims, moved, faces)]
        keep = np.zeros(len(verts), bool)
        keep[bad.ravel()] = True
        verts = np.where(keep[:, None], verts, moved)
    return verts, faces.astype(np.int32)


def _misoriented(prims: list[Prim], verts: np.ndarray, faces: np.ndarray, limit: float = 0.3) -> np.ndarray:
    """(F,) faces whose normal is tilted far from the surface's outward normal (or flipped)."""
    tri = verts[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-20)
    c = tri.mean(axis=1)
    eps = 1e-5
    vals = body_sdf(prims, np.concatenate([c] + [c + eps * e for e in np.eye(3)]))
    grad = (vals[len(c) :].reshape(3, -1) - vals[: len(c)]).T
    grad /= np.maximum(np.linalg.norm(grad, axis=1, keepdims=True), 1e-20)
    return np.sum(n * grad, axis=1) < limit


def _vertex_normals(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = verts[faces]
    fn = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    vn = np.zeros_like(verts)
    for k in range(3):
        np.add.at(vn, faces[:, k], fn)
    return vn / np.maximum(np.linalg.norm(vn, axis=1, keepdims=True), 1e-12)


# --------------------------------------------------------------------------------------
# Bones, skin weights and the joint regressor
# --------------------------------------------------------------------------------------


def bone_segments(sk: Skeleton) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (55,3) of the bone each joint rotates (start = end for the eyes: no bone)."""
    jt, pts = sk.joints, sk.points
    start = jt.copy()
    end = jt.copy()
    child = {J["spine1"]: J["spine2"], J["spine2"]: J["spine3"], J["spine3"]: J["neck"], J["neck"]: J["head"]}
    for side in ("left", "right"):
        chain = ["collar", "shoulder", "elbow", "wrist"]
        for a, b in zip(chain, chain[1:]):
            child[J[f"{side}_{a}"]] = J[f"{side}_{b}"]
        child[J[f"{side}_wrist"]] = J[f"{side}_middle1"]
        for a, b in (("hip", "knee"), ("knee", "ankle"), ("ankle", "foot")):
            child[J[f"{side}_{a}"]] = J[f"{side}_{b}"]
        for finger in FINGERS:
            child[J[f"{side}_{finger}1"]] = J[f"{side}_{finger}2"]
            child[J[f"{side}_{finger}2"]] = J[f"{side}_{finger}3"]
            end[J[f"{side}_{finger}3"]] = pts[f"{side}_{finger}_end"]
        end[J[f"{side}_foot"]] = 0.5 * (pts[f"{side}_bigtoe"] + pts[f"{side}_smalltoe"])
    for j, c in child.items():
        end[j] = jt[c]
    start[J["pelvis"]] = pts["hips_mid"] - (0, 0.05 * sk.p.stature, 0)
    end[J["pelvis"]] = jt[J["spine1"]]
    end[J["head"]] = pts["crown"]
    end[J["jaw"]] = pts["chin"]
    return start, end


def _closest_on_segments(verts: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Closest point (V,S,3) on each segment to each vertex."""
    d = end - start
    l2 = np.maximum(np.sum(d * d, axis=1), 1e-12)
    t = np.clip(np.einsum("vsk,sk->vs", verts[:, None] - start[None], d) / l2, 0.0, 1.0)
    return start[None] + t[..., None] * d[None]


HAND_BLEND = 0.12  # smoothing rate of the skin weights on the fingers (0.3 palm, 0.5 elsewhere)


def skin_weights(verts: np.ndarray, faces: np.ndarray, prims: list[Prim], sk: Skeleton) -> np.ndarray:
    """(V,55) LBS weights: each vertex starts on the nearest bone of the primitive that made it,
    then the weights are smoothed over the surface (blends of a few cm across joints, narrower
    on the fine hand and face), cut to the 4 largest and renormalised."""
    dist = np.stack([pr.distance(verts) for pr in prims], axis=1)  # (V,P)
    owner = np.argmin(dist, axis=1)
    start, end = bone_segments(sk)
    bone_d = np.linalg.norm(verts[:, None] - _closest_on_segments(verts, start, end), axis=-1)  # (V,55)
    allowed = np.zeros((len(prims), NUM_JOINTS), bool)
    for i, pr in enumerate(prims):
        allowed[i, list(pr.bones)] = True
    bone = np.argmin(np.where(allowed[owner], bone_d, np.inf), axis=1)
    w = np.zeros((len(verts), NUM_JOINTS))
    w[np.arange(len(verts)), bone] = 1.0
    # blend rate per vertex: the fine, short-boned hands blend over fewer centimetres
    finger = np.isin(bone, _joint_set([f"{f}{k}" for f in FINGERS for k in (1, 2, 3)]))
    rate = np.where(finger, HAND_BLEND, np.where(np.isin(bone, _joint_set(["wrist"])), 0.3, 0.5))[:, None]
    for _ in range(12):
        w += rate * (_neighbour_mean(verts, faces, w) - w)
    return _top_k(w, 4)


def _top_k(w: np.ndarray, k: int) -> np.ndarray:
    """Keep the k largest entries of each row (dropping those under 1 %), renormalised."""
    idx = np.argsort(-w, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(w, idx, axis=1)
    top = np.where(top >= 0.01 * top[:, :1], top, 0.0)
    out = np.zeros_like(w)
    np.put_along_axis(out, idx, top / top.sum(axis=1, keepdims=True), axis=1)
    return out


def joint_regressor(verts: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """(55,V) rows of local, positive weights that sum to 1 and reproduce ``joints`` exactly.

    Each row holds maximum-entropy coordinates of the joint over the vertices around it: weights
    w_i ~ g_i exp(lambda . (v_i - joint)) with a Gaussian locality prior g_i, lambda solved by
    Newton's method so that sum_i w_i v_i = joint. The neighbourhood grows until it surrounds the
    joint.
    """
    from scipy.spatial import cKDTree

    tree = cKDTree(verts)
    reg = np.zeros((len(joints), len(verts)))
    for j, q in enumerate(joints):
        d0 = tree.query(q)[0]
        radius = 1.6 * d0 + 0.004
        for _ in range(40):
            idx = np.array(tree.query_ball_point(q, radius), dtype=np.int64)
            w = _maxent_weights(verts[idx] - q, radius) if len(idx) >= 4 else None
            if w is not None:
                break
            radius *= 1.2
        else:
            raise RuntimeError(f"joint {bundle.JOINT_NAMES[j]}: no surrounding vertices")
        reg[j, idx] = w
    return reg


def _maxent_weights(u: np.ndarray, radius: float) -> np.ndarray | None:
    """Weights w >= 0, sum 1, sum w u = 0 (u: (n,3) offsets from the joint); None if the
    joint lies outside the points' hull."""
    prior = np.exp(-2.0 * np.sum(u * u, axis=1) / radius**2)
    lam = np.zeros(3)
    for _ in range(100):
        z = u @ lam
        w = prior * np.exp(z - z.max())
        w /= w.sum()
        grad = w @ u
        if np.abs(grad).max() < 1e-13:
            return w
        cov = (u * w[:, None]).T @ u - np.outer(grad, grad)
        try:
            step = np.linalg.solve(cov + 1e-14 * np.eye(3), grad)
        except np.linalg.LinAlgError:
            return None
        lam -= step
        if np.abs(lam).max() * radius > 60:  # diverging: the joint is outside the hull
            return None
    return None


# --------------------------------------------------------------------------------------
# Named vertices (smplx's SMPL-X vertex ids), shape and expression spaces, hands, landmarks
# --------------------------------------------------------------------------------------


def _named_specs(sk: Skeleton) -> dict[str, tuple[np.ndarray, float, np.ndarray]]:
    """For each of smplx's named vertices: (centre, radius, direction) -- the named vertex is the
    vertex within ``radius`` of ``centre`` that lies furthest along ``direction``."""
    s, jt, pts = sk.scale, sk.joints, sk.points
    out: dict[str, tuple[np.ndarray, float, np.ndarray]] = {}
    fwd = np.array([0.0, 0.0, 1.0])
    nose = jt[J["head"]] * (0, 1, 0) + (0, 0.007 * sk.p.stature, 0.11 * s)
    out["nose"] = (nose, 0.03 * s, fwd)
    for side, name, sign in (("l", "left", 1.0), ("r", "right", -1.0)):
        out[f"{side}eye"] = (jt[J[f"{name}_eye_smplhf"]] + (0, 0, 0.02 * s), 0.012 * s, fwd)
        ear = np.array([sign * 0.079 * s, FLOOR_Y + 0.925 * sk.p.stature, -0.01 * s])
        out[f"{side}ear"] = (ear, 0.02 * s, np.array([sign, 0.0, 0.0]))
        for finger in FINGERS:
            end = pts[f"{name}_{finger}_end"]
            d = end - jt[J[f"{name}_{finger}3"]]
            out[f"{side}{finger}"] = (end, 0.012 * s, d / np.linalg.norm(d))
    for side, name, sign in (("L", "left", 1.0), ("R", "right", -1.0)):
        out[f"{side}BigToe"] = (pts[f"{name}_bigtoe"], 0.02 * s, np.array([-0.2 * sign, 0.0, 1.0]))
        out[f"{side}SmallToe"] = (pts[f"{name}_smalltoe"], 0.02 * s, np.array([0.3 * sign, 0.0, 1.0]))
        out[f"{side}Heel"] = (pts[f"{name}_heel"], 0.04 * s, np.array([0.0, -0.5, -1.0]))
    return out


def named_vertices(verts: np.ndarray, sk: Skeleton) -> dict[str, int]:
    """Index (into ``verts``) of each of smplx's named SMPL-X vertices on this mesh."""
    out: dict[str, int] = {}
    for name, (centre, radius, direction) in _named_specs(sk).items():
        near = np.flatnonzero(np.sum((verts - centre) ** 2, axis=1) < radius**2)
        if not len(near):
            raise RuntimeError(f"stand-in: no vertex near the {name} point {np.round(centre, 3)}")
        out[name] = int(near[np.argmax(verts[near] @ direction)])
    if len(set(out.values())) != len(out):
        raise RuntimeError("two named stand-in vertices coincide")
    return {name: out[name] for name in VERTEX_IDS}


def _permutation(num: int, chosen: dict[str, int]) -> np.ndarray:
    """perm with perm[VERTEX_IDS[name]] = chosen[name] and the other vertices in their order."""
    perm = np.full(num, -1, np.int64)
    for name, old in chosen.items():
        perm[VERTEX_IDS[name]] = old
    perm[perm < 0] = np.setdiff1d(np.arange(num), list(chosen.values()))
    return perm


def _soft_clamp01(t: np.ndarray, a: float = 0.15, lower: bool = True) -> np.ndarray:
    """clip(t, 0, 1) with the corners rounded over +-a (continuous slope); ``lower=False`` keeps
    the lower corner sharp (so t <= 0 maps to exactly 0)."""
    t = np.asarray(t, np.float64)
    out = np.clip(t, 0.0, 1.0)
    if lower:
        lo = np.abs(t) < a
        out[lo] = (t[lo] + a) ** 2 / (4 * a)
    hi = np.abs(t - 1) < a
    out[hi] = t[hi] - (t[hi] - (1 - a)) ** 2 / (4 * a)
    return out


def _joint_set(names: list[str]) -> list[int]:
    out = []
    for n in names:
        out += [J[n]] if n in J else [J[f"left_{n}"], J[f"right_{n}"]]
    return out


def shape_dirs(verts: np.ndarray, weights: np.ndarray, sk: Skeleton) -> np.ndarray:
    """(V,3,10) shape components, one unit each ~ one standard deviation (module docstring)."""
    h, s, jt = sk.p.stature, sk.scale, sk.joints
    x, y, z = verts.T
    side = np.sign(x)
    dirs = np.zeros((len(verts), 3, NUM_SHAPE))
    fingers = [f"{f}{k}" for f in FINGERS for k in (1, 2, 3)]
    arm = weights[:, _joint_set(["shoulder", "elbow", "wrist", *fingers])].sum(axis=1)
    collar = weights[:, _joint_set(["collar"])].sum(axis=1)
    torso = weights[:, _joint_set(["pelvis", "spine1", "spine2", "spine3"])].sum(axis=1)
    # 0 stature: scale about the floor point between the feet
    dirs[:, :, 0] = 0.03 * (verts - (0.0, FLOOR_Y, 0.0))
    # 1 girth: radial growth around each vertex's bones
    start, end = bone_segments(sk)
    radial = verts[:, None] - _closest_on_segments(verts, start, end)  # (V,55,3)
    gain = np.zeros(NUM_JOINTS)
    for names, g in (
        (["pelvis", "spine1", "spine2"], 0.12), (["spine3"], 0.09), (["hip"], 0.10), (["knee"], 0.06),
        (["neck", "collar"], 0.06), (["shoulder"], 0.09), (["elbow"], 0.06), (["head", "jaw"], 0.02),
        (["wrist", *fingers], 0.02),
    ):  # fmt: skip
        gain[_joint_set(names)] = g
    dirs[:, :, 1] = np.einsum("vj,j,vjk->vk", weights, gain, radial)
    # 2 shoulder width: the shoulders move outwards, the hands stay (the arms shorten)
    sx, wx = jt[J["left_shoulder"], 0], jt[J["left_wrist"], 0]
    reach = _soft_clamp01((np.abs(x) - sx) / (wx - sx))  # 0 at the shoulder .. 1 from the wrist on
    dirs[:, 0, 2] = side * 0.02 * (1 - reach) * (arm + 0.5 * collar)
    # 3 hip width: the legs move apart and the pelvis widens between them
    hip_y = jt[J["left_hip"], 1]
    legs = weights[:, _joint_set(["hip", "knee", "ankle", "foot"])].sum(axis=1)
    pelvis = weights[:, J["pelvis"]] * np.exp(-(((y - hip_y) / (0.08 * h)) ** 2))
    dirs[:, 0, 3] = 0.02 * np.tanh(x / (0.05 * s)) * (legs + pelvis)
    # 4 leg length: the legs lengthen, the torso shortens (the hips rise 3 cm, the head stays) ...
    hip_frac = (hip_y - FLOOR_Y) / h
    ramp = _soft_clamp01((y - FLOOR_Y) / (hip_y - FLOOR_Y), lower=False) - (y - FLOOR_Y) / h
    dirs[:, 1, 4] = 0.03 * ramp / (1 - hip_frac)
    # 5 arm length: shoulder to wrist, hands carried along
    dirs[:, 0, 5] = side * 0.025 * reach * arm
    # 6 head size about the centre of the head
    head = weights[:, _joint_set(["head", "jaw"])].sum(axis=1)
    centre = jt[J["head"]] + (0, 0.035 * s, 0.0)
    dirs[:, :, 6] = 0.06 * (verts - centre) * head[:, None]
    # 7 belly: the abdomen pushes forward
    belly_y = 0.5 * (jt[J["spine1"], 1] + jt[J["pelvis"], 1])
    bump = np.exp(-(((y - belly_y) / (0.06 * h)) ** 2)) * np.exp(-((x / (0.1 * s)) ** 2))
    dirs[:, 2, 7] = 0.03 * bump * _soft_clamp01(z / (0.08 * s)) * torso
    # 8 chest depth
    chest_y = jt[J["spine3"], 1]
    chest = np.exp(-(((y - chest_y) / (0.05 * h)) ** 2)) * (1 - arm)
    dirs[:, 2, 8] = 0.12 * (z - jt[J["spine3"], 2]) * chest * torso
    # 9 neck length: the head rises
    ny, hy = jt[J["neck"], 1], jt[J["head"], 1]
    dirs[:, 1, 9] = 0.015 * _soft_clamp01((y - ny) / (hy - ny)) * (1 - arm)
    # ... 4 and 9 lengthen the body: take out their share of stature so they stay uncorrelated with it
    flat = dirs.reshape(-1, NUM_SHAPE)
    for k in (4, 9):
        flat[:, k] -= (flat[:, k] @ flat[:, 0]) / (flat[:, 0] @ flat[:, 0]) * flat[:, 0]
    return dirs


def expression_dirs(verts: np.ndarray, weights: np.ndarray, sk: Skeleton) -> np.ndarray:
    """(V,3,10) expression components on the face (a few millimetres per unit)."""
    s, jt = sk.scale, sk.joints
    front = _soft_clamp01((verts[:, 2] - jt[J["head"], 2] - 0.03 * s) / (0.04 * s))
    front *= _soft_clamp01((verts[:, 1] - sk.points["chin"][1] + 0.02 * s) / (0.02 * s))  # not the neck
    face = weights[:, _joint_set(["head", "jaw"])].sum(axis=1) * front

    y = sk.y

    def bump(cx: float, cy: float, sigma: float) -> np.ndarray:
        c = np.array([cx * s, cy, 0.09 * s])
        return np.exp(-np.sum((verts - c) ** 2, axis=1) / (sigma * s) ** 2) * face

    mouth_y, brow_y, eye_y = y(0.884), y(0.94), y(0.936)
    d = np.zeros((len(verts), 3, NUM_EXPRESSION))
    d[:, :, 0] = np.array([0.0, -0.006, -0.002]) * (weights[:, J["jaw"]] * front)[:, None]
    for sx in (1.0, -1.0):
        corner = bump(0.024 * sx, mouth_y, 0.015)[:, None]
        d[:, :, 1] += np.array([0.003 * sx, 0.003, -0.002]) * corner
        d[:, :, 2] += np.array([0.0, 0.004, 0.0]) * bump(0.036 * sx, brow_y, 0.02)[:, None]
        d[:, :, 3] += np.array([-0.002 * sx, -0.003, 0.001]) * bump(0.016 * sx, brow_y, 0.015)[:, None]
        d[:, :, 4] += np.array([-0.002 * sx, 0.0, 0.002]) * corner
        d[:, :, 5] += np.array([0.004 * sx, 0.0, 0.002]) * bump(0.045 * sx, y(0.9), 0.022)[:, None]
        d[:, :, 6] += np.array([0.0, -0.002, 0.0]) * bump(0.033 * sx, eye_y + 0.008 * s, 0.01)[:, None]
        d[:, :, 6] += np.array([0.0, 0.0015, 0.0]) * bump(0.033 * sx, eye_y - 0.008 * s, 0.01)[:, None]
        d[:, :, 7] += np.array([0.004 * sx, 0.0, -0.001]) * corner
        if sx > 0:
            d[:, :, 9] += np.array([0.003, 0.004, -0.002]) * corner
    d[:, :, 4] += np.array([0.0, 0.0, 0.005]) * bump(0.0, mouth_y, 0.015)[:, None]
    d[:, :, 8] = np.array([0.0, 0.002, -0.001]) * bump(0.0, y(0.915), 0.015)[:, None]
    return d


def _flex_axes() -> np.ndarray:
    """(15,3) unit axes that curl each left-hand joint towards the palm (SMPL-X hand order)."""
    axes = np.zeros((15, 3))
    palm = np.array([0.0, -1.0, 0.0])
    for i, finger in enumerate(FINGERS):
        if finger == "thumb":
            d = np.array(THUMB[3]) - np.array(THUMB[0])
            d /= np.linalg.norm(d)
            ax = np.cross(d, palm)
        else:
            ax = np.cross(np.array([1.0, 0.0, 0.0]), palm)  # fingers point +x: -z
        axes[3 * i : 3 * i + 3] = ax / np.linalg.norm(ax)
    return axes


def hand_pca() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Left/right orthonormal hand-pose bases (45,45), rows = components, and relaxed means (45,).

    The first components: curl of all fingers, spread, thumb opposition, knuckle vs tip curl,
    pointing (index straight, others curled), the rest completes the basis.
    """
    axes = _flex_axes()
    spread_axis = np.array([0.0, 1.0, 0.0])
    fi = {f: i for i, f in enumerate(FINGERS)}
    comps = []
    curl = np.zeros((15, 3))
    for i in range(15):
        curl[i] = axes[i] * (0.6 if i >= 12 else 1.0)
    comps.append(curl)
    spread = np.zeros((15, 3))
    for f, a in (("index", 1.0), ("middle", 0.2), ("ring", -0.6), ("pinky", -1.0), ("thumb", 0.8)):
        spread[3 * fi[f]] = a * spread_axis
    comps.append(spread)
    opp = np.zeros((15, 3))
    opp[3 * fi["thumb"] : 3 * fi["thumb"] + 3] = axes[12:15] + np.array([0.5, 0.0, 0.0])
    comps.append(opp)
    knuckles = np.zeros((15, 3))
    for f in FINGERS[:4]:
        knuckles[3 * fi[f]] = axes[3 * fi[f]]
        knuckles[3 * fi[f] + 1 : 3 * fi[f] + 3] = -0.5 * axes[3 * fi[f] + 1 : 3 * fi[f] + 3]
    comps.append(knuckles)
    point = np.zeros((15, 3))
    for f in FINGERS:
        point[3 * fi[f] : 3 * fi[f] + 3] = axes[3 * fi[f] : 3 * fi[f] + 3] * (-1.0 if f == "index" else 0.5)
    comps.append(point)
    rows: list[np.ndarray] = []
    for c in [c.ravel() for c in comps] + list(np.eye(45)):  # Gram-Schmidt in this order
        for r in rows:
            c = c - (c @ r) * r
        if np.linalg.norm(c) > 1e-6:
            rows.append(c / np.linalg.norm(c))
    left = np.array(rows[:45])
    mean = np.zeros((15, 3))
    for f in FINGERS:
        i = fi[f]
        amount = (0.15, 0.1, 0.05) if f == "thumb" else (0.25, 0.35, 0.2)
        mean[3 * i : 3 * i + 3] = axes[3 * i : 3 * i + 3] * np.array(amount)[:, None]
    mean[3 * fi["pinky"] : 3 * fi["pinky"] + 3] *= 1.3
    mirror = np.tile([1.0, -1.0, -1.0], 15)  # axis-angle mirrored across x = 0
    return left, left * mirror, mean.ravel(), mean.ravel() * mirror


def _surface_hits(
    verts: np.ndarray, faces: np.ndarray, targets: np.ndarray, candidates: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """For targets (N,3): a face near each (among faces of ``candidates`` vertices) and the
    barycentric coordinates of the target's projection into it (clamped inside)."""
    from scipy.spatial import cKDTree

    cand = np.flatnonzero(candidates)
    tree = cKDTree(verts[cand])
    _, nearest = tree.query(targets)
    vid = cand[nearest]
    face_of = np.full(len(verts), -1, np.int64)
    face_of[faces[:, 0]] = np.arange(len(faces))
    face_of[faces[:, 1]] = np.arange(len(faces))
    face_of[faces[:, 2]] = np.arange(len(faces))
    fid = face_of[vid]
    tri = verts[faces[fid]]
    e0, e1 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    rel = targets - tri[:, 0]
    d00, d01, d11 = np.sum(e0 * e0, 1), np.sum(e0 * e1, 1), np.sum(e1 * e1, 1)
    d20, d21 = np.sum(rel * e0, 1), np.sum(rel * e1, 1)
    den = d00 * d11 - d01 * d01
    b1 = (d11 * d20 - d01 * d21) / den
    b2 = (d00 * d21 - d01 * d20) / den
    bary = np.clip(np.stack([1 - b1 - b2, b1, b2], 1), 0.0, None)
    return fid, bary / bary.sum(axis=1, keepdims=True)


def face_landmarks(verts: np.ndarray, faces: np.ndarray, sk: Skeleton) -> dict[str, np.ndarray]:
    """SMPL-X's landmark arrays: 51 static face landmarks and the 17-point jaw contour per yaw.

    The 51 follow the 68-point iBUG layout without its 17 contour points: brows (10), nose bridge
    (4) and base (5), eyes (6 + 6), outer (12) and inner (8) lips; as seen from the front each
    group runs from the subject's right (-x) to the left, the eyes and lips round their top
    first. The contour runs from the right ear round the chin to the left ear.
    """
    s, jt, y = sk.scale, sk.joints, sk.y

    pts: list[tuple[float, float]] = []
    for sx in (-1.0, 1.0):  # brows, subject's right (-x) first, both in increasing x
        xs = [0.058, 0.048, 0.037, 0.027, 0.017]
        xs = xs if sx < 0 else xs[::-1]
        pts += [(sx * xx * s, y(0.941) + 0.004 * s * np.sin(np.pi * (xx - 0.012) / 0.05)) for xx in xs]
    pts += [(0.0, y(0.934) - k * 0.007 * s) for k in range(4)]  # nose bridge to tip
    pts += [(xx * s, y(0.906)) for xx in (-0.016, -0.008, 0.0, 0.008, 0.016)]
    ang = np.radians([0, 60, 120, 180, 240, 300])
    for sx in (-1.0, 1.0):  # eyes (right first), each from its -x corner along the top lid, back below
        pts += [(0.033 * sx * s - 0.013 * s * np.cos(t), y(0.936) + 0.005 * s * np.sin(t)) for t in ang]
    for rx, ry, n in ((0.025, 0.009, 12), (0.018, 0.003, 8)):  # outer then inner lip, from the right corner
        ang = np.pi - 2 * np.pi * np.arange(n) / n
        pts += [(rx * s * np.cos(a), y(0.884) + ry * s * np.sin(a)) for a in ang]
    targets = np.array([(px, py, 0.2 * s) for px, py in pts])
    front = (verts[:, 2] > jt[J["head"], 2] + 0.03 * s) & (verts[:, 1] > sk.points["chin"][1] - 0.01 * s)
    front &= np.abs(verts[:, 0]) < 0.07 * s
    # nearest in the image plane (x, y): squash z so the front surface wins
    squash = np.array([1.0, 1.0, 1e-3])
    fid, bary = _surface_hits(verts * squash, faces, targets * squash, front)
    # jaw contour: 17 points from the right ear round the chin to the left ear, per yaw
    centre = np.array([0.0, y(0.9), jt[J["head"], 2]])
    yaws = np.arange(-39, 40)
    base = np.radians(np.linspace(-80, 80, 17))
    dyn_t = []
    for yaw in yaws:
        th = base * (1 - abs(yaw) / 150) - np.radians(yaw) * 0.5
        lift = 0.045 * s * np.abs(np.sin(th)) ** 1.5
        dyn_t.append(centre + np.stack([0.1 * s * np.sin(th), -0.05 * s + lift, 0.1 * s * np.cos(th)], 1))
    dyn = np.concatenate(dyn_t)
    head = verts[:, 1] > sk.points["chin"][1] - 0.03 * s
    dfid, dbary = _surface_hits(verts, faces, dyn, head)
    return {
        "lmk_faces_idx": fid.astype(np.int64),
        "lmk_bary_coords": bary,
        "dynamic_lmk_faces_idx": dfid.reshape(len(yaws), 17).astype(np.int64),
        "dynamic_lmk_bary_coords": dbary.reshape(len(yaws), 17, 3),
    }


# --------------------------------------------------------------------------------------
# Assembly, files, command line
# --------------------------------------------------------------------------------------


def generate(gender: str = "neutral", seed: int = 0) -> dict[str, np.ndarray]:
    """All arrays of one stand-in SMPL-X NPZ file (see the module docstring)."""
    if gender not in GENDERS:
        raise ValueError(f"gender must be one of {GENDERS}, not {gender!r}")
    sk = skeleton(proportions(gender, seed))
    prims = primitives(sk)
    verts, faces = build_mesh(sk, prims)
    perm = _permutation(len(verts), named_vertices(verts, sk))
    inverse = np.empty_like(perm)
    inverse[perm] = np.arange(len(perm))
    verts, faces = verts[perm], inverse[faces]
    weights = skin_weights(verts, faces, prims, sk)
    left, right, mean_l, mean_r = hand_pca()
    parents = np.array(bundle.SMPLX_PARENTS, np.int64)
    parents[0] = ROOT_PARENT
    out = {
        "v_template": verts,
        "f": faces.astype(np.int32),
        "J_regressor": joint_regressor(verts, sk.joints),
        "kintree_table": np.stack([parents, np.arange(NUM_JOINTS)]),
        "weights": weights,
        "shapedirs": np.concatenate(
            [shape_dirs(verts, weights, sk), expression_dirs(verts, weights, sk)], axis=2
        ),
        "posedirs": np.zeros((len(verts), 3, (NUM_JOINTS - 1) * 9), np.float32),
        "hands_componentsl": left,
        "hands_componentsr": right,
        "hands_meanl": mean_l,
        "hands_meanr": mean_r,
        **face_landmarks(verts, faces, sk),
        STANDIN_KEY: np.array(True),
        VERSION_KEY: np.array(GENERATOR_VERSION),
        SEED_KEY: np.array(seed),
        NOTE_KEY: np.array(NOTE),
        "troupe_standin_gender": np.array(gender),
    }
    return out


def designed_joints(gender: str = "neutral", seed: int = 0) -> np.ndarray:
    """(55,3) the joints the stand-in was built around (``J_regressor @ v_template`` equals them)."""
    return skeleton(proportions(gender, seed)).joints.copy()


def write_standin(
    folder: str | os.PathLike[str], genders: tuple[str, ...] = GENDERS, seed: int = 0
) -> list[Path]:
    """Generate and write ``SMPLX_<GENDER>.npz`` stand-ins into ``folder`` (atomically per file)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for gender in genders:
        arrays = generate(gender, seed)
        path = folder / model_filename(gender)
        fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".npz.tmp", dir=folder)
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
        paths.append(path)
    return paths


def is_current(path: str | os.PathLike[str], seed: int = 0) -> bool:
    """Whether ``path`` is a stand-in written by this generator version with this seed."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return (
                STANDIN_KEY in z.files and VERSION_KEY in z.files and SEED_KEY in z.files
                and int(z[VERSION_KEY]) == GENERATOR_VERSION and int(z[SEED_KEY]) == seed
            )  # fmt: skip
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return False


def ensure_standin(folder: str | os.PathLike[str], genders: tuple[str, ...] = GENDERS, seed: int = 0) -> Path:
    """``folder`` holding current stand-ins of ``genders``; generates only what is missing or stale."""
    folder = Path(folder)
    stale = tuple(g for g in genders if not is_current(folder / model_filename(g), seed))
    if stale:
        write_standin(folder, stale, seed)
    return folder


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, type=Path, help="folder to write SMPLX_<GENDER>.npz stand-ins into"
    )
    parser.add_argument(
        "--genders", default=",".join(GENDERS), help="comma-separated genders to write (default: %(default)s)"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="0 = the canonical stand-in; others vary proportions by ~2%% (default: 0)",
    )


def main(args: argparse.Namespace) -> int:
    import sys
    import time

    genders = tuple(g.strip().lower() for g in args.genders.split(",") if g.strip())
    bad = [g for g in genders if g not in GENDERS]
    if bad or not genders:
        print(
            f"--genders: expected a comma-separated subset of {','.join(GENDERS)}, got {args.genders!r}",
            file=sys.stderr,
        )
        return 2
    t0 = time.perf_counter()
    paths = write_standin(args.out, genders, args.seed)
    for p in paths:
        print(p)
    print(
        f"wrote {len(paths)} stand-in model file(s) in {time.perf_counter() - t0:.1f} s: generated test and demo "
        "data with SMPL-X's structure, not a human body model",
        file=sys.stderr,
    )
    return 0
