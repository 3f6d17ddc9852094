"""The full specialist model: timm backbone + specialist module + projection + attention + classifier.

Inputs follow the training-batch contract (``docs/architecture.md``): ``frames`` float
``(B, T, 3, S, S)`` in ``[0, 1]``; for audio specialists optionally ``audio`` ``(B, n_mels, steps)``
and ``has_audio`` ``(B,)``; for the grid view ``grid`` ``(B, 3, G, G)`` in ``[0, 1]`` (uint8 is
converted); for sync specialists optionally ``sync`` ``(B, curves, offsets)`` and ``has_sync``; for lighting
specialists optionally ``lighting`` ``(B, 15)`` and ``has_lighting``.
:func:`model_inputs` picks them from a training batch. The model normalises with its backbone's
mean/std itself, so every caller (training, evaluation, the ensemble) feeds the same raw clips.

Fusion: the backbone's pooled features (centre frame), the specialist module's flattened
``channels*7*7`` features and, for AV, an audio embedding and a sync embedding (for BG a lighting
embedding) are each projected to ``embed_dim`` tokens; a multi-head self-attention layer (with residual and LayerNorm) lets them attend to each
other; the mean token goes through a dropout classifier to two logits ``(real, fake)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from specialists.branches import SpecialistModule
from specialists.registry import InputView, SpecialistError, get_spec


@dataclass
class ModelConfig:
    """Everything needed to rebuild a specialist model (it is stored in every checkpoint)."""

    specialist: str = ""
    """Registry key of the specialist (``av``, ``cm``, ``rr``, ``tm``, ``bg``, ``ll``, ...). In a
    run config the model section is a template and the train job sets this per trainer."""
    backbone: str = "efficientnet_b4"
    """Any timm model name; ``test_efficientnet`` is the tiny one used by tests and the CPU demo."""
    weights_file: str | None = None
    """Backbone weights from a file: a local ``.pth``/``.safetensors`` path, or ``s3://bucket/key``
    (the training worker fetches it through the run's ``s3_endpoint`` / ``AWS_ENDPOINT_URL`` to a
    temporary file; this module itself reads local files only). Wins over ``pretrained``. Used only
    where nothing else sets the weights (a chain's first stage, not resumed); checkpoints store
    ``None``, as their own weights are in them."""
    pretrained: bool = False
    """Start the backbone from timm's pretrained weights for ``backbone`` (``efficientnet_b4`` ->
    ``timm/efficientnet_b4.ra2_in1k``), loaded by timm itself from the Hugging Face hub cache
    (``HF_HOME``/``hub``, or ``HF_HUB_CACHE``) and downloaded into it when missing, unless
    ``HF_HUB_OFFLINE=1``. Offline with the weights not cached: one-line error naming the cache and
    ``weights_file``. Checkpoints store ``False`` (their weights are in them: nothing to download)."""
    allow_random_init: bool = False
    """Train a stage from random backbone weights on purpose. Without it, a stage with no
    predecessor checkpoint, no ``weights_file``, ``pretrained`` false and a fine-tuning learning rate
    (below 1e-3) is refused before any worker starts (the demo sets it: tiny backbone from scratch)."""
    image_size: int = 320
    """Face-crop side S the model is trained at (efficientnet_b4: 320 train / 384 test)."""
    num_frames: int = 4
    """Frames per clip T; image specialists use the centre frame, temporal ones all of them."""
    embed_dim: int = 256
    """Width of the projected tokens and of the attention layer."""
    num_heads: int = 4
    """Heads of the fusion attention."""
    dropout: float = 0.3
    """Classifier dropout; each stage sets its own (see the stage recipe)."""
    audio_mels: int = 40
    """Mel bands of the audio window (audio specialists)."""
    audio_steps: int = 16
    """Time steps of the audio window (audio specialists)."""
    sync_curves: int = 15
    """Curves of the sync input (sync specialists; ``data_pipeline/sync.py``: 3 mouth x 5 audio features)."""
    sync_offsets: int = 31
    """Offsets of the sync input (``2 * max_offset_s * rate + 1``: +-0.6 s at 25 steps/s)."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise SpecialistError(f"unknown model config fields: {', '.join(sorted(unknown))}")
        return cls(**d)


