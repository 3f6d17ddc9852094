"""The full specialist model: timm backbone + specialist module + projection + attention + classifier.

Inputs follow the training-batch contract (``docs/architecture.md``): ``frames`` float
``(B, T, 3, S, S)`` in ``[0, 1]``; for audio specialists optionally ``audio`` ``(B, n_mels, steps)``
and ``has_audio`` ``(B,)``. The model normalises with its backbone's mean/std itself, so every
caller (training, evaluation, the ensemble) feeds the same raw clips.

Fusion: the backbone's pooled features (centre frame), the specialist module's flattened
``channels*7*7`` features and, for AV, an audio embedding are each projected to ``embed_dim``
tokens; a multi-head self-attention layer (with residual and LayerNorm) lets them attend to each
other; the mean token goes through a dropout classifier to two logits ``(real, fake)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
from torch import nn

from specialists.branches import SpecialistModule
from specialists.registry import SpecialistError, get_spec


@dataclass
class ModelConfig:
    """Everything needed to rebuild a specialist model (it is stored in every checkpoint)."""

    specialist: str = ""
    """Registry key of the specialist (``av``, ``cm``, ``rr``, ``tm``, ``bg``, ``ll``, ...). In a
    run config the model section is a template and the train job sets this per trainer."""
    backbone: str = "efficientnet_b4"
    """Any timm model name; ``test_efficientnet`` is the tiny one used by tests and the CPU demo."""
    weights_file: str | None = None
    """Local backbone weights (``.pth``/``.safetensors``); ``None`` = random init. Never downloaded."""
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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise SpecialistError(f"unknown model config fields: {', '.join(sorted(unknown))}")
        return cls(**d)


def create_backbone(name: str, weights_file: str | None = None) -> nn.Module:
    """A timm feature extractor (``num_classes=0``), weights from a local file when given."""
    import timm  # here, not at module level: importing timm costs ~2 s, and processes that only
    # unpickle configs (Tune trials, Ray Train controllers) never build a model
    if not timm.is_model(name):
        raise SpecialistError(f"unknown timm backbone {name!r}")
    if weights_file is not None:
        if not Path(weights_file).is_file():
            raise SpecialistError(f"backbone weights file not found: {weights_file}")
        return timm.create_model(name, pretrained=True, num_classes=0,
                                 pretrained_cfg_overlay=dict(file=str(weights_file)))
    return timm.create_model(name, pretrained=False, num_classes=0)


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


class SpecialistModel(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.spec = get_spec(config.specialist)
        self.backbone = create_backbone(config.backbone, config.weights_file)
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
            n_tokens = 3
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
                has_audio: torch.Tensor | None = None) -> torch.Tensor:
        if frames.dim() == 4:  # a batch of single images
            frames = frames.unsqueeze(1)
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise SpecialistError(f"expected frames of shape (B, T, 3, H, W), got {tuple(frames.shape)}")
        x = (frames - self.mean) / self.std
        centre = x[:, x.shape[1] // 2]
        tokens = [self.backbone_proj(self.backbone(centre)), self.specialist_proj(self.module(x))]
        if self.spec.uses_audio:
            b = frames.shape[0]
            no_audio = self.no_audio.expand(b, -1)
            if audio is None:
                tokens.append(no_audio)
            else:
                emb = self.audio_encoder(audio.to(frames.dtype))
                mask = (torch.ones(b, dtype=torch.bool, device=frames.device) if has_audio is None
                        else has_audio.to(torch.bool).to(frames.device))
                tokens.append(torch.where(mask[:, None], emb, no_audio))
        t = torch.stack(tokens, dim=1) + self.token_type
        attended, _ = self.attention(t, t, t, need_weights=False)
        t = self.attn_norm(t + attended)
        return self.classifier(t.mean(dim=1))


def create_model(specialist: str, **overrides) -> SpecialistModel:
    """Build a specialist model by registry key, e.g. ``create_model("tm", backbone="test_efficientnet")``."""
    return SpecialistModel(ModelConfig(specialist=specialist, **overrides))
