"""Plausible procedural motion for synthetic people: paths on the ground and a walking gait.

Two steps, both seeded:

1. ``simulate_path``: where a person is and which way they face over time. A small state
   machine walks from waypoint to waypoint (rounding gentle corners, stopping to turn on the
   spot at sharp ones), and may stop to face the camera and wave. Heading follows the walking
   direction with a limited turn rate.
2. ``gait``: SMPL-X poses that walk that path. Footsteps are planned from the path (one per
   stance, under the hip at mid-stance), each foot stays planted during its stance (heel rocker,
   flat foot, heel-off rolling over the ball of the foot with the toes kept flat), swings on an
   arc between steps, and the legs reach their ankles by two-bone IK from a pelvis whose height
   keeps both stance legs within reach. Pelvis rotation and roll, spine counter-rotation, arm
   swing opposite the legs, relaxed hands and an optional wave are layered on top.

Conventions: metres, world +Y up, ground y = 0; heading psi is the yaw about +Y with the person
facing (sin psi, 0, cos psi) (SMPL-X bodies face +Z at psi = 0, their left is +X); phases are in
gait cycles (one cycle = two steps); rotations are composed as matrices and returned as
SMPL-X axis-angle (bundle.POSE_PARTS order).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d, minimum_filter1d
from scipy.spatial.transform import Rotation

from .. import bundle as bd

# Joints (bundle.JOINT_NAMES order)
PELVIS, SPINE = 0, (3, 6, 9)
NECK, HEAD = 12, 15
LEG = {"left": (1, 4, 7, 10), "right": (2, 5, 8, 11)}  # hip, knee, ankle, foot (toes)
ARM = {"left": (16, 18, 20), "right": (17, 19, 21)}  # shoulder, elbow, wrist
COLLAR = {"left": 13, "right": 14}
SIDE_SIGN = {"left": 1.0, "right": -1.0}  # +X is the body's left

STANCE = 0.62  # fraction of a gait cycle a foot is on the ground
HEEL_ROCKER = 0.12  # first part of stance: the foot rolls down onto the heel
HEEL_OFF = 0.55  # from here to the end of stance the heel rises, rolling over the ball
TURN_RATE_WALK = 2.0  # rad/s heading change while walking
TURN_RATE_STAND = 2.4  # rad/s while turning on the spot
TURN_PER_CYCLE = 1.4  # rad the body turns at most per gait cycle (two steps): hip twist <= 0.31 of it
SHARP_CORNER = math.radians(100)  # corners sharper than this are taken by stopping and turning
WAVE_TIME = 1.6  # s of waving during a pause


def rot_x(a: np.ndarray) -> np.ndarray:
    """[...] angles -> [..., 3, 3] rotations about +X (right-handed)."""
    a = np.asarray(a, np.float64)
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([o, z, z, z, c, -s, z, s, c], -1).reshape(a.shape + (3, 3))


def rot_y(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([c, z, s, z, o, z, -s, z, c], -1).reshape(a.shape + (3, 3))


def rot_z(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float64)
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([c, -s, z, s, c, z, z, z, o], -1).reshape(a.shape + (3, 3))


def _wrap(a: np.ndarray | float) -> np.ndarray:
    return (np.asarray(a) + np.pi) % (2 * np.pi) - np.pi


def _hermite(
    q: np.ndarray, p0: np.ndarray, m0: np.ndarray | float, p1: np.ndarray, m1: np.ndarray | float
) -> np.ndarray:
    """Cubic Hermite curve at q in [0, 1] from p0 (tangent m0) to p1 (tangent m1)."""
    q2, q3 = q * q, q * q * q
    return (2 * q3 - 3 * q2 + 1) * p0 + (q3 - 2 * q2 + q) * m0 + (-2 * q3 + 3 * q2) * p1 + (q3 - q2) * m1


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3 - 2 * x)


# --------------------------------------------------------------------------------------
# The body's measurements
# --------------------------------------------------------------------------------------


@dataclass
class BodyGeometry:
    """What the gait needs of one shaped body, measured in its rest pose (rest frame, metres).

    ``sole`` / ``ball`` / ``heel`` / ``toe`` are per side [3] offsets from the ankle joint to the
    sole under the ankle, the sole under the ball of the foot (the toe joint), the back of the
    heel and the tip of the toes, all at the height of the lowest foot vertex.
    """

    joints: np.ndarray  # [55, 3] rest joints
    floor_y: float  # y of the lowest foot vertex (rest pose): this height becomes the ground
    ball: dict[str, np.ndarray]
    heel: dict[str, np.ndarray]
    toe: dict[str, np.ndarray]
    toe_joint: dict[str, np.ndarray]  # per side [3] offset from the ankle to the toe joint
    leg_length: dict[str, float]  # hip -> knee -> ankle, fully stretched

    @classmethod
    def measure(cls, vertices: np.ndarray, joints: np.ndarray, weights: np.ndarray) -> BodyGeometry:
        """From rest vertices [V, 3], rest joints [55, 3] and skin weights [V, 55]."""
        owner = np.argmax(weights, axis=1)
        ball, heel, toe, toe_joint, leg = {}, {}, {}, {}, {}
        feet = np.isin(owner, [7, 8, 10, 11])
        if not feet.any():
            raise ValueError("body model: no vertex is skinned mainly to an ankle or foot joint")
        floor_y = float(vertices[feet, 1].min())
        for side, (hip, knee, ankle, foot) in LEG.items():
            v = vertices[np.isin(owner, [ankle, foot])]
            a = joints[ankle]
            down = floor_y - a[1]
            ball[side] = np.array([joints[foot, 0] - a[0], down, joints[foot, 2] - a[2]])
            heel[side] = np.array([0.0, down, v[:, 2].min() + 0.02 - a[2]])
            toe[side] = np.array([joints[foot, 0] - a[0], down, v[:, 2].max() - a[2]])
            toe_joint[side] = joints[foot] - a
            leg[side] = float(
                np.linalg.norm(joints[knee] - joints[hip]) + np.linalg.norm(joints[ankle] - joints[knee])
            )
        return cls(joints=np.asarray(joints, np.float64), floor_y=floor_y, ball=ball, heel=heel, toe=toe,
                   toe_joint=toe_joint, leg_length=leg)  # fmt: skip

    @property
    def pelvis_height(self) -> float:
        """Pelvis joint height above the ground when standing in the rest pose."""
        return float(self.joints[PELVIS, 1] - self.floor_y)


# --------------------------------------------------------------------------------------
# Paths
# --------------------------------------------------------------------------------------


@dataclass
class PathPlan:
    """What one person intends to do (sampled from the scene seed)."""

    waypoints: np.ndarray  # [K, 2] ground (x, z) points, walked in order
    speed: float  # m/s walking speed
    pause_at: float | None = None  # s: stop here to face the camera and wave (None: never)
    phase0: float = 0.0  # gait phase (cycles) at t = 0


@dataclass
class Path2D:
    """A simulated path sampled on a fine time grid."""

    t: np.ndarray  # [M] seconds
    pos: np.ndarray  # [M, 2] pelvis ground position (x, z)
    heading: np.ndarray  # [M] yaw psi (unwrapped)
    speed: np.ndarray  # [M] m/s along the ground
    wave: np.ndarray  # [M] 0..1 weight of the waving arm

    def at(self, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(pos [..., 2], heading [...]) at times t by linear interpolation."""
        x = np.interp(t, self.t, self.pos[:, 0])
        z = np.interp(t, self.t, self.pos[:, 1])
        return np.stack([x, z], -1), np.interp(t, self.t, self.heading)


