"""People: ingest a video, then find every person as a track with a stable id, a mask and 2D keypoints.

Stages (``core.pipeline``): ``ingest`` (``ingest.run_stage``) caches the working frames;
``people`` (``stage.run_stage``) tracks people and writes ``people/`` (``formats``).
Backends: ``offline`` (MediaPipe's bundled models + our tracker, CPU, nothing from a model hub),
``sam2`` (a detector + SAM 2's video predictor), ``import`` (the user's masks or synthetic ground
truth); 2D keypoints from ViTPose, the offline landmark model or import. See docs/people.md.
"""
