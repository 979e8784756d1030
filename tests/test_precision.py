"""bf16 autocast must stay within a small tolerance of fp32 on the test split."""

import numpy as np
import pytest

import tropes
from tropes.training.embeddings import cpu_has_bf16, resolve_precision
from tropes.training.labelset import read_labels

from .conftest import REPO

pytestmark = pytest.mark.encoder


def test_auto_precision_follows_the_cpu():
    assert resolve_precision("auto") == ("bf16" if cpu_has_bf16() else "fp32")
    with pytest.raises(ValueError):
        resolve_precision("fp8")


@pytest.mark.skipif(not cpu_has_bf16(), reason="this CPU has no bf16 instructions")
@pytest.mark.parametrize("every", [
    4,  # a quarter of the split in make test (the whole split took 48 s of its budget)
    pytest.param(1, marks=pytest.mark.slow),
])
def test_bf16_matches_fp32_on_the_test_split(every):
    texts = [p.text for p in read_labels(REPO / "labels").split("test")][::every]
    fp32 = tropes.load(models_dir=REPO / "models", precision="fp32")
    bf16 = tropes.load(models_dir=REPO / "models", precision="bf16")
    a, b = fp32.scores(texts), bf16.scores(texts)
    assert np.abs(a - b).max() < 0.03
    decisions_a, decisions_b = fp32.model.present(a), bf16.model.present(b)
    agreement = (decisions_a == decisions_b).mean()
    print(f"\nbf16 vs fp32: max |dp| {np.abs(a - b).max():.4f}, label agreement {agreement:.4f}")
    assert agreement >= 0.99
    assert sum(x.portrayal == y.portrayal for x, y in
               zip(fp32.results(a), bf16.results(b))) >= 0.97 * len(texts)
