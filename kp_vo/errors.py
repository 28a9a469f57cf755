"""Exceptions of kp_vo. Entry points (CLI, ROS nodes) turn them into one clear line."""


class KpVoError(Exception):
    """Base class of every error kp_vo raises on purpose."""


class InvalidInputError(KpVoError, ValueError):
    """An image, depth map, camera model or message that cannot be used."""


class CalibrationError(KpVoError, ValueError):
    """A calibration file or camera model that does not parse or is not physical."""


class DatasetError(KpVoError):
    """A dataset folder that is missing files or is laid out wrongly."""


class ModelFileError(KpVoError):
    """A model file that is missing, corrupt, of the wrong kind or unsupported."""


class MapFileError(KpVoError):
    """A keypoint-map file that is truncated, foreign, corrupt or of a wrong version."""
