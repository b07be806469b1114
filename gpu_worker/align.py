"""Five-point face alignment: a similarity transform from detected landmarks to an embedder's template."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from shared.types import check_array

# insightface's ArcFace template for 112x112 chips (eyes, nose tip, mouth corners; image-left first).
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


@dataclass(frozen=True)
class AlignTemplate:
    """Where the five landmarks land in a ``size`` x ``size`` chip."""

    name: str
    size: int
    points: np.ndarray

    def __post_init__(self) -> None:
        check_array("template points", self.points, (5, 2))
        if self.size < 16:
            raise ValueError(f"template size must be >= 16, got {self.size}")

    def scaled(self, name: str, size: int, zoom: float = 1.0) -> "AlignTemplate":
        """The same layout in a chip of another size; ``zoom`` < 1 leaves more context around the face."""
        centre = self.size / 2.0
        pts = (self.points - centre) * zoom + centre
        return AlignTemplate(name, size, (pts * (size / self.size)).astype(np.float32))


TEMPLATES: dict[str, AlignTemplate] = {"arcface_112": AlignTemplate("arcface_112", 112, ARCFACE_112)}


def register_template(template: AlignTemplate) -> AlignTemplate:
    TEMPLATES[template.name] = template
    return template


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src to dst (Umeyama), 2x3."""
    check_array("src", src, (None, 2))
    check_array("dst", dst, (src.shape[0], 2))
    src = src.astype(np.float64)
    dst = dst.astype(np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s_c, d_c = src - mu_s, dst - mu_d
    var_s = (s_c**2).sum() / len(src)
    cov = d_c.T @ s_c / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    rot = u @ np.diag(d) @ vt
    scale = (sig * d).sum() / var_s if var_s > 0 else 1.0
    t = mu_d - scale * rot @ mu_s
    return np.hstack([scale * rot, t[:, None]]).astype(np.float32)


def align_faces(image: np.ndarray, landmarks: np.ndarray, template: AlignTemplate) -> np.ndarray:
    """Warp every face of ``image`` (H, W, 3 uint8) given (N, 5, 2) landmarks into (N, size, size, 3) chips."""
    check_array("image", image, (None, None, 3), np.uint8)
    check_array("landmarks", landmarks, (None, 5, 2))
    n = landmarks.shape[0]
    chips = np.empty((n, template.size, template.size, 3), np.uint8)
    for i in range(n):
        m = similarity_transform(landmarks[i], template.points)
        chips[i] = cv2.warpAffine(image, m, (template.size, template.size), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
    return chips
