"""What a synthetic scene holds, sampled from one seed: the camera track, each person's body
shape, plan (path, speed, behaviour), gait style and clothes colours.

Conventions: metres; world +Y up, ground y = 0; OpenCV cameras (x right, y down, +z forward),
``world_to_cam`` 4x4, K in pixels. The people walk inside a disc of ``area_radius`` around the
origin; the camera looks at a point 0.85 m above the origin.
"""

from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field

import numpy as np

from . import motion as mo

BEHAVIOURS = ("cross", "loop", "pause")  # walk across the scene (turning on the spot at the ends),
# walk round in a loop, or walk and stop to face the camera and wave


@dataclass
class SynthConfig:
    """Settings of ``python -m core synth`` (recorded in the bundle's extra.synth)."""

    people: int = 4  # number of people
    frames: int = 60  # number of video frames
    size: tuple[int, int] = (640, 360)  # (width, height) pixels
    seed: int = 0  # everything random comes from this seed
    camera: str = "static"  # static | orbit (a slow arc around the scene centre)
    fps: float = 30.0  # video frame rate
    hfov_deg: float = 55.0  # horizontal field of view
    camera_distance: float = 7.0  # m from the scene centre (on the ground)
    camera_height: float = 2.2  # m above the ground
    orbit_deg_per_s: float = 12.0  # orbit speed (camera = orbit)
    area_radius: float = 2.0  # m: people walk inside this disc around the origin
    min_separation: float = 0.65  # m: pelvis distance people try to keep from each other

    def __post_init__(self) -> None:
        if self.people < 1:
            raise ValueError(f"people must be at least 1, got {self.people}")
        if self.people > 254:
            raise ValueError(f"people must be at most 254 (labels are uint8), got {self.people}")
        if self.frames < 1:
            raise ValueError(f"frames must be at least 1, got {self.frames}")
        if self.size[0] < 16 or self.size[1] < 16:
            raise ValueError(f"size must be at least 16x16 pixels, got {self.size[0]}x{self.size[1]}")
        if self.camera not in ("static", "orbit"):
            raise ValueError(f"camera must be 'static' or 'orbit', got {self.camera!r}")
        if not (self.fps > 0 and math.isfinite(self.fps)):
            raise ValueError(f"fps must be a positive number, got {self.fps}")

    @property
    def duration(self) -> float:
        return self.frames / self.fps


LOOK_AT = np.array([0.0, 0.85, 0.0])


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """OpenCV world_to_cam [4, 4] of a camera at ``eye`` looking at ``target`` (world +Y up, no roll)."""
    fwd = np.asarray(target, np.float64) - eye
    fwd /= np.linalg.norm(fwd)
    right = np.cross(fwd, [0.0, 1.0, 0.0])
    right /= np.linalg.norm(right)
    down = np.cross(fwd, right)
    m = np.eye(4)
    m[:3, :3] = np.stack([right, down, fwd])
    m[:3, 3] = -m[:3, :3] @ eye
    return m


@dataclass
class CameraTrack:
    """A pinhole camera over time."""

    K: np.ndarray  # [3, 3]
    azimuth0: float  # rad, camera position angle about +Y at t = 0 (0 = on the +Z axis)
    rate: float  # rad/s orbit speed (0 = static)
    distance: float
    height: float

    def position(self, t: np.ndarray | float) -> np.ndarray:
        """[..., 3] world camera centre at times t (s)."""
        a = self.azimuth0 + self.rate * np.asarray(t, np.float64)
        return np.stack(
            [self.distance * np.sin(a), np.full_like(a, self.height), self.distance * np.cos(a)], -1
        )

    def world_to_cam(self, t: np.ndarray) -> np.ndarray:
        """[T, 4, 4] at times t [T]."""
        return np.stack([look_at(p, LOOK_AT) for p in self.position(t)])


def make_camera(cfg: SynthConfig, rng: np.random.Generator) -> CameraTrack:
    w, h = cfg.size
    f = (w / 2) / math.tan(math.radians(cfg.hfov_deg) / 2)
    K = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])
    rate = (
        math.radians(cfg.orbit_deg_per_s) * float(rng.choice([-1.0, 1.0])) if cfg.camera == "orbit" else 0.0
    )
    # an orbit is centred on the clip's middle, so it sweeps symmetrically around the start azimuth
    az0 = float(rng.uniform(-math.pi, math.pi)) - rate * cfg.duration / 2
    return CameraTrack(K=K, azimuth0=az0, rate=rate, distance=cfg.camera_distance, height=cfg.camera_height)


