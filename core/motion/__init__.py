"""The motion stage: every person's SMPL-X motion and the camera in one metric world frame.

See docs/motion.md. Modules: ``body`` (SMPL-X posing of the points the fit needs), ``priors``,
``fit`` (the batched multi-person fitter), ``solve`` (the stages of one clip), ``inputs`` (people
stage / synthetic ground truth), ``camera`` (intrinsics, static detection, moving-camera solve),
``init`` (starting points from other tools), ``stage`` (``run_stage`` of the pipeline).
"""
