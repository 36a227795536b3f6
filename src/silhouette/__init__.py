"""silhouette: privacy-preserving person detection with a learned on-camera obfuscator.

The public Python API (loaded lazily, so `import silhouette` stays light):

- `load_obfuscator(path=None)`: a checkpoint's obfuscator in eval mode (None: the shipped default);
- `create_detector(spec)`: a person detector from the zoo (`silhouette detectors` lists them);
- `Detections`: one frame's boxes, scores and labels, with `.persons(min_score)`;
- `read_image(path)` / `write_image(path, t)`: files to and from the one image convention (3xHxW float RGB in [0, 1]).
"""

from silhouette.lazy import lazy_exports

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_exports(__name__, globals(), {
    "models.checkpoint": "load_obfuscator",
    "detectors.registry": "create_detector",
    "detectors.base": "Detections",
    "imaging": "read_image write_image",
})
