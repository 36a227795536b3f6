"""silhouette.models: the obfuscator/deobfuscator autoencoders, checkpoints and cost counting.

Names are loaded lazily so that registering the CLI's commands imports no torch.
"""

from __future__ import annotations

from silhouette.lazy import lazy_exports

_EXPORTS = {
    "MODELS": "autoencoder",
    "MobileAutoencoder": "autoencoder",
    "build_deobfuscator": "autoencoder",
    "build_model": "autoencoder",
    "build_obfuscator": "autoencoder",
    "export_checkpoint": "checkpoint",
    "load_deobfuscator": "checkpoint",
    "load_obfuscator": "checkpoint",
    "read_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "count_macs": "cost",
    "count_params": "cost",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