def simulate_path(plan: PathPlan, t: np.ndarray, face_point) -> Path2D:  # type: ignore[no-untyped-def]
    """Walk ``plan`` over the time grid ``t`` [M] (uniform, seconds).

    ``face_point(time) -> (x, z)`` is where a pausing person turns to (the camera).
    The person is at ``waypoints[0]`` heading to ``waypoints[1]`` at full speed at ``t[0]``.
    """
    dt = float(t[1] - t[0])
    wps = plan.waypoints
    pos = wps[0].astype(np.float64).copy()
    d0 = wps[1] - wps[0]
    heading = math.atan2(d0[0], d0[1])
    speed = plan.speed
    k = 1  # next waypoint
    state, timer = "walk", 0.0
    paused = plan.pause_at is None
    accel = 1.6  # m/s^2
    out_pos = np.zeros((len(t), 2))
    out_head = np.zeros(len(t))
    out_wave = np.zeros(len(t))
    wave = 0.0

    def corner(k: int) -> float:
        if k + 1 >= len(wps):
            return math.pi
        a, b = wps[k] - wps[k - 1], wps[k + 1] - wps[k]
        return abs(float(_wrap(math.atan2(b[0], b[1]) - math.atan2(a[0], a[1]))))

    for i, now in enumerate(t):
        target_heading = heading
        if state == "walk":
            to = wps[k] - pos
            dist = float(np.hypot(*to))
            stop_here = corner(k) > SHARP_CORNER
            pausing = not paused and now >= plan.pause_at
            want = plan.speed
            if stop_here:
                want = min(want, math.sqrt(2 * accel * max(dist - 0.02, 0.0)))
            if pausing:
                want = 0.0
            speed += float(np.clip(want - speed, -accel * dt, accel * dt))
            if dist > 1e-9:
                step = min(speed * dt, dist)
                pos = pos + to / dist * step
                target_heading = math.atan2(to[0], to[1])
            if dist <= max(speed * dt, 0.02):
                k += 1
                if k >= len(wps):  # out of waypoints: stand still facing the last direction
                    k = len(wps) - 1
                    state = "stand"
                elif stop_here:
                    state, timer = "turn", 0.0
            if pausing and speed <= 1e-3:
                state, timer, paused = "pause", 0.0, True
        elif state == "turn":
            speed, timer = 0.0, timer + dt
            d = wps[k] - pos
            target_heading = math.atan2(d[0], d[1])
            if timer > 0.25 and abs(float(_wrap(target_heading - heading))) < 0.05:
                state = "walk"
        elif state == "pause":
            speed, timer = 0.0, timer + dt
            fx, fz = face_point(now)
            target_heading = math.atan2(fx - pos[0], fz - pos[1])
            facing = abs(float(_wrap(target_heading - heading))) < 0.3
            if facing and timer < WAVE_TIME + 0.6:
                wave = min(1.0, wave + dt / 0.3)
            if timer >= WAVE_TIME + 0.6:
                wave = max(0.0, wave - dt / 0.3)
                d = wps[k] - pos
                target_heading = math.atan2(d[0], d[1])
                if wave == 0.0 and abs(float(_wrap(target_heading - heading))) < 0.05:
                    state = "walk"
        else:  # stand
            speed = 0.0
        rate = TURN_RATE_WALK if state == "walk" else TURN_RATE_STAND
        heading += float(np.clip(_wrap(target_heading - heading), -rate * dt, rate * dt))
        out_pos[i], out_head[i], out_wave[i] = pos, heading, wave
    # round the corners of the polyline and the starts/stops (0.15 s), keep heading smooth
    sigma = 0.15 / dt
    pos_s = gaussian_filter1d(out_pos, sigma, axis=0, mode="nearest")
    head_s = gaussian_filter1d(out_head, 0.08 / dt, mode="nearest")
    spd = np.linalg.norm(np.gradient(pos_s, dt, axis=0), axis=1)
    return Path2D(
        t=t, pos=pos_s, heading=head_s, speed=spd, wave=gaussian_filter1d(out_wave, 0.05 / dt, mode="nearest")
    )


