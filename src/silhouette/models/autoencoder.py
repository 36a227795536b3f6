"""MobileNet-style autoencoders: the obfuscator (edge) and the deobfuscator (adversary)."""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from silhouette.errors import SilhouetteError
from silhouette.models.blocks import ConvBNAct, FusedInvertedResidual, InvertedResidual, UpBlock, make_divisible
from silhouette.registry import Registry

# (expansion, out channels, repeats, stride[, fused]) per encoder stage, MobileNetV2 notation; fused=1 builds the
# stage from Fused-MBConv blocks (dense 3x3 expand) instead of 1x1 expand + depthwise.
DEFAULT_STAGES: tuple[tuple[float, int, int, int], ...] = ((6, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 2, 2))


def _check_settings(width: float, depth: float, stem_stride: int, stages: Sequence[Sequence[float]], head_kernel: int,
                    head: str, output_levels: int, output_scale: int) -> None:
    """One clear error for an autoencoder setting out of range."""
    if width <= 0 or depth <= 0:
        raise SilhouetteError(f"autoencoder width and depth must be > 0, got width={width}, depth={depth}")
    if head_kernel not in (1, 3):
        raise SilhouetteError(f"autoencoder head_kernel must be 1 or 3, got {head_kernel}")
    if stem_stride not in (1, 2, 4):
        raise SilhouetteError(f"autoencoder stem_stride must be 1, 2 or 4, got {stem_stride}")
    if head not in ("conv", "shuffle"):
        raise SilhouetteError(f"autoencoder head must be 'conv' or 'shuffle', got {head!r}")
    if output_levels == 1 or output_levels < 0 or output_levels > 256:
        raise SilhouetteError(f"autoencoder output_levels must be 0 (off) or 2..256, got {output_levels}")
    if output_scale not in (1, 2, 4, 8, 16):
        raise SilhouetteError(f"autoencoder output_scale must be 1, 2, 4, 8 or 16, got {output_scale}")
    if any(len(st) not in (4, 5) for st in stages):
        raise SilhouetteError(f"autoencoder stages: each is (expansion, channels, repeats, stride[, fused]), got {list(stages)}")


