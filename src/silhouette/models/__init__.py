"""silhouette.models: the obfuscator/deobfuscator autoencoders, checkpoints and cost counting."""

from silhouette.models.autoencoder import MODELS, MobileAutoencoder, build_deobfuscator, build_model, build_obfuscator
from silhouette.models.checkpoint import (
    export_checkpoint,
    load_deobfuscator,
    load_obfuscator,
    read_checkpoint,
    save_checkpoint,
)
from silhouette.models.cost import count_macs, count_params

__all__ = [
    "MODELS",
    "MobileAutoencoder",
    "build_deobfuscator",
    "build_model",
    "build_obfuscator",
    "count_macs",
    "count_params",
    "export_checkpoint",
    "load_deobfuscator",
    "load_obfuscator",
    "read_checkpoint",
    "save_checkpoint",
]
