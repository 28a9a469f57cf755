"""Learned extractors / depth estimators behind the registries of ``kp_vo.features.base``.

Importing this package is cheap: onnxruntime and torch are imported inside the factories.
Registered: extractor "keypointnet" (RGB/gray image), extractor "viewsynth" (depth image),
depth estimator "depthnet". See ``kp_vo.runtime.extractors`` for the options.
"""

from __future__ import annotations

from kp_vo.features.base import register_depth_estimator, register_extractor


@register_extractor("keypointnet")
def _keypointnet(**options):
    from kp_vo.runtime.extractors import KeypointNetExtractor
    return KeypointNetExtractor(**options)


@register_extractor("viewsynth")
def _viewsynth(**options):
    from kp_vo.runtime.extractors import ViewSynthExtractor
    return ViewSynthExtractor(**options)


@register_depth_estimator("depthnet")
def _depthnet(**options):
    from kp_vo.runtime.extractors import DepthNetEstimator
    return DepthNetEstimator(**options)
