"""Per-person 3D Gaussian avatars driven by SMPL-X skinning (stage ``avatars``; docs/avatars.md)."""