# --------------------------------------------------------------------------------------
# Gait
# --------------------------------------------------------------------------------------


def cycle_rate(speed: np.ndarray, turn: np.ndarray) -> np.ndarray:
    """Gait cycles per second for a walking speed (m/s) and a turn rate (rad/s): 1.1 at 1.3 m/s
    (a stride of 1.2 m), at least 0.6 standing still, and fast enough that the body turns by at
    most ``TURN_PER_CYCLE`` per cycle. A planted foot keeps the heading of its mid-stance, so the
    hip twists by the turn over half a stance: a slow cadence on a quick turn on the spot would
    wring the standing leg round by up to 180 degrees, where people take quick small steps."""
    walking = 0.6 + 0.38 * np.clip(speed, 0.0, 2.0)
    return np.maximum(walking, np.abs(turn) / TURN_PER_CYCLE)


def _foot_frame(yaw: np.ndarray, pitch: np.ndarray) -> np.ndarray:
    """World rotation of a foot: yaw about +Y, then pitch about the foot's lateral axis
    (positive = heel up / toes down)."""
    return rot_y(yaw) @ rot_x(pitch)


def _anchor_ankle(
    geo: BodyGeometry, side: str, ball_pt: np.ndarray, yaw: np.ndarray, pitch: np.ndarray
) -> np.ndarray:
    """Ankle position of a planted foot: rolling over the ball (pitch >= 0) keeps the sole under
    the ball at ``ball_pt``; the heel rocker (pitch < 0) keeps the heel where it lands."""
    r = _foot_frame(yaw, pitch)
    flat = rot_y(yaw)
    ball, heel = geo.ball[side], geo.heel[side]
    on_ball = ball_pt - r @ ball
    heel_pt = ball_pt + flat @ (heel - ball)
    on_heel = heel_pt - r @ heel
    return np.where((pitch >= 0)[..., None], on_ball, on_heel)


