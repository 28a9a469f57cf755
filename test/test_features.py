"""The extractor contract for ORB and SIFT, grid bucketing, the registry, and bad images."""

import numpy as np
import pytest

from kp_vo.datasets import SyntheticSequence
from kp_vo.errors import InvalidInputError
from kp_vo.features import Features, available_extractors, create_extractor


@pytest.fixture(scope="module")
def street_image():
    return SyntheticSequence("street", num_frames=1, width=640, height=192, seed=0)[0].image


@pytest.mark.parametrize("name, metric, width, dtype", [("orb", "hamming", 32, np.uint8), ("sift", "l2", 128, np.float32)])
def test_contract(street_image, name, metric, width, dtype):
    features = create_extractor(name, max_keypoints=500).extract(street_image)
    assert isinstance(features, Features) and features.metric == metric
    assert 100 < len(features) <= 500
    assert features.descriptors.shape == (len(features), width) and features.descriptors.dtype == dtype
    u, v = features.keypoints.T
    assert (u >= 0).all() and (u < 640).all() and (v >= 0).all() and (v < 192).all()
    assert (np.diff(features.scores) <= 0).all()  # strongest first
    if metric == "l2":
        np.testing.assert_allclose(np.linalg.norm(features.descriptors, axis=1), 1.0, rtol=1e-5)


def test_bucketing_spreads_keypoints_over_the_image():
    rng = np.random.default_rng(0)
    image = np.full((256, 256), 128, np.uint8)
    image[:64, :64] = rng.integers(0, 256, (64, 64))          # a very busy corner...
    for y in range(96, 256, 40):                                 # ...and a few isolated blobs elsewhere
        for x in range(96, 256, 40):
            image[y:y + 8, x:x + 8] = 255
    features = create_extractor("orb", max_keypoints=100, grid_cell=32).extract(image)
    outside_corner = ((features.keypoints[:, 0] > 80) | (features.keypoints[:, 1] > 80)).sum()
    assert outside_corner >= 16  # every blob cell gets its turn before the corner's weaker keypoints


def test_gray_and_rgb_give_the_same_keypoints(street_image):
    from kp_vo.features.base import to_gray

    orb = create_extractor("orb", max_keypoints=300)
    np.testing.assert_array_equal(orb.extract(street_image).keypoints, orb.extract(to_gray(street_image)).keypoints)


def test_textureless_image_gives_empty_features():
    features = create_extractor("orb").extract(np.full((120, 160), 90, np.uint8))
    assert len(features) == 0 and features.descriptors.shape == (0, 32)


@pytest.mark.parametrize("image", [np.zeros((8, 8), np.uint8), np.zeros((64, 64, 2), np.uint8),
                                   np.zeros((64, 64), np.float64), "not an image"])
def test_bad_images(image):
    with pytest.raises(InvalidInputError):
        create_extractor("orb").extract(image)


def test_registry():
    assert {"orb", "sift"} <= set(available_extractors())
    with pytest.raises(InvalidInputError, match="unknown extractor 'surf'"):
        create_extractor("surf")


@pytest.mark.parametrize("name", ["orb", "sift"])
@pytest.mark.parametrize("options", [{"max_keypoints": -5}, {"max_keypoints": 0}, {"max_keypoints": 2.5},
                                     {"grid_cell": 0}])
def test_out_of_range_classical_extractor_options_are_one_line_errors(name, options):
    from kp_vo.errors import InvalidInputError
    from kp_vo.features import create_extractor

    with pytest.raises(InvalidInputError, match="must be a positive integer"):
        create_extractor(name, **options)


def test_registry_refuses_a_second_factory_an_unknown_name_and_bad_options():
    from kp_vo.features.base import Registry, create_depth_estimator
    registry = Registry("widget")

    @registry.register("w")
    def make(size: int = 1):
        return ("w", size)

    assert registry.names() == ["w"] and registry.create("w", size=3) == ("w", 3)
    with pytest.raises(ValueError, match="widget 'w' registered twice"):
        registry.register("w")(make)
    with pytest.raises(InvalidInputError, match="unknown widget 'v'; available: w"):
        registry.create("v")
    with pytest.raises(InvalidInputError, match=r"widget 'w': bad options \['sise'\]"):
        registry.create("w", sise=2)
    with pytest.raises(InvalidInputError, match="unknown depth estimator 'nope'"):
        create_depth_estimator("nope")


def _low_contrast_image() -> np.ndarray:
    """A plain grey wall with faint blobs (contrast 8 grey levels): few FAST corners at threshold 10."""
    rng = np.random.default_rng(3)
    image = np.full((240, 320), 120, np.uint8)
    for x, y in rng.integers(20, [300, 220], (60, 2)):
        image[y - 3:y + 3, x - 3:x + 3] += 8
    return image


def test_orb_detects_again_with_a_lower_threshold_where_it_finds_too_few_corners(street_image):
    low = _low_contrast_image()
    strict = create_extractor("orb", max_keypoints=500, min_fast_threshold=10)   # no second pass
    adaptive = create_extractor("orb", max_keypoints=500)                        # min_fast_threshold 5
    sensitive = create_extractor("orb", max_keypoints=500, fast_threshold=5)
    assert len(strict.extract(low)) < 20 < len(adaptive.extract(low))
    np.testing.assert_array_equal(adaptive.extract(low).keypoints, sensitive.extract(low).keypoints)
    # A textured image fills the budget at the first threshold: exactly the strict extractor's features.
    a, b = adaptive.extract(street_image), strict.extract(street_image)
    assert len(a) == 500
    np.testing.assert_array_equal(a.keypoints, b.keypoints)
    np.testing.assert_array_equal(a.descriptors, b.descriptors)


def test_orb_refuses_a_fallback_threshold_above_the_first():
    with pytest.raises(InvalidInputError, match="min_fast_threshold"):
        create_extractor("orb", fast_threshold=5, min_fast_threshold=8)
