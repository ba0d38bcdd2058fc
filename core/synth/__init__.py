"""Synthetic multi-person scenes with exact ground truth (``python -m core synth``).

``scene`` samples what happens (camera, people, paths, clothes) from one seed, ``motion`` turns
paths into SMPL-X walking poses, ``render`` rasterises bodies and ray-casts the room on the CPU,
``generate`` renders and writes the video, the ground-truth bundle and the 2D ground truth.
"""