def _two_bone_ik(
    hip: np.ndarray,
    pelvis_r: np.ndarray,
    target: np.ndarray,
    knee_axis_w: np.ndarray,
    thigh: np.ndarray,
    shin: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Hip (local to the pelvis) and knee rotations that put the ankle at ``target``.

    Args:
        hip: [T, 3] hip joint world positions; pelvis_r: [T, 3, 3] pelvis world rotations.
        target: [T, 3] ankle targets (clamped to the reachable range).
        knee_axis_w: [T, 3] world direction the knee's hinge axis (+X) should take (lateral).
        thigh, shin: [3] rest bone vectors hip->knee, knee->ankle.

    Returns:
        hip_local [T, 3, 3], knee_local [T, 3, 3] (a hinge about +X, flexion >= 0).
    """
    l1, l2 = np.linalg.norm(thigh), np.linalg.norm(shin)
    a = target - hip
    d = np.clip(np.linalg.norm(a, axis=1), abs(l1 - l2) + 1e-3, 0.9995 * (l1 + l2))
    # |thigh + Rx(th) shin|^2 = d^2  ->  A cos th + B sin th = C
    ca = thigh[1] * shin[1] + thigh[2] * shin[2]
    cb = thigh[2] * shin[1] - thigh[1] * shin[2]
    cc = (d**2 - l1**2 - l2**2) / 2 - thigh[0] * shin[0]
    r = math.hypot(ca, cb)
    theta = math.atan2(cb, ca) + np.arccos(np.clip(cc / r, -1.0, 1.0))
    theta = np.clip(_wrap(theta), 0.0, 2.4)
    knee = rot_x(theta)
    v = thigh + knee @ shin  # [T, 3] hip->ankle in the hip's rest frame
    # frames: (direction, hinge axis) in the rest frame and in the world
    x = np.array([1.0, 0.0, 0.0])

    def frame(dirn: np.ndarray, axis: np.ndarray) -> np.ndarray:
        e1 = dirn / np.linalg.norm(dirn, axis=-1, keepdims=True)
        e2 = axis - (axis * e1).sum(-1, keepdims=True) * e1
        e2 = e2 / np.linalg.norm(e2, axis=-1, keepdims=True)
        return np.stack([e1, e2, np.cross(e1, e2)], axis=-1)  # columns

    rest = frame(v, np.broadcast_to(x, v.shape))
    world = frame(a, knee_axis_w)
    hip_world = world @ np.swapaxes(rest, -1, -2)
    return np.swapaxes(pelvis_r, -1, -2) @ hip_world, knee


@dataclass
class GaitStyle:
    """Per-person variation of the gait (sampled from the seed)."""

    step_width: float = 0.16  # m between the feet's centre lines
    arm_swing: float = 0.35  # rad at 1.3 m/s
    elbow_bend: float = 0.3  # rad resting elbow flexion
    lean: float = 0.05  # rad forward lean at 1.3 m/s
    toe_out: float = 0.08  # rad each foot turns outwards
    wave_side: str = "right"


def gait(
    geo: BodyGeometry, path: Path2D, times: np.ndarray, phase0: float, style: GaitStyle
) -> tuple[np.ndarray, np.ndarray]:
    """SMPL-X poses [T, 165] and translations [T, 3] walking ``path`` at ``times`` [T] (seconds).

    Heights are above the ground: a rest-pose foot stands on it when its lowest vertex is at
    y = 0. The world pelvis is ``geo.joints[0] + trans`` (SMPL-X ``transl``).
    """
    num_t = len(times)
    J = geo.joints
    dt_f = float(path.t[1] - path.t[0])
    # gait phase on the fine grid, then at the frames
    turn_f = np.abs(np.gradient(path.heading, dt_f))
    phase_f = np.concatenate([[0.0], np.cumsum(cycle_rate(path.speed[:-1], turn_f[:-1]) * dt_f)])
    phase_f += phase0 - np.interp(0.0, path.t, phase_f)  # phase0 at t = 0
    amp_f = gaussian_filter1d(np.clip(np.maximum(path.speed / 0.8, turn_f / 1.5), 0.0, 1.0), 0.1 / dt_f)
    phase = np.interp(times, path.t, phase_f)
    amp = np.interp(times, path.t, amp_f)
    speed = np.interp(times, path.t, path.speed)
    pos, heading = path.at(times)
    wave = np.interp(times, path.t, path.wave)

    def time_of_phase(p: np.ndarray) -> np.ndarray:
        return np.interp(p, phase_f, path.t)

    # pelvis orientation: heading, gait rotation and roll, forward lean
    phl = 2 * np.pi * phase
    yaw_osc = -0.07 * amp * np.cos(phl)
    roll = 0.045 * amp * np.sin(phl - 2 * np.pi * 0.05)
    tilt = style.lean * np.clip(speed / 1.3, 0, 1.3)
    pelvis_r = rot_y(heading + yaw_osc) @ rot_x(tilt * 0.5) @ rot_z(roll)

    # feet: stance / swing, planted positions and orientations
    ankle_t, foot_r, toe_bend, in_stance = {}, {}, {}, {}
    for side, off in (("left", 0.0), ("right", 0.5)):
        sgn = SIDE_SIGN[side]
        ph = phase + off
        n = np.floor(ph)
        u = ph - n

        def footstep(
            k: np.ndarray, side: str = side, off: float = off, sgn: float = sgn
        ) -> tuple[np.ndarray, np.ndarray]:
            tm = time_of_phase(k + STANCE / 2 - off)
            p, h = path.at(tm)
            lateral = np.stack([np.cos(h), -np.sin(h)], -1)  # +X of the body in the world (x, z)
            fwd = np.stack([np.sin(h), np.cos(h)], -1)
            ball = geo.ball[side]
            xz = p + sgn * lateral * (style.step_width / 2) + fwd * ball[2]
            return np.stack([xz[:, 0], np.zeros_like(tm), xz[:, 1]], -1), h + sgn * style.toe_out

        rho_hs, rho_to = -0.25 * amp, 0.55 * amp
        cur_pt, cur_yaw = footstep(n)
        nxt_pt, nxt_yaw = footstep(n + 1)
        stance = u < STANCE
        p = np.where(stance, u / STANCE, 0.0)
        x = np.clip((p - HEEL_OFF) / (1 - HEEL_OFF), 0, 1)
        rho_st = np.where(p < HEEL_ROCKER, rho_hs * (1 - _smoothstep(p / HEEL_ROCKER)), rho_to * x**2)
        ank_st = _anchor_ankle(geo, side, cur_pt, cur_yaw, rho_st)
        # swing from the toe-off of step n to the heel strike of step n+1, continuing the
        # toe-off's pitch rate and ankle velocity (Hermite curves), landing without speed
        q = np.where(stance, 0.0, (u - STANCE) / (1 - STANCE))
        s = _smoothstep(q)
        drho = 2 * rho_to / (1 - HEEL_OFF) * (1 - STANCE) / STANCE  # d pitch / dq at toe-off
        ank_to = _anchor_ankle(geo, side, cur_pt, cur_yaw, rho_to)
        eps = 1e-4
        dank = (ank_to - _anchor_ankle(geo, side, cur_pt, cur_yaw, rho_to - eps)) / eps * drho[:, None]
        ank_hs = _anchor_ankle(geo, side, nxt_pt, nxt_yaw, rho_hs)
        rho_sw = _hermite(q, rho_to, drho, rho_hs, 0.0)
        yaw_sw = cur_yaw + _wrap(nxt_yaw - cur_yaw) * s
        ank_sw = _hermite(q[:, None], ank_to, dank, ank_hs, 0.0)
        step_len = np.linalg.norm((nxt_pt - cur_pt)[:, [0, 2]], axis=1)
        lift = (0.02 + 0.08 * np.clip(step_len / 0.6, 0, 1)) * np.clip(amp * 3, 0, 1)
        ank_sw[:, 1] += 16 * q**2 * (1 - q) ** 2 * lift
        # keep the swinging foot's sole (heel, ball, bent toes) above the ground
        bend_sw = -np.maximum(rho_sw, 0) * (1 - s)
        r_sw = _foot_frame(yaw_sw, rho_sw)
        tj = geo.toe_joint[side]
        tip = tj + rot_x(bend_sw) @ (geo.toe[side] - tj)
        low = np.min(
            np.stack(
                [
                    (r_sw @ geo.ball[side])[:, 1],
                    (r_sw @ geo.heel[side])[:, 1],
                    (r_sw @ tip[..., None])[:, 1, 0],
                ]
            ),
            axis=0,
        )
        ank_sw[:, 1] = np.maximum(ank_sw[:, 1], -low)
        ankle_t[side] = np.where(stance[:, None], ank_st, ank_sw)
        yaw = np.where(stance, cur_yaw, yaw_sw)
        rho = np.where(stance, rho_st, rho_sw)
        foot_r[side] = _foot_frame(yaw, rho)
        toe_bend[side] = np.where(stance, -np.maximum(rho_st, 0), bend_sw)
        in_stance[side] = stance

    # pelvis height: as tall as standing (knees a little soft when walking), low enough that
    # both stance legs reach their ankles
    y_des = geo.pelvis_height - 0.02 * amp
    y_cap = np.full(num_t, np.inf)
    for side, (hip_j, _, _, _) in LEG.items():
        off = np.einsum("tab,b->ta", pelvis_r, J[hip_j] - J[PELVIS])
        hip_xz = np.stack([pos[:, 0], pos[:, 1]], -1) + off[:, [0, 2]]
        horiz = np.linalg.norm(hip_xz - ankle_t[side][:, [0, 2]], axis=1)
        reach = 0.97 * geo.leg_length[side]
        cap = ankle_t[side][:, 1] - off[:, 1] + np.sqrt(np.maximum(reach**2 - horiz**2, 0.0))
        y_cap = np.minimum(y_cap, np.where(in_stance[side], cap, cap + 0.03))
    # lower early rather than drop at heel strike: erode over 0.1 s each side, then smooth
    y = np.minimum(y_des, y_cap)
    if num_t > 1:
        fps = 1.0 / float(times[1] - times[0])
        y = minimum_filter1d(y, 2 * max(1, round(0.1 * fps)) + 1, mode="nearest")
        y = np.minimum(gaussian_filter1d(y, 0.05 * fps, mode="nearest"), y_cap)
    pelvis_w = np.stack([pos[:, 0], y, pos[:, 1]], -1)

    local = np.broadcast_to(np.eye(3), (num_t, bd.NUM_JOINTS, 3, 3)).copy()
    local[:, PELVIS] = pelvis_r
    for side, (hip_j, knee_j, ankle_j, foot_j) in LEG.items():
        hip_w = pelvis_w + np.einsum("tab,b->ta", pelvis_r, J[hip_j] - J[PELVIS])
        lateral = foot_r[side][:, :, 0] * 0.7 + pelvis_r[:, :, 0] * 0.3
        hip_l, knee_l = _two_bone_ik(
            hip_w, pelvis_r, ankle_t[side], lateral, J[knee_j] - J[hip_j], J[ankle_j] - J[knee_j]
        )
        local[:, hip_j], local[:, knee_j] = hip_l, knee_l
        shin_w = pelvis_r @ hip_l @ knee_l
        local[:, ankle_j] = np.swapaxes(shin_w, -1, -2) @ foot_r[side]
        local[:, foot_j] = rot_x(toe_bend[side])

    # spine: counter-rotate the gait's pelvis yaw, share the lean; head level, looking ahead
    for j in SPINE:
        local[:, j] = rot_y(-yaw_osc * 0.45) @ rot_x(tilt * 0.25)
    local[:, NECK] = rot_x(-tilt * 0.4)
    local[:, HEAD] = rot_y(yaw_osc * 0.35) @ rot_x(-tilt * 0.35)

    # arms: down from the T-pose, swinging opposite the legs (left arm forward with the right leg)
    swing_amp = style.arm_swing * np.clip(speed / 1.3, 0, 1.3)
    for side, (sh, el, wr) in ARM.items():
        sgn = SIDE_SIGN[side]
        local[:, COLLAR[side]] = rot_z(-sgn * 0.2)  # the collar takes part of lowering the arm
        leg_phase = phl if side == "left" else phl + np.pi
        swing = -swing_amp * np.cos(leg_phase)  # + = forward
        walk_sh = rot_x(-swing) @ rot_z(-sgn * 1.05)
        walk_el = rot_y(-sgn * (style.elbow_bend + 0.5 * np.maximum(swing, 0)))
        if side == style.wave_side:
            w = wave[:, None, None]
            osc = 0.4 * np.sin(2 * np.pi * 2.0 * times)
            wave_sh = rot_y(-sgn * 0.35) @ rot_z(sgn * 0.4)
            wave_el = rot_z(sgn * (1.35 + osc))
            walk_sh = _blend(walk_sh, wave_sh, w)
            walk_el = _blend(walk_el, wave_el, w)
        local[:, sh], local[:, el] = walk_sh, walk_el
        local[:, wr] = rot_z(-sgn * 0.1)
    # relaxed hands: every finger joint curls a little towards the palm (-Y), thumbs less
    for j in range(25, bd.NUM_JOINTS):
        left = j < 40
        thumb = (j - 25) % 15 >= 12
        local[:, j] = rot_z((-1 if left else 1) * (0.12 if thumb else 0.3))

    rotvec = Rotation.from_matrix(local.reshape(-1, 3, 3)).as_rotvec().reshape(num_t, bd.NUM_POSE)
    return rotvec, pelvis_w - J[PELVIS]


def _blend(a: np.ndarray, b: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Blend rotation matrices [T, 3, 3] by weights [T, 1, 1] (normalised lerp of quaternions)."""
    qa = Rotation.from_matrix(a).as_quat()
    qb = Rotation.from_matrix(np.broadcast_to(b, a.shape)).as_quat()
    qb = np.where((qa * qb).sum(-1, keepdims=True) < 0, -qb, qb)
    q = qa * (1 - w[:, 0]) + qb * w[:, 0]
    return Rotation.from_quat(q / np.linalg.norm(q, axis=-1, keepdims=True)).as_matrix()