@dataclass
class Palette:
    """Flat albedo (RGB in 0..1) of each clothing part of one person."""

    shirt: tuple[float, float, float]
    stripe: tuple[float, float, float] | None  # second shirt colour in horizontal stripes, or None
    trousers: tuple[float, float, float]
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    shoes: tuple[float, float, float]

    @property
    def rgb8(self) -> list[int]:
        """The person's track colour (the shirt) as 0..255 integers."""
        return [int(round(c * 255)) for c in self.shirt]


_TROUSERS = (
    (0.12, 0.16, 0.32),
    (0.18, 0.18, 0.2),
    (0.55, 0.48, 0.33),
    (0.16, 0.26, 0.18),
    (0.25, 0.33, 0.5),
    (0.35, 0.22, 0.15),
)
_SKIN = ((0.94, 0.78, 0.66), (0.84, 0.64, 0.5), (0.64, 0.45, 0.33), (0.42, 0.29, 0.21), (0.96, 0.84, 0.74))
_HAIR = ((0.08, 0.06, 0.05), (0.3, 0.19, 0.1), (0.75, 0.6, 0.35), (0.55, 0.55, 0.55), (0.5, 0.2, 0.08))


def make_palette(i: int, n: int, hue0: float, rng: np.random.Generator) -> Palette:
    hue = (hue0 + i / max(n, 1)) % 1.0
    shirt = colorsys.hsv_to_rgb(hue, rng.uniform(0.65, 0.9), rng.uniform(0.75, 0.95))
    stripe = colorsys.hsv_to_rgb(hue, 0.15, 0.97) if i % 2 == 1 else None
    pick = lambda opts: tuple(float(c) for c in opts[int(rng.integers(len(opts)))])  # noqa: E731
    return Palette(shirt=shirt, stripe=stripe, trousers=pick(_TROUSERS), skin=pick(_SKIN), hair=pick(_HAIR),
                   shoes=(0.1, 0.09, 0.08))  # fmt: skip


@dataclass
class PersonSpec:
    """Everything sampled for one person."""

    id: str
    betas: np.ndarray  # [num_betas]
    behaviour: str  # one of BEHAVIOURS
    plan: mo.PathPlan
    start: float  # s: when the path simulation starts (before 0: already walking at frame 0)
    style: mo.GaitStyle
    palette: Palette
    path: mo.Path2D | None = field(default=None, repr=False)


def _waypoints(rng: np.random.Generator, behaviour: str, radius: float, length: float) -> np.ndarray:
    """Ground waypoints [K, 2] inside the disc whose polyline is at least ``length`` long."""
    pts: list[np.ndarray] = []
    if behaviour == "loop":
        ring = rng.uniform(0.5, 0.9) * radius
        centre = rng.uniform(-1, 1, 2) * (radius - ring) * 0.7
        a = rng.uniform(-math.pi, math.pi)
        turn = float(rng.choice([-1.0, 1.0]))
        total = 0.0
        while total < length or len(pts) < 3:
            rr = ring * rng.uniform(0.85, 1.15)
            pts.append(centre + rr * np.array([math.sin(a), math.cos(a)]))
            a += turn * rng.uniform(0.8, 1.2)
            if len(pts) > 1:
                total += float(np.linalg.norm(pts[-1] - pts[-2]))
    else:  # across the scene and back, turning on the spot near the edge
        a = rng.uniform(-math.pi, math.pi)
        total = 0.0
        while total < length or len(pts) < 3:
            rr = radius * rng.uniform(0.7, 1.0)
            pts.append(rr * np.array([math.sin(a), math.cos(a)]))
            a += math.pi + rng.uniform(-0.8, 0.8)
            if len(pts) > 1:
                total += float(np.linalg.norm(pts[-1] - pts[-2]))
    return np.array(pts)


