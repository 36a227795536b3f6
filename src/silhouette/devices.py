"""Which torch device a command runs on: one reading of `auto`, `cpu`, `cuda` and `cuda:N` for every command."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from silhouette.errors import SilhouetteError

if TYPE_CHECKING:
    import torch


def resolve_device(name: str | None, local_rank: int = 0, option: str = "--device") -> torch.device:
    """'auto'/None -> the local CUDA device when present, else CPU; 'cpu', 'cuda' and 'cuda:N' are checked.

    An index-less 'cuda' becomes cuda:<local_rank>, since torch.cuda.set_device needs an index. `option` names the
    setting in error messages (--device, train.device).
    """
    import torch  # here, so that importing this module costs no torch

    text = (name or "auto").strip().lower()
    if text == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    if text == "cpu":
        return torch.device("cpu")
    if not re.fullmatch(r"cuda(:\d+)?", text):
        raise SilhouetteError(f"{option} {name!r}: choose auto, cpu or cuda[:N]")
    if not torch.cuda.is_available():
        raise SilhouetteError(f"{option} {text}: CUDA is not available here (torch {torch.__version__}); use auto or cpu")
    dev = torch.device(text if ":" in text else f"cuda:{local_rank}")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise SilhouetteError(f"{option} {text}: only {torch.cuda.device_count()} CUDA device(s) here")
    return dev
