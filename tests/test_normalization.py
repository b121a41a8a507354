"""Intensity normalization: per-image percentiles, z-score fitted on training only."""

import json

import numpy as np
import pytest

from shapeworks_progressive.normalization import IntensityNormalization


def _images(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.gamma(2.0, 50.0, size=(12, 10, 8)).astype(np.float32) * 10.0 ** k
            for k in range(3)]


def test_fit_gives_zero_mean_unit_std_on_training_images():
    train = _images()
    norm = IntensityNormalization.fit(train)
    out = np.concatenate([norm.apply(a).ravel() for a in train])
    assert abs(out.mean()) < 1e-5
    assert abs(out.std() - 1.0) < 1e-4


def test_scale_and_pixel_type_do_not_matter():
    norm = IntensityNormalization.fit(_images())
    image = _images(1)[0]
    np.testing.assert_allclose(norm.apply(image * 1000.0), norm.apply(image), atol=1e-4)
    as_uint8 = np.clip(image / image.max() * 255, 0, 255).astype(np.uint8)
    out = norm.apply(as_uint8)
    assert out.dtype == np.float32 and np.isfinite(out).all()


def test_fitted_only_on_what_it_is_given():
    train = _images()
    norm = IntensityNormalization.fit(train)
    other = IntensityNormalization.fit(train + [np.full((4, 4, 4), 5.0, np.float32)])
    assert other.mean != norm.mean
    again = IntensityNormalization.fit(_images())
    assert again == norm


def test_percentile_clipping_removes_outliers():
    norm = IntensityNormalization(lower_percentile=1.0, upper_percentile=99.0)
    image = np.linspace(0, 100, 1000).astype(np.float32)
    image[0] = -1e9
    image[-1] = 1e9
    rescaled = norm.rescale(image)
    assert rescaled.min() == 0.0 and rescaled.max() == 1.0
    assert 0.49 < rescaled[500] < 0.51


def test_constant_nan_and_empty_images_never_give_nan():
    constant = np.full((5, 5, 5), 3.0, np.float32)
    norm = IntensityNormalization.fit([constant, constant])
    assert norm.std == 1.0 and norm.mean == 0.0
    np.testing.assert_array_equal(norm.apply(constant), 0.0)
    with_nan = _images()[0]
    with_nan[0, 0, :] = np.nan
    with_nan[1, 0, 0] = np.inf
    assert np.isfinite(norm.apply(with_nan)).all()
    assert np.isfinite(norm.apply(np.full((3, 3, 3), np.nan))).all()


def test_dict_round_trip_and_errors():
    norm = IntensityNormalization.fit(_images())
    assert IntensityNormalization.from_dict(json.loads(json.dumps(norm.to_dict()))) == norm
    with pytest.raises(ValueError, match="std must be finite and > 0"):
        IntensityNormalization(std=0.0)
    with pytest.raises(ValueError, match="lower_percentile < upper_percentile"):
        IntensityNormalization(lower_percentile=60, upper_percentile=40)
    with pytest.raises(ValueError, match="unknown intensity normalization method 'zscore'"):
        IntensityNormalization.from_dict(dict(norm.to_dict(), method="zscore"))
