"""silhouette.models: the obfuscator/deobfuscator autoencoders, checkpoints and cost counting.

Names are loaded lazily so that registering the CLI's commands imports no torch.
"""

from __future__ import annotations

from silhouette.lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, globals(), {
    "autoencoder": "MODELS MobileAutoencoder build_deobfuscator build_model build_obfuscator",
    "checkpoint": "export_checkpoint load_deobfuscator load_obfuscator read_checkpoint save_checkpoint",
    "cost": "count_macs count_params",
})
