"""Body layer: SMPL-X loading (``model``), the generated test stand-in (``standin``)."""

from .model import (
    MODEL_ENV,
    BodyModel,
    BodyModelNotFound,
    RestBody,
    find_model_file,
    user_config_dir,
)

__all__ = ["MODEL_ENV", "BodyModel", "BodyModelNotFound", "RestBody", "find_model_file", "user_config_dir"]
