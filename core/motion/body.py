"""A differentiable SMPL-X that poses only the vertices the fit needs.

``BodyModel.forward`` (``smplx``) poses all 10475 vertices of every body in the batch; the fit
needs the 55 joints, the face and foot points and a few hundred surface samples. ``SparseBody``
takes the same model buffers from the loaded ``smplx`` layer and runs the same linear blend
skinning (``smplx.lbs.batch_rodrigues``, the kinematic chain of ``batch_rigid_transform``, pose
correctives included) on a subset of vertices, and over the 22 body joints only (the others do
not turn), so a 300-frame, several-person batch is cheap on CPU. On the selected vertices and all 55 joints
it agrees with ``BodyModel.forward`` to float precision (``test_sparse_body_matches_body_model``).

Convention: pose layout ``bundle.POSE_PARTS`` (global 3, body 63, jaw, eyes, hands 45+45);
only global orient and body pose are posed here (jaw, eyes and hands are kept at zero = flat
hands, as ``flat_hand_mean=True``), which is what 2D body keypoints determine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from smplx.lbs import batch_rodrigues

from .. import keypoints as kp

# SMPL-X vertex ids of the feet (as smplx.vertex_ids["smplx"]): big toe, small toe, heel; left then right.
FOOT_VERTICES: tuple[int, ...] = (5770, 5780, 8846, 8463, 8474, 8635)
NUM_FOOT_POINTS = len(FOOT_VERTICES) + len(kp.SMPLX_FOOT_VERTICES)  # soles, then the foot keypoints' vertices
NUM_BODY_JOINTS = 22  # pelvis + 21 body joints (the part 2D body keypoints determine)


@dataclass
class BodyOutput:
    joints: torch.Tensor  # [B, 55, 3]
    coco: torch.Tensor  # [B, 17, 3] COCO-17 points (core.keypoints order)
    feet: torch.Tensor  # [B, 6, 3] the soles under FOOT_VERTICES (see SparseBody)
    surface: torch.Tensor  # [B, S, 3] surface samples (SparseBody.surface_ids)
    foot_keypoints: torch.Tensor  # [B, 4, 3] heels and big toes (core.keypoints.FOOT_NAMES), on the mesh


class KinematicChain(torch.nn.Module):
    """Forward kinematics of a joint tree, one tree level at a time.

    Every joint of a level is posed from its parent in one batched product, so a chain of 22 joints
    takes 7 products instead of ``smplx.lbs.batch_rigid_transform``'s 21 (one per joint). Its
    indices are buffers on the device, so no step reads a GPU value back to the CPU (``smplx``
    indexes a Python list with the parents tensor) and the whole evaluation can be recorded as a
    CUDA graph (``core.motion.fit``).

    Args:
        parents: parent of each joint (-1 for the root, which comes first); parents before children.
    """

    def __init__(self, parents: list[int], device: str | torch.device = "cpu") -> None:
        super().__init__()
        depth = [0] * len(parents)
        for j in range(1, len(parents)):
            depth[j] = depth[parents[j]] + 1
        order = sorted(range(len(parents)), key=lambda j: (depth[j], j))  # joints level by level
        where = {j: i for i, j in enumerate(order)}
        self.levels: list[tuple[int, int]] = []  # [start, end) of each level (after the root) in ``order``
        start = 1
        for d in range(1, max(depth) + 1):
            end = start + depth.count(d)
            self.levels.append((start, end))
            start = end
        # a joint's parent is on the level above: its place there
        above = {j: where[j] - s for s, e in [(0, 1), *self.levels] for j in order[s:e]}
        self.register_buffer("order", torch.as_tensor(order, device=device))
        self.register_buffer("parent_at", torch.as_tensor([above[parents[j]] if j else 0 for j in order], device=device))
        self.register_buffer("back", torch.as_tensor([where[j] for j in range(len(parents))], device=device))
        self.register_buffer("parents", torch.as_tensor([max(p, 0) for p in parents], device=device))
        self.register_buffer("child", (torch.arange(len(parents), device=device) > 0).float()[:, None])  # [J, 1]: 0 for the root

    def forward(self, rot: torch.Tensor, joints: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Rotations [B, J, 3, 3] (local; the root's is global) and rest joints [B, J, 3] -> posed
        joints [B, J, 3] and each joint's transform relative to its rest position [B, J, 3, 4]
        (rotation, translation; what skinning applies), as ``batch_rigid_transform`` returns them."""
        rel_j = joints - joints[:, self.parents] * self.child  # each joint from its parent (the root: as is)
        rot_o, rel_o = rot[:, self.order], rel_j[:, self.order]
        g_rot, g_pos = [rot_o[:, :1]], [rel_o[:, :1]]  # global rotation and position, level by level
        for start, end in self.levels:
            par = self.parent_at[start:end]
            p_rot, p_pos = g_rot[-1][:, par], g_pos[-1][:, par]
            g_pos.append(p_pos + (p_rot @ rel_o[:, start:end, :, None])[..., 0])
            g_rot.append(p_rot @ rot_o[:, start:end])
        rot_g, pos_g = torch.cat(g_rot, 1)[:, self.back], torch.cat(g_pos, 1)[:, self.back]
        moved = pos_g - (rot_g @ joints[..., None])[..., 0]
        return pos_g, torch.cat([rot_g, moved[..., None]], -1)