def create_backbone(name: str, weights_file: str | None = None, pretrained: bool = False) -> nn.Module:
    """A timm feature extractor (``num_classes=0``): weights from a local file when given, else
    timm's pretrained weights when ``pretrained`` (through the Hugging Face hub cache), else random."""
    import timm  # here, not at module level: importing timm costs ~2 s, and processes that only
    # unpickle configs (Tune trials, Ray Train controllers) never build a model
    if not timm.is_model(name):
        raise SpecialistError(f"unknown timm backbone {name!r}")
    if weights_file is not None:
        if str(weights_file).startswith("s3://"):
            raise SpecialistError(f"backbone weights {weights_file}: s3:// files are fetched by the training "
                                  f"worker; here give a local path")
        if not Path(weights_file).is_file():
            raise SpecialistError(f"backbone weights file not found: {weights_file}")
        return timm.create_model(name, pretrained=True, num_classes=0,
                                 pretrained_cfg_overlay=dict(file=str(weights_file)))
    if pretrained:
        source = pretrained_source(name)
        try:
            return timm.create_model(name, pretrained=True, num_classes=0)
        except Exception as e:  # hub, network and file errors alike: one line
            raise SpecialistError(_pretrained_error(name, source, e)) from None
    return timm.create_model(name, pretrained=False, num_classes=0)


WEIGHTS_FILE_HINT = "or set model.weights_file: PATH|s3://bucket/key"
_HUB_FILES = ("model.safetensors", "pytorch_model.bin")  # what timm looks for, in its order


def pretrained_source(name: str) -> str:
    """Where timm takes ``name``'s pretrained weights from: its Hugging Face hub id
    (``timm/efficientnet_b4.ra2_in1k``) or, for older entries, a URL. Refuses a backbone that timm
    has no pretrained weights for (timm itself would silently keep random ones)."""
    import timm
    from timm.models import get_pretrained_cfg

    if not timm.is_model(name):
        raise SpecialistError(f"unknown timm backbone {name!r}")
    cfg = get_pretrained_cfg(name)
    source = cfg and (cfg.hf_hub_id or cfg.url)
    if not source:
        raise SpecialistError(f"timm has no pretrained weights for backbone {name!r}; "
                              f"choose another backbone {WEIGHTS_FILE_HINT}")
    return source


def hub_cache_dir() -> str:
    """The Hugging Face hub cache this process uses (``HF_HUB_CACHE``, else ``HF_HOME``/``hub``)."""
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _not_cached(name: str, source: str, reason: str | None = None) -> str:
    from huggingface_hub import constants

    why = ("HF_HUB_OFFLINE=1 forbids downloading them" if constants.HF_HUB_OFFLINE
           else f"the hub cannot be reached to download them ({reason})" if reason
           else "the hub cannot be reached to download them")
    return (f"backbone {name}: timm's pretrained weights ({source}) are not in the Hugging Face cache "
            f"{hub_cache_dir()} (HF_HOME) and {why}; pre-seed that cache {WEIGHTS_FILE_HINT}")


