"""SOFTooth input side: a decimated scan with 24-d face features and its occlusal view.

    inp = prepare_softooth_input(read_mesh(path).mesh, jaw="lower")   # ~10,000 faces
    view = render_occlusal(inp.vertices_canonical, inp.faces)          # 1024 x 1024, face <-> pixel
    sam = SAMFeatureExtractor("sam_vit_b_01ec64.pth", "vit_b")        # ToothMCLCore.models.sam_features
    face_sam, visible = sam(view)                                      # (M, 256), (M,)
"""

from __future__ import annotations

from .mesh_input import (
    N_FEATURES,
    TARGET_FACES,
    DecimatedScan,
    SOFToothInput,
    build_input,
    decimate_scan,
    face_features,
    prepare_softooth_input,
)
from .occlusal import IMAGE_SIZE, OcclusalView, cast_rays_down, render_occlusal

__all__ = [
    "IMAGE_SIZE", "N_FEATURES", "TARGET_FACES", "DecimatedScan", "OcclusalView", "SOFToothInput",
    "build_input", "cast_rays_down", "decimate_scan", "face_features", "prepare_softooth_input",
    "render_occlusal",
]