def _behaviours(n: int, rng: np.random.Generator) -> list[str]:
    """At least one crossing person (and one pausing from three people on), the rest at random."""
    base = ["cross"] + (["pause"] if n >= 3 else [])
    out = base + [str(rng.choice(BEHAVIOURS, p=(0.35, 0.4, 0.25))) for _ in range(n - len(base))]
    return [out[i] for i in rng.permutation(n)]


def plan_people(
    cfg: SynthConfig, camera: CameraTrack, rng: np.random.Generator, num_betas: int, tries: int = 24
) -> list[PersonSpec]:
    """Sample people whose paths keep apart (``min_separation``) and, seen from the camera, pass
    in front of each other; the best of ``tries`` candidate scenes is kept."""
    n, dur = cfg.people, cfg.duration
    hue0 = rng.uniform(0, 1)
    fine = 4 * cfg.fps
    times = np.arange(cfg.frames) / cfg.fps
    best, best_score = None, None
    for _ in range(tries):
        people = []
        for i, beh in enumerate(_behaviours(n, rng)):
            speed = float(rng.uniform(0.9, 1.4))
            lead = float(rng.uniform(2.0, 5.0))  # seconds walked before frame 0
            wps = _waypoints(rng, "loop" if beh == "loop" or (beh == "pause" and rng.random() < 0.5) else "cross",
                             cfg.area_radius, speed * (dur + lead + 2.0) + 4.0)  # fmt: skip
            plan = mo.PathPlan(waypoints=wps, speed=speed, phase0=float(rng.uniform(0, 1)),
                               pause_at=float(rng.uniform(0.1, 0.45) * dur) if beh == "pause" else None)  # fmt: skip
            style = mo.GaitStyle(
                step_width=float(rng.uniform(0.12, 0.2)), arm_swing=float(rng.uniform(0.25, 0.45)),
                elbow_bend=float(rng.uniform(0.2, 0.45)), lean=float(rng.uniform(0.02, 0.08)),
                toe_out=float(rng.uniform(0.03, 0.12)), wave_side=str(rng.choice(["left", "right"])),
            )  # fmt: skip
            betas = np.zeros(num_betas)
            betas[:2] = [rng.uniform(-2.0, 2.0), rng.uniform(-1.5, 2.0)]
            betas[2:] = np.clip(rng.normal(0, 0.6, num_betas - 2), -1.5, 1.5)
            spec = PersonSpec(id=f"p{i}", betas=betas, behaviour=beh, plan=plan, start=-lead, style=style,
                              palette=make_palette(i, n, hue0, rng))  # fmt: skip
            grid = np.arange(-lead, dur + 2.0, 1.0 / fine)
            spec.path = mo.simulate_path(plan, grid, lambda t: tuple(camera.position(t)[[0, 2]]))
            people.append(spec)
        score = _score(people, camera, times, cfg)
        if best_score is None or score > best_score:
            best, best_score = people, score
        if score[0] >= cfg.min_separation and score[1] >= min(1, n - 1):
            break
    assert best is not None
    return best


def _score(
    people: list[PersonSpec], camera: CameraTrack, times: np.ndarray, cfg: SynthConfig
) -> tuple[float, int, float]:
    """(closest approach of two people capped at min_separation, pairs that pass in front of each
    other as seen from the camera, mean fraction of people inside the view cone)."""
    pos = np.stack([p.path.at(times)[0] for p in people if p.path is not None])  # [N, T, 2]
    cam = camera.position(times)[:, [0, 2]]  # [T, 2]
    rel = pos - cam[None]
    bearing = np.arctan2(rel[..., 0], rel[..., 1])
    centre = np.arctan2(-cam[:, 0], -cam[:, 1])
    inside = np.abs(mo._wrap(bearing - centre[None])) < math.radians(cfg.hfov_deg) / 2 * 0.8
    closest, crossings = math.inf, 0
    for i in range(len(people)):
        for j in range(i + 1, len(people)):
            closest = min(closest, float(np.linalg.norm(pos[i] - pos[j], axis=-1).min()))
            if (np.abs(mo._wrap(bearing[i] - bearing[j])) < 0.08).any():
                crossings += 1
    return (min(closest, cfg.min_separation), crossings, float(inside.mean()))