def _pretrained_error(name: str, source: str, e: BaseException) -> str:
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    if isinstance(e, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
        return _not_cached(name, source)
    reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return (f"backbone {name}: timm's pretrained weights ({source}) could not be loaded through the "
            f"Hugging Face cache {hub_cache_dir()} ({type(e).__name__}: {reason}); "
            f"pre-seed that cache again {WEIGHTS_FILE_HINT}")


def check_pretrained_available(name: str, timeout: float = 10.0) -> None:
    """Fail early, in one line, when timm's pretrained weights for ``name`` could not be loaded in
    this process' environment: not in the hub cache, and ``HF_HUB_OFFLINE`` is set or the hub does
    not answer one HEAD request (no retries). Nothing is downloaded. Weights that timm takes from a
    URL (entries without a hub id) are not checked."""
    source = pretrained_source(name)
    if source.startswith(("http://", "https://")):
        return
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url, try_to_load_from_cache
    from huggingface_hub.errors import EntryNotFoundError
    from timm.models import get_pretrained_cfg

    filename = get_pretrained_cfg(name).hf_hub_filename
    files = (filename,) if filename else _HUB_FILES
    repo, _, revision = source.partition("@")
    if any(isinstance(try_to_load_from_cache(repo, f, revision=revision or None), str) for f in files):
        return
    if constants.HF_HUB_OFFLINE:
        raise SpecialistError(_not_cached(name, source))
    for f in files:
        try:
            get_hf_file_metadata(hf_hub_url(repo, f, revision=revision or None), timeout=timeout)
            return
        except EntryNotFoundError:
            continue
        except Exception as e:  # no network, proxy, DNS, HTTP: one line
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise SpecialistError(_not_cached(name, source, f"{type(e).__name__}: {reason}")) from None
    raise SpecialistError(f"backbone {name}: the hub repository {source} holds none of {', '.join(files)}; "
                          f"set model.weights_file: PATH|s3://bucket/key")


class AudioEncoder(nn.Module):
    """A small 1-D conv net over a log-mel window ``(B, n_mels, steps)`` -> ``(B, embed_dim)``."""

    def __init__(self, n_mels: int, embed_dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(n_mels, 64, 3, padding=1), nn.BatchNorm1d(64), nn.GELU(),
            nn.Conv1d(64, 64, 3, padding=1), nn.BatchNorm1d(64), nn.GELU(),
            nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(64, embed_dim),
        )

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        return self.net(audio)


class SyncEncoder(nn.Module):
    """Sync curves ``(B, curves, offsets)`` -> ``(B, embed_dim)``: two convolutions along the offset
    axis (where a curve peaks, and how sharply), then a linear layer over all offsets, so the
    embedding knows whether the peak is at zero offset."""

    def __init__(self, curves: int, offsets: int, embed_dim: int):
        super().__init__()
        self.shape = (curves, offsets)
        self.net = nn.Sequential(
            nn.Conv1d(curves, 32, 5, padding=2), nn.GELU(),
            nn.Conv1d(32, 16, 5, padding=2), nn.GELU(),
            nn.Flatten(), nn.Linear(16 * offsets, embed_dim),
        )

    def forward(self, sync: torch.Tensor) -> torch.Tensor:
        if tuple(sync.shape[1:]) != self.shape:
            raise SpecialistError(f"sync input of shape {tuple(sync.shape[1:])}, the model was built for "
                                  f"{self.shape} (model.sync_curves, model.sync_offsets)")
        return self.net(sync)


class LightingEncoder(nn.Module):
    """Lighting cues ``(B, 15)`` -> ``(B, embed_dim)``: a small MLP (the cues are all of order one:
    log chromaticities, log luminance, unit gradient directions; a layer norm after the first layer,
    not a batch norm, so that a batch of one row trains too)."""

    def __init__(self, cues: int, embed_dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(cues, 64), nn.LayerNorm(64), nn.GELU(), nn.Linear(64, embed_dim))

    def forward(self, cues: torch.Tensor) -> torch.Tensor:
        return self.net(cues)


#: lighting cues per clip (``data_pipeline/lighting.py``: face, surround, difference x 5)
LIGHTING_CUES = 15
#: the batch keys a specialist model reads (see :func:`model_inputs`)
MODEL_INPUTS = ("frames", "audio", "has_audio", "grid", "sync", "has_sync", "lighting", "has_lighting")


def model_inputs(batch: dict, device: torch.device | str | None = None) -> dict:
    """The keyword arguments of :meth:`SpecialistModel.forward` from a training batch
    (``data_pipeline.batch.rows_to_batch``), moved to ``device`` when given."""
    out = {k: batch[k] for k in MODEL_INPUTS if batch.get(k) is not None}
    return out if device is None else {k: v.to(device) for k, v in out.items()}


class SpecialistModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.spec = get_spec(config.specialist)
        self.backbone = create_backbone(config.backbone, config.weights_file, config.pretrained)
        from timm.data import resolve_data_config

        data_cfg = resolve_data_config({}, model=self.backbone)
        self.register_buffer("mean", torch.tensor(data_cfg["mean"]).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(data_cfg["std"]).view(1, 1, 3, 1, 1), persistent=False)
        self.module = SpecialistModule(self.spec)
        d = config.embed_dim
        self.backbone_proj = nn.Sequential(nn.Linear(self.backbone.num_features, d), nn.LayerNorm(d))
        self.specialist_proj = nn.Sequential(nn.Linear(self.spec.features, d), nn.LayerNorm(d))
        n_tokens = 2
        if self.spec.uses_audio:
            self.audio_encoder = AudioEncoder(config.audio_mels, d)
            self.no_audio = nn.Parameter(torch.zeros(d))
            n_tokens += 1
        if self.spec.uses_sync:
            self.sync_encoder = SyncEncoder(config.sync_curves, config.sync_offsets, d)
            self.no_sync = nn.Parameter(torch.zeros(d))
            n_tokens += 1
        if self.spec.uses_lighting:
            self.lighting_encoder = LightingEncoder(LIGHTING_CUES, d)
            self.no_lighting = nn.Parameter(torch.zeros(d))
            n_tokens += 1
        self.token_type = nn.Parameter(torch.zeros(n_tokens, d))
        nn.init.normal_(self.token_type, std=0.02)
        self.attention = nn.MultiheadAttention(d, config.num_heads, batch_first=True)
        self.attn_norm = nn.LayerNorm(d)
        self.classifier = nn.Sequential(
            nn.Dropout(config.dropout), nn.Linear(d, d // 2), nn.GELU(),
            nn.Dropout(config.dropout), nn.Linear(d // 2, 2),
        )

    @property
    def backbone_features(self) -> int:
        return self.backbone.num_features

    def set_dropout(self, p: float) -> None:
        """Set the classifier dropout (stages differ: 0.3, 0.3, 0.4)."""
        self.config.dropout = p
        for m in self.classifier:
            if isinstance(m, nn.Dropout):
                m.p = p

    def forward(self, frames: torch.Tensor, audio: torch.Tensor | None = None,
                has_audio: torch.Tensor | None = None, grid: torch.Tensor | None = None,
                sync: torch.Tensor | None = None, has_sync: torch.Tensor | None = None,
                lighting: torch.Tensor | None = None, has_lighting: torch.Tensor | None = None) -> torch.Tensor:
        if frames.dim() == 4:  # a batch of single images
            frames = frames.unsqueeze(1)
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise SpecialistError(f"expected frames of shape (B, T, 3, H, W), got {tuple(frames.shape)}")
        x = (frames - self.mean) / self.std
        centre = x[:, x.shape[1] // 2]
        tokens = [self.backbone_proj(self.backbone(centre)), self.specialist_proj(self.module(self._view_input(x, grid)))]
        if self.spec.uses_audio:
            tokens.append(self._optional_token(self.audio_encoder, audio, has_audio, self.no_audio, frames))
        if self.spec.uses_sync:
            tokens.append(self._optional_token(self.sync_encoder, sync, has_sync, self.no_sync, frames))
        if self.spec.uses_lighting:
            tokens.append(self._optional_token(self.lighting_encoder, lighting, has_lighting, self.no_lighting, frames))
        t = torch.stack(tokens, dim=1) + self.token_type
        attended, _ = self.attention(t, t, t, need_weights=False)
        t = self.attn_norm(t + attended)
        return self.classifier(t.mean(dim=1))

    def _view_input(self, x: torch.Tensor, grid: torch.Tensor | None) -> torch.Tensor:
        """What the specialist module sees: the normalised clip, or for the grid view the
        normalised codec-grid patch as a one-frame clip."""
        if self.spec.view is not InputView.GRID:
            return x
        if grid is None:
            raise SpecialistError(f"specialist {self.spec.key} needs the codec-grid patch (the shards' grid column): "
                                  f"prepare the shards again with this version")
        g = grid.float().div(255.0) if grid.dtype == torch.uint8 else grid.to(x.dtype)
        return ((g.unsqueeze(1) - self.mean) / self.std)

    @staticmethod
    def _optional_token(encoder: nn.Module, value: torch.Tensor | None, present: torch.Tensor | None,
                        missing: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        """``encoder(value)`` where ``present`` (all rows when ``None``), the learnt ``missing``
        token elsewhere or when there is no ``value``."""
        b = frames.shape[0]
        absent = missing.expand(b, -1)
        if value is None:
            return absent
        emb = encoder(value.to(frames.dtype))
        mask = (torch.ones(b, dtype=torch.bool, device=frames.device) if present is None
                else present.to(torch.bool).to(frames.device))
        return torch.where(mask[:, None], emb, absent)


def create_model(specialist: str, **overrides) -> SpecialistModel:
    """Build a specialist model by registry key, e.g. ``create_model("tm", backbone="test_efficientnet")``."""
    return SpecialistModel(ModelConfig(specialist=specialist, **overrides))
