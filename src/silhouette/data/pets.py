"""PETS 2009 S2.L1 person ground truth (Milan et al. XML) and its rescaling to prepared frames."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from silhouette.errors import SilhouetteError

# frame number -> (boxes [x1, y1, x2, y2] in the annotation's pixels, identity ids)
Annotations = dict[int, tuple[list[list[float]], list[int]]]

PETS_SIZE = (768, 576)  # (W, H) of the annotated View 001 footage


def parse_pets_xml(path: str | Path) -> Annotations:
    """Read `<frame number><objectlist><object id><box h w xc yc>` into xyxy boxes + ids per frame."""
    path = Path(path)
    if not path.is_file():
        raise SilhouetteError(f"{path}: PETS ground-truth XML not found")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise SilhouetteError(f"{path}: not valid XML ({exc})") from exc
    out: Annotations = {}
    for frame in root.iter("frame"):
        try:
            number = int(frame.attrib["number"])
            boxes: list[list[float]] = []
            ids: list[int] = []
            for obj in frame.iter("object"):
                box = obj.find("box")
                if box is None:
                    raise KeyError("box")
                xc, yc = float(box.attrib["xc"]), float(box.attrib["yc"])
                w, h = float(box.attrib["w"]), float(box.attrib["h"])
                boxes.append([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2])
                ids.append(int(obj.attrib["id"]))
        except (KeyError, ValueError) as exc:
            raise SilhouetteError(f"{path}: malformed <frame>/<object>/<box> entry ({exc})") from exc
        out[number] = (boxes, ids)
    if not out:
        raise SilhouetteError(f"{path}: no <frame> entries; is this a PETS2009 ground-truth file?")
    return out


def scale_boxes(
    boxes: list[list[float]], ids: list[int], src_size: tuple[int, int], dst_size: tuple[int, int], ndigits: int = 3
) -> tuple[list[list[float]], list[int]]:
    """Rescale xyxy boxes from src (W, H) to dst (W, H), clip to the frame, drop empty ones."""
    sx, sy = dst_size[0] / src_size[0], dst_size[1] / src_size[1]
    W, H = dst_size
    out_b: list[list[float]] = []
    out_i: list[int] = []
    for (x1, y1, x2, y2), pid in zip(boxes, ids):
        x1, x2 = min(max(x1 * sx, 0.0), W), min(max(x2 * sx, 0.0), W)
        y1, y2 = min(max(y1 * sy, 0.0), H), min(max(y2 * sy, 0.0), H)
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            continue  # person entirely outside the frame
        out_b.append([round(x1, ndigits), round(y1, ndigits), round(x2, ndigits), round(y2, ndigits)])
        out_i.append(pid)
    return out_b, out_i
