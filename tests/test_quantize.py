"""Quantized codes against a NumPy reference and against sentence-transformers' own."""

import numpy as np
import pytest

from mrl.eval.quantize import (
    binary_codes,
    bytes_per_vector,
    dequantize_int8,
    int8_codes,
    int8_ranges,
    unpack_bits,
)


def features(seed=0, n=300, d=48):
    rng = np.random.default_rng(seed)
    x = np.maximum(rng.normal(size=(n, d)), 0).astype(np.float32)  # post-ReLU, like the CNN's
    x[:, 7] = 0.0  # a dead unit: a constant dim
    return x


def test_int8_codes_by_hand():
    # Ranges whose step (max - min) / 255 is exactly 1/128 in both dims.
    top = 255 / 128
    calibration = np.array([[0.0, -1.0], [top, top - 1.0]], dtype=np.float32)
    ranges = int8_ranges(calibration)
    np.testing.assert_array_equal(ranges, calibration)
    x = np.array([[0.0, -1.0], [top, top - 1.0], [0.011, 0.0], [-5.0, 5.0]], dtype=np.float32)
    # Dim 0: 0.011 * 128 = 1.41 -> bucket 1 -> code 1 - 128; out-of-range values clip.
    # Dim 1: 0.0 sits 128 steps above -1 -> code 0.
    expected = [[-128, -128], [127, 127], [-127, 0], [-128, 127]]
    np.testing.assert_array_equal(int8_codes(x, ranges), expected)
    centres = dequantize_int8(int8_codes(x[:3], ranges), ranges)
    np.testing.assert_allclose(centres[2], [1.5 / 128, 0.5 / 128])


def test_dequantized_values_lie_within_half_a_step_and_constant_dims_stay_exact():
    x = features()
    ranges = int8_ranges(x)
    back = dequantize_int8(int8_codes(x, ranges), ranges)
    steps = (ranges[1] - ranges[0]) / 255
    assert (np.abs(back - x) <= steps / 2 + 1e-6).all()
    np.testing.assert_array_equal(back[:, 7], 0.0)


def test_binary_codes_by_hand_and_hamming():
    x = np.array([[1.0, 0, 2, 0, 0, 0, 0, 3, 0.5], [0, 0, 0, 0, 0, 0, 0, 0, -1]], np.float32)
    codes = binary_codes(x)
    np.testing.assert_array_equal(codes, [[0b10100001, 0b10000000], [0, 0]])
    np.testing.assert_array_equal(unpack_bits(codes, 9), (x > 0).astype(np.float32))
    hamming = np.unpackbits(codes[0] ^ codes[1]).sum()
    assert hamming == 4


def test_codes_equal_sentence_transformers():
    quantization = pytest.importorskip("sentence_transformers.util.quantization")
    x = features(1)
    queries = features(2, n=50)
    ours = int8_codes(queries, int8_ranges(x))
    theirs = quantization.quantize_embeddings(queries, "int8", calibration_embeddings=x)
    np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(binary_codes(x), quantization.quantize_embeddings(x, "ubinary"))


def test_bytes_per_vector():
    assert [bytes_per_vector(2048, p) for p in ("float32", "float16", "int8", "binary")] == [
        8192,
        4096,
        2048,
        256,
    ]
    assert bytes_per_vector(12, "binary") == 2
    with pytest.raises(ValueError, match="unknown precision"):
        bytes_per_vector(8, "int4")
