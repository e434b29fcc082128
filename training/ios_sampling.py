"""Per-step point sets of a training jaw: random resolution, then sampling as inference samples.

A real scan reaches ToothMCL at any resolution: the MeshSegNet training scans are decimated to
about 5,000 vertices, a scanner's export has 100,000-300,000. Inference
(:class:`ToothMCLCore.inference.ios.IOSPredictor`) feeds the network every vertex of a scan with
at most ``n_points`` vertices and a farthest-point sample of ``n_points`` of a larger one. So
that both work, every training step draws one of three versions of the same scan
(:func:`resample_jaw`, probabilities :data:`RESOLUTION_CHOICES`):

- ``native``: the scan as stored;
- ``decimated``: quadric decimation (:func:`ToothMCLCore.io.mesh.decimate`, fast-simplification)
  to 45-90 % of its faces, every vertex labelled as its nearest original vertex;
- ``subdivided``: one or two midpoint subdivisions (``trimesh.remesh.subdivide``; 4x or 16x the
  faces, as dense as a scanner's export), the new vertices on the original surface.

and then samples it exactly as inference does: all vertices when there are at most
``n_points``, else farthest point sampling from a random start (``fpsample``). A new midpoint
takes the label its two ends share; between gingiva and a tooth it joins the tooth, the rule
by which the per-face labels became per-vertex labels; between two teeth, the lower class.
Normals are recomputed on the new mesh (area-weighted).

All draws come from the ``rng`` passed in (:func:`training.engine.sample_rng`), so a run is
reproducible and does not depend on the number of processes.
"""

from __future__ import annotations

import numpy as np

#: (version, probability) of :func:`resample_jaw`
RESOLUTION_CHOICES = (("native", 1 / 3), ("decimated", 1 / 3), ("subdivided", 1 / 3))
#: fraction of the faces a decimated version keeps
DECIMATE_KEEP = (0.45, 0.9)
#: favours the tooth over gingiva when a midpoint's ends disagree (see the module docstring)
_TOOTH_PREFERENCE = 1e-3


def subdivide(vertices: np.ndarray, faces: np.ndarray, classes: np.ndarray, levels: int):
    """Midpoint-subdivide ``levels`` times: (vertices (M, 3), faces (F, 3), classes (M,)).

    The first ``len(vertices)`` output vertices are the input's.
    """
    import trimesh

    n_classes = int(classes.max()) + 1 if len(classes) else 1
    votes = np.eye(n_classes)[classes]
    votes[:, 1:] += _TOOTH_PREFERENCE
    v, f = np.asarray(vertices, np.float64), np.asarray(faces, np.int64)
    for _ in range(levels):
        v, f, attrs = trimesh.remesh.subdivide(v, f, vertex_attributes={"votes": votes})
        votes = attrs["votes"]
    return v, f, np.argmax(votes, axis=1).astype(classes.dtype)


def resample_jaw(vertices: np.ndarray, faces: np.ndarray, classes: np.ndarray, n_points: int,
                 rng: np.random.Generator, choices=RESOLUTION_CHOICES):
    """One training version of a jaw in its canonical frame (see the module docstring).

    Args:
        vertices: (N, 3) float canonical coordinates in mm. faces: (F, 3) int.
        classes: (N,) int class index per vertex (``ios`` scheme, 0 = gingiva).
        n_points: the model card's point count.
        choices: ``(version, probability)`` pairs to draw from.

    Returns:
        ``(points (n, 3) float64, normals (n, 3) float64, classes (n,), version)`` with
        ``n = min(n_points, vertices of the version drawn)``.
    """
    from ToothMCLCore.io.mesh import decimate, vertex_normals
    from ToothMCLCore.types import SurfaceMesh

    names = [c[0] for c in choices]
    p = np.asarray([c[1] for c in choices], np.float64)
    version = names[int(rng.choice(len(names), p=p / p.sum()))]
    v, f, cl = np.asarray(vertices, np.float64), np.asarray(faces, np.int64), np.asarray(classes)
    if version == "decimated":
        keep = rng.uniform(*DECIMATE_KEEP)
        mesh, _ = decimate(SurfaceMesh(v, f, labels=cl.astype(np.int32)), max(100, int(keep * len(f))))
        v, f, cl = mesh.vertices_ras, mesh.faces, np.asarray(mesh.labels).astype(classes.dtype)
    elif version == "subdivided":
        v, f, cl = subdivide(v, f, cl, levels=int(rng.integers(1, 3)))
    normals = vertex_normals(SurfaceMesh(v, f))
    idx = sample_like_inference(v, n_points, rng)
    return v[idx], normals[idx], cl[idx], version


def sample_like_inference(points: np.ndarray, n_points: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the points inference would feed the network: all of them (shuffled) up to
    ``n_points``, else a farthest point sample of ``n_points`` from a random start
    (:func:`ToothMCLCore.preprocessing.ios.sample_points`, seeded from ``rng``)."""
    from ToothMCLCore.preprocessing.ios import sample_points

    return sample_points(points, n_points, seed=int(rng.integers(2**31)))
