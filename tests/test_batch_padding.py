"""rlvr_jax.batch.left_pad, the one prompt-padding helper (trainer and both sampler schedulers), against hand arrays."""
import numpy as np
import pytest

from rlvr_jax.batch import left_pad, pack_sequences


def test_left_pad_right_aligns_and_marks_padding_rows():
    ids, mask = left_pad([[5, 6], [7]], 4, pad_id=9, rows=3)
    np.testing.assert_array_equal(ids, [[9, 9, 5, 6], [9, 9, 9, 7], [9, 9, 9, 9]])
    np.testing.assert_array_equal(mask, [[0, 0, 1, 1], [0, 0, 0, 1], [0, 0, 0, 1]])  # row 3: one dummy token
    assert ids.dtype == np.int32 and mask.dtype == np.int32


def test_left_pad_rejects_a_sequence_longer_than_the_length():
    with pytest.raises(ValueError, match="sequence 1 has 3 tokens"):
        left_pad([[1], [1, 2, 3]], 2, pad_id=0)


def test_pack_sequences_prompts_use_left_pad():
    b = pack_sequences([[1, 2, 3], [4]], [[7], [8, 9]], length_bucket=4, pad_id=0)
    ids, mask = left_pad([[1, 2, 3], [4]], 4, 0)
    np.testing.assert_array_equal(b.prompt_ids, ids)
    np.testing.assert_array_equal(b.prompt_mask, mask)
    np.testing.assert_array_equal(b.response_ids, [[7, 0, 0, 0], [8, 9, 0, 0]])
    np.testing.assert_array_equal(b.response_mask, [[1, 0, 0, 0], [1, 1, 0, 0]])
