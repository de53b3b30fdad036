"""digests.tensor_digest (exact values) and file_digest (bytes): what the course's run keys and the weight checks
are made of."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch

from opticam_lib.digests import file_digest, image_digests, tensor_digest


def test_tensor_digest_sees_every_bit_of_float64() -> None:
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[0, 0, 0, 0] += 1e-12  # below float32's resolution: a digest through float32 would miss it
    assert torch.equal(x.float(), y.float())
    assert tensor_digest(x) != tensor_digest(y)
    assert image_digests(x) == image_digests(y)  # the 8-bit digest is the one that forgives round-off


def test_tensor_digest_names_dtype_and_shape_not_layout() -> None:
    x = torch.rand(2, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    assert tensor_digest(x) == tensor_digest(x.clone())
    assert tensor_digest(x) == tensor_digest(x.contiguous(memory_format=torch.channels_last))
    assert tensor_digest(x) == tensor_digest(x.transpose(-1, -2).contiguous().transpose(-1, -2))
    assert tensor_digest(x) != tensor_digest(x.reshape(2, 3, 16))  # same values, other shape
    assert tensor_digest(x) != tensor_digest(x.double())  # same values, other dtype
    h = x.half()
    assert tensor_digest(h) == tensor_digest(h.clone()) != tensor_digest(h.float())
    assert tensor_digest(x.bfloat16()) != tensor_digest(h)


@pytest.mark.parametrize("size", [0, 1, (1 << 20) + 7])
def test_file_digest_is_sha256_of_the_bytes(tmp_path: Path, size: int) -> None:
    data = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    assert file_digest(path) == hashlib.sha256(data).hexdigest()