class SparseBody(torch.nn.Module):
    """SMPL-X posing restricted to joints + selected vertices.

    Args:
        model: a loaded ``core.body.model.BodyModel``.
        num_surface: how many surface vertices to sample (evenly over the mesh, fixed seed).
        device: torch device.
    """

    def __init__(self, model, num_surface: int = 384, device: str | torch.device = "cpu") -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        layer = model.layer
        nv = model.num_vertices
        rng = np.random.default_rng(0)
        surface = np.sort(rng.choice(nv, size=min(num_surface, nv), replace=False))
        face_ids = [idx for src, idx in kp.COCO17_FROM_SMPLX if src == "vertex"]
        ids = np.concatenate([face_ids, FOOT_VERTICES, kp.SMPLX_FOOT_VERTICES, surface]).astype(np.int64)
        self.num_face = len(face_ids)
        self.surface_ids = surface
        self.vertex_ids = ids
        f32 = dict(dtype=torch.float32, device=device)
        v_t = layer.v_template.detach().to(**f32)
        sd = layer.shapedirs.detach().to(**f32)[..., : model.num_betas]  # [V,3,nb]
        jreg = layer.J_regressor.detach().to(**f32)  # [55,V]
        self.register_buffer("j_template", jreg @ v_t)  # [55,3]
        self.register_buffer("j_shapedirs", torch.einsum("jv,vcb->jcb", jreg, sd))  # [55,3,nb]
        sel = torch.as_tensor(ids, device=device)
        v_sel = v_t[sel].clone()
        # The foot points are the soles under the foot vertices: each vertex moved down (rest
        # pose: feet flat, +y up) to the height of the body's lowest vertex, and skinned like it,
        # so a foot standing on the floor has its points on it, not 1-2.5 cm into it.
        feet = slice(len(face_ids), len(face_ids) + len(FOOT_VERTICES))
        v_sel[feet, 1] = v_t[:, 1].min()
        self.register_buffer("v_template", v_sel)  # [S,3]
        self.register_buffer("v_shapedirs", sd[sel])  # [S,3,nb]
        pd = layer.posedirs.detach().to(**f32)  # [486? (J-1)*9, V*3]
        pd = pd.reshape(pd.shape[0], nv, 3)[:, sel].reshape(pd.shape[0], -1)
        # Only the 22 body joints turn (jaw, eyes and fingers stay at zero), and a joint that does
        # not turn moves its vertices exactly as its parent does. So the kinematic chain, the pose
        # correctives and the skinning run over the body joints alone, each other joint's skinning
        # weight given to its nearest body-joint ancestor: the same result with 22 joints instead
        # of 55 (posing bodies is most of the fit's time).
        nj = NUM_BODY_JOINTS
        parents = layer.parents.detach().clone().long().cpu()
        owner = torch.arange(len(parents))  # the body joint that carries each joint
        for j in range(nj, len(parents)):
            a = int(parents[j])
            while a >= nj:
                a = int(parents[a])
            owner[j] = a
        w = layer.lbs_weights.detach().to(**f32)[sel]  # [S,55]
        folded = torch.zeros(len(ids), nj, **f32).index_add_(1, owner.to(device), w)
        pd = pd[: 9 * (nj - 1)]  # [21*9, S*3]: the rows of the body joints
        self.has_posedirs = bool(torch.any(pd != 0))
        self.register_buffer("posedirs", pd)
        self.register_buffer("weights", folded)  # [S,22]
        self.register_buffer("owner", owner[nj:].to(device))  # [33]: of joints 22..54 (jaw, eyes, fingers)
        self.num_betas = model.num_betas
        self.chain = KinematicChain(parents[:nj].tolist(), device)
        # COCO face keypoints are the first vertices of the subset, body keypoints are joints.
        # (index buffers, not lists: a list index is copied to the GPU at every call, which a CUDA
        # graph cannot record)
        body = [i for i, (src, _) in enumerate(kp.COCO17_FROM_SMPLX) if src == "joint"]
        face = [i for i, (src, _) in enumerate(kp.COCO17_FROM_SMPLX) if src == "vertex"]
        self.register_buffer("body_ids", torch.as_tensor([kp.COCO17_FROM_SMPLX[i][1] for i in body], device=device))
        self.register_buffer("coco_order", torch.as_tensor(np.argsort(face + body), device=device))

    def rest_joints(self, betas: torch.Tensor) -> torch.Tensor:
        """[B, nb] betas -> [B, 55, 3] rest joints (zero pose, no translation)."""
        return self.j_template + torch.einsum("jcb,nb->njc", self.j_shapedirs, betas)

    def forward(
        self,
        betas: torch.Tensor,
        global_rot: torch.Tensor,
        body_pose: torch.Tensor,
        transl: torch.Tensor,
        surface: bool = True,
    ) -> BodyOutput:
        """Pose bodies.

        Args:
            betas: [B, nb] shape coefficients.
            global_rot: [B, 3, 3] root rotation (SMPL-X ``global_orient`` as a matrix).
            body_pose: [B, 63] axis-angle of the 21 body joints; jaw, eyes and hands stay at zero.
            transl: [B, 3] SMPL-X ``transl`` (the root rotates about its rest position, then moves by it).
            surface: pose the surface samples too (else ``BodyOutput.surface`` is empty).
        """
        b = body_pose.shape[0]
        pose = body_pose
        nj = NUM_BODY_JOINTS
        rot = torch.cat([global_rot[:, None], batch_rodrigues(pose.reshape(-1, 3)).reshape(b, nj - 1, 3, 3)], dim=1)
        joints_rest = self.rest_joints(betas)
        n = len(self.vertex_ids) if surface else self.num_face + NUM_FOOT_POINTS
        v_shaped = self.v_template[:n] + torch.einsum("scb,nb->nsc", self.v_shapedirs[:n], betas)
        if self.has_posedirs:
            eye = torch.eye(3, dtype=pose.dtype, device=pose.device)
            feat = (rot[:, 1:] - eye).reshape(b, -1)
            v_shaped = v_shaped + (feat @ self.posedirs[:, : 3 * n]).reshape(b, -1, 3)
        posed_body, rel = self.chain(rot, joints_rest[:, :nj])
        # jaw, eyes and fingers: carried rigidly by their nearest body-joint ancestor
        carry = rel[:, self.owner]  # [B,33,3,4]
        posed_rest = torch.einsum("njab,njb->nja", carry[..., :3], joints_rest[:, nj:]) + carry[..., 3]
        posed_joints = torch.cat([posed_body, posed_rest], dim=1)
        # Skinning, laid out with the vertices last ([B, 3, 4, n] blended transforms): products
        # and sums over long contiguous rows instead of 3x3 matrix products batched per vertex,
        # which took about half of the posing time on the CPU (the same numbers).
        tr = torch.matmul(rel.reshape(b, nj, 12).transpose(1, 2), self.weights[:n].T).reshape(b, 3, 4, n)
        verts = ((tr[:, :, :3] * v_shaped.transpose(1, 2)[:, None]).sum(2) + tr[:, :, 3]).transpose(1, 2)
        verts = verts + transl[:, None]
        joints = posed_joints + transl[:, None]
        nf = self.num_face
        coco = torch.cat([verts[:, :nf], joints[:, self.body_ids]], dim=1)[:, self.coco_order]
        nk = len(FOOT_VERTICES)
        return BodyOutput(joints=joints, coco=coco, feet=verts[:, nf : nf + nk], surface=verts[:, nf + NUM_FOOT_POINTS :],
                          foot_keypoints=verts[:, nf + nk : nf + NUM_FOOT_POINTS])  # fmt: skip
