"""tropes: a passage classifier for AI-portrayal tropes.

    import tropes
    classifier = tropes.load()              # the shipped model (or ./models/LATEST)
    classifier.tag(["The robot lied to the inspector."])[0].labels
    classifier.tag_documents([long_text])   # split into passages, with evidence
    classifier.probabilities(texts)         # numpy array, one column per label
    dataset.map(tropes.datasets_map(classifier), batched=True)  # Hugging Face datasets

Nothing is imported until it is used: `import tropes` is cheap and has no side effects.
"""

from __future__ import annotations

__all__ = ["ArtifactError", "Classifier", "TagResult", "TropesError", "datasets_map", "load"]

_EXPORTS = {
    "load": ("tropes.classifier", "load"),
    "Classifier": ("tropes.classifier", "Classifier"),
    "TagResult": ("tropes.result", "TagResult"),
    "datasets_map": ("tropes.hf_datasets", "datasets_map"),
    "TropesError": ("tropes.training.errors", "TropesError"),
    "ArtifactError": ("tropes.training.artifact", "ArtifactError"),
}


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        module, attr = _EXPORTS[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'tropes' has no attribute {name!r}")
