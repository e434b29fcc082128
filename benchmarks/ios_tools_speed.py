"""How long each click tool takes on a dense real scan (the issue's budget: 2 s per click on 2 cores).

    python benchmarks/ios_tools_speed.py [--data ../shared/data/meshsegnet] [--scan 12_up]

A real MeshSegNet jaw (about 5,000 vertices) is midpoint-subdivided (trimesh) to about 85k and
340k vertices, as a scanner's export would be; the model's tooth probabilities come from the
default IOS model on that mesh. Then, with the truth carried to the new vertices, each tool runs
on a damage made from the truth: add (a tooth erased, one click), split (two neighbours merged,
two clicks), refine (a 1.2 mm rim eroded, one positive click), brush (2 mm). Printed: the
one-off cost of building the click graph when a scan is opened, then each tool's seconds and
the ratio to the budget. A benchmark, not a test.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

BUDGET_S = 2.0
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "meshsegnet"


def main(argv=None) -> int:
    import trimesh
    from scipy.spatial import cKDTree

    from ToothMCLCore.inference.ios import IOSPredictor
    from ToothMCLCore.interactive import ios_tools as tools
    from ToothMCLCore.io.mesh_clean import clean_mesh
    from ToothMCLCore.io.public_datasets.meshsegnet import JAWS, convert_scan
    from ToothMCLCore.types import SurfaceMesh

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--scan", default="12_up")
    args = parser.parse_args(argv)
    jaw = JAWS[args.scan.split("_")[1]]
    scan, truth, _ = convert_scan(args.data / f"{args.scan}.vtp", jaw)
    predictor = IOSPredictor(device="cpu")
    print(f"{'vertices':>9} {'graph':>7} {'add':>7} {'split':>7} {'refine':>7} {'brush':>7}   (seconds; budget {BUDGET_S} s)")
    for levels in (0, 2, 3):
        v, f = scan.mesh.vertices_ras, scan.mesh.faces
        for _ in range(levels):
            v, f = trimesh.remesh.subdivide(v, f)
        dense = clean_mesh(np.asarray(v), np.asarray(f))
        mesh = SurfaceMesh(dense.mesh.vertices_ras, dense.mesh.faces, jaw=jaw)
        labels = truth[cKDTree(scan.mesh.vertices_ras).query(mesh.vertices_ras)[1]].astype(np.int64)
        probability = predictor.predict(dense, jaw).tooth_probability[dense.clean_to_file]
        start = time.perf_counter()
        graph = tools.ScanGraph(mesh, dense.normals, jaw, tooth_probability=probability)
        seconds = {"graph": time.perf_counter() - start}
        seconds.update(time_tools(graph, labels))
        print(f"{len(mesh.vertices_ras):>9} " + " ".join(f"{seconds[k]:>7.2f}" for k in
                                                          ("graph", "add", "split", "refine", "brush")))
    return 0


def centre(graph, mask: np.ndarray) -> np.ndarray:
    """The vertex of ``mask`` nearest its centroid (a click on the middle of a crown), RAS."""
    index = np.flatnonzero(mask)
    points = graph.vertices[index]
    return points[np.argmin(np.linalg.norm(points - points.mean(axis=0), axis=1))]


def time_tools(graph, labels: np.ndarray) -> dict[str, float]:
    """Seconds of each tool on a damage made from ``labels`` (module docstring)."""
    from ToothMCLCore import fdi
    from ToothMCLCore.interactive import ios_tools as tools

    teeth = sorted(fdi.present_teeth(np.unique(labels)), key=lambda t: fdi.tooth(t).arch_index)
    a, b = teeth[len(teeth) // 2 - 1], teeth[len(teeth) // 2]
    mine = labels == a
    click_a, click_b = centre(graph, mine), centre(graph, labels == b)
    rim = mine & np.isfinite(graph.geodesic(np.flatnonzero(tools._ring(graph, ~mine) & mine), 1.2))
    runs = {
        "add": lambda: tools.add_tooth(graph, np.where(mine, 0, labels), click_a),
        "split": lambda: tools.split_tooth(graph, np.where(labels == b, a, labels), click_a, click_b),
        "refine": lambda: tools.refine_tooth(graph, np.where(rim, 0, labels), a,
                                             positive=[graph.vertices[np.flatnonzero(rim)[0]]]),
        "brush": lambda: tools.brush(graph, labels, click_a, 0, 2.0),
    }
    seconds = {}
    for name, run in runs.items():
        start = time.perf_counter()
        run()
        seconds[name] = time.perf_counter() - start
    return seconds


if __name__ == "__main__":
    raise SystemExit(main())