class MobileAutoencoder(nn.Module):
    """Stem conv, inverted-residual encoder with stride-2 stages, upsample+DS-conv decoder with additive skips; sigmoid.

    The additive skips (encoder feature of the same scale added after each upsampling block) cost no parameters
    and let the network keep person shapes sharp; `skips=False` gives the plain bottleneck autoencoder.
    `head="shuffle"` undoes a strided stem with a 1x1 conv to out·s² channels and a pixel shuffle, so no layer
    runs at full resolution; `head="conv"` upsamples with UpBlocks and ends in a conv of `head_kernel`.
    `output_levels` > 1 rounds the output to that many evenly spaced values per channel (a straight-through
    estimator while training), so the frame that leaves the camera carries at most log2(levels) bits per channel.
    Two more identity bottlenecks for private mode, where the cloud detector is co-trained and need not see a natural
    image: `grey` emits one channel (copied to three, so every detector reads it unchanged) and `output_scale` = k
    averages the output over k x k cells, so the camera's frame holds (H/k)·(W/k) values.
    """

    def __init__(
        self,
        width: float = 1.0,
        depth: float = 1.0,
        stem_channels: int = 16,
        stem_stride: int = 1,
        stages: Sequence[Sequence[float]] = DEFAULT_STAGES,
        decoder_blocks: int = 2,
        in_channels: int = 3,
        out_channels: int = 3,
        skips: bool = True,
        decoder_expansion: float = 4.0,
        head_kernel: int = 3,
        head: str = "conv",
        output_levels: int = 0,
        grey: bool = False,
        output_scale: int = 1,
    ) -> None:
        super().__init__()
        _check_settings(width, depth, stem_stride, stages, head_kernel, head, output_levels, output_scale)
        self.config: dict[str, Any] = dict(
            width=width, depth=depth, stem_channels=stem_channels, stem_stride=stem_stride,
            stages=[list(s) for s in stages], decoder_blocks=decoder_blocks,
            in_channels=in_channels, out_channels=out_channels, skips=skips,
            decoder_expansion=decoder_expansion, head_kernel=head_kernel, head=head, output_levels=output_levels,
        )
        # recorded only when set, so the arch of every earlier checkpoint stays exactly what it was
        if grey:
            self.config["grey"] = True
        if output_scale != 1:
            self.config["output_scale"] = int(output_scale)
        self.grey, self.output_scale, self.out_channels = bool(grey), int(output_scale), out_channels
        self.output_levels = int(output_levels)
        self.skips = skips
        ch = make_divisible(stem_channels * width)
        stem: list[nn.Module] = [ConvBNAct(in_channels, ch, 3, 2 if stem_stride >= 2 else 1)]
        if stem_stride == 4:
            stem.append(ConvBNAct(ch, ch, 3, 2, groups=ch))
        self.stem = nn.Sequential(*stem)
        self.total_stride = stem_stride
        enc, ch, skips_ch, kind_at = self._encoder_blocks(ch, stages, width, depth)
        self.encoder = nn.Sequential(*enc)
        self._skip_from = [i for i, blk in enumerate(enc) if blk.stride == 2]  # encoder inputs kept for the skips
        dec, ch = self._decoder_blocks(ch, skips_ch, kind_at, decoder_blocks, decoder_expansion)
        self._build_head(dec, ch, 1 if grey else out_channels, head, head_kernel, stem_stride)

    def _encoder_blocks(self, ch: int, stages: Sequence[Sequence[float]], width: float,
                        depth: float) -> tuple[list[nn.Module], int, list[int], dict[int, tuple[bool, float]]]:
        """The encoder's blocks, its output channels, the channels at each stride-2 boundary and each scale's block kind."""
        enc: list[nn.Module] = []
        skips_ch: list[int] = []  # channels at each stride-2 boundary, mirrored by the decoder
        # the block kind of the encoder stage whose output lives at each scale; the decoder uses it there too
        kind_at: dict[int, tuple[bool, float]] = {}
        for t, c, n, s, *rest in stages:
            fused = bool(rest[0]) if rest else False
            out_ch = make_divisible(c * width)
            reps = max(1, math.ceil(int(n) * depth))
            for i in range(reps):
                stride = int(s) if i == 0 else 1
                if stride == 2:
                    skips_ch.append(ch)
                    self.total_stride *= 2
                block = FusedInvertedResidual if fused else InvertedResidual
                enc.append(block(ch, out_ch, stride, float(t)))
                ch = out_ch
            kind_at.setdefault(self.total_stride, (fused, float(t)))
        return enc, ch, skips_ch, kind_at

    def _decoder_blocks(self, ch: int, skips_ch: list[int], kind_at: dict[int, tuple[bool, float]],
                        decoder_blocks: int, decoder_expansion: float) -> tuple[list[nn.Module], int]:
        """Upsampling blocks back to the stem's scale, each stage mirroring the encoder's block kind there."""
        dec: list[nn.Module] = []
        self._skip_to: list[int] = []  # decoder blocks whose output gets the matching encoder feature added
        scale = self.total_stride
        for target in reversed(skips_ch):
            scale //= 2
            self._skip_to.append(len(dec))
            dec.append(UpBlock(ch, target))
            fused, t = kind_at.get(scale, (False, float(decoder_expansion)))
            for _ in range(max(0, decoder_blocks - 1)):
                dec.append(FusedInvertedResidual(target, target, 1, t) if fused else InvertedResidual(target, target, 1, float(decoder_expansion)))
            ch = target
        return dec, ch

    def _build_head(self, dec: list[nn.Module], ch: int, out_channels: int, head: str, head_kernel: int,
                    stem_stride: int) -> None:
        """The decoder and the output head, which undoes the stem's downsampling."""
        if head == "shuffle":
            self.decoder = nn.Sequential(*dec)
            # sub-pixel output: each stem-stride cell predicts its s x s pixels, so nothing runs at full resolution
            self.head = nn.Sequential(nn.Conv2d(ch, out_channels * stem_stride**2, 1), nn.PixelShuffle(stem_stride))
            return
        # the stem's downsampling is undone at the end, at low channel counts to keep full-res cost small
        up_stem = stem_stride
        while up_stem > 1:
            nxt = max(8, make_divisible(ch // 2))
            dec.append(UpBlock(ch, nxt))
            ch, up_stem = nxt, up_stem // 2
        self.decoder = nn.Sequential(*dec)
        self.head = nn.Conv2d(ch, out_channels, head_kernel, 1, head_kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map [B,C,H,W] to [B,out,H,W] in [0,1]; sizes not divisible by the total stride are padded then cropped."""
        h, w = x.shape[-2:]
        s = self.total_stride
        # unconditional pad/crop (zero-width when divisible) keeps a traced ONNX graph valid at every size
        x = F.pad(x, (0, (-w) % s, 0, (-h) % s), mode="replicate")
        if self.skips:
            y = self._forward_skips(self.stem(x))
        else:
            y = self.decoder(self.encoder(self.stem(x)))
        out = torch.sigmoid(self.head(y)[..., :h, :w])
        if self.output_scale > 1:
            out = F.avg_pool2d(out, self.output_scale, ceil_mode=True)
        if self.output_levels:
            out = self._quantise(out)
        return self._restore(out, h, w)

    def _restore(self, out: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Back to [B,out_channels,H,W]: repeat a grey channel, blow low-resolution cells up to blocks."""
        if self.output_scale > 1:
            out = F.interpolate(out, scale_factor=self.output_scale, mode="nearest")[..., :h, :w]
        if self.grey:
            out = out.expand(-1, self.out_channels, -1, -1)
        return out

    def _quantise(self, y: torch.Tensor) -> torch.Tensor:
        """Round to `output_levels` values per channel; in training the gradient passes straight through the rounding."""
        steps = self.output_levels - 1
        q = torch.round(y * steps) / steps
        # the straight-through form only while training: at inference (and in an exported graph) the output is exactly q
        return y + (q - y).detach() if self.training else q

    def _forward_skips(self, f: torch.Tensor) -> torch.Tensor:
        """U-Net-like pass: each upsampling block's output plus the encoder feature of the same scale (additive)."""
        kept: list[torch.Tensor] = []
        for i, blk in enumerate(self.encoder):
            if i in self._skip_from:
                kept.append(f)
            f = blk(f)
        for i, blk in enumerate(self.decoder):
            f = blk(f)
            if i in self._skip_to:
                f = f + kept.pop()
        return f


MODELS: Registry[MobileAutoencoder] = Registry("model")

# Named presets; every value can still be overridden by keyword.
PRESETS: dict[str, dict[str, Any]] = {
    "obf_paper": dict(width=1.0),
    # the paper's size band (0.16M params, 1.07 GMACs) with less work at full resolution, where a CPU is
    # memory-bound: no expansion in the first stage, a cheap stride-2 entry, a 1x1 head (≈1.3x faster than obf_paper)
    "obf_fast": dict(
        stages=((1, 16, 1, 1), (2, 24, 1, 2), (6, 24, 3, 1), (6, 32, 3, 2), (6, 64, 2, 2)),
        decoder_expansion=3.0, head_kernel=1,
    ),
    # the paper's size band with no layer at full resolution: a stride-2 stem, Fused-MBConv blocks at half
    # resolution (compute-bound dense 3x3s instead of memory-bound depthwise passes), a pixel-shuffle head
    "obf_fused": dict(
        stem_stride=2, stages=((4, 16, 4, 1, 1), (6, 32, 3, 2), (6, 48, 2, 2)), decoder_expansion=3.0, head="shuffle",
    ),
    "obf_w050": dict(width=0.5),
    "obf_w025": dict(width=0.25),
    "obf_edge": dict(width=0.5, stem_stride=2, decoder_blocks=1),
    "deobf_paper": dict(width=1.0),
    "deobf_wide": dict(width=1.5),
    "deobf_small": dict(width=0.5),
}


def _preset_factory(preset: dict[str, Any]):  # noqa: ANN202
    def factory(**kwargs: Any) -> MobileAutoencoder:
        return MobileAutoencoder(**{**preset, **kwargs})

    return factory


for _name, _preset in PRESETS.items():
    MODELS.register(_name)(_preset_factory(_preset))
MODELS.register("autoencoder")(MobileAutoencoder)


def build_model(name: str = "autoencoder", **kwargs: Any) -> MobileAutoencoder:
    """Build a registered autoencoder by name, with keyword overrides."""
    try:
        return MODELS.create(name, **kwargs)
    except TypeError as exc:
        raise SilhouetteError(f"model {name!r}: bad argument ({exc})") from exc


def build_obfuscator(name: str = "obf_paper", **kwargs: Any) -> MobileAutoencoder:
    """The edge obfuscator (default: the paper's size, ~0.15M params, ~1.4 GMACs at 320x200)."""
    return build_model(name, **kwargs)


def build_deobfuscator(name: str = "deobf_paper", **kwargs: Any) -> MobileAutoencoder:
    """The adversarial reconstructor; same family, configurable independently."""
    return build_model(name, **kwargs)
