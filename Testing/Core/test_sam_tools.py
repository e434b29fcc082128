"""The SAM click prompt on a real scan: the whole path runs (rendering, embedding, SAM's prompt
encoder and mask decoder, mask back to the faces) with a small random-weight SAM, since the
official checkpoint cannot be downloaded here; what a real SAM's masks are worth is not tested."""

from __future__ import annotations

import numpy as np
import pytest

from ToothMCLCore import fdi
from ToothMCLCore.errors import InvalidInputError


@pytest.fixture(scope="module")
def scan(meshsegnet_dir):
    from ToothMCLCore.interactive.ios_tools import ScanGraph
    from ToothMCLCore.io.public_datasets.meshsegnet import convert_scan

    mesh, truth, _ = convert_scan(meshsegnet_dir / "12_up.vtp", "upper")
    return ScanGraph(mesh.mesh, mesh.normals, "upper"), truth.astype(np.int64)


@pytest.fixture(scope="module")
def prompter():
    from ToothMCLCore.interactive.sam_tools import SAMPrompter

    return SAMPrompter(model_type="tiny", device="cpu", use_cache=False)


def test_a_click_is_a_point_prompt_on_the_pixel_that_sees_it(scan, prompter):
    """The clicked vertex projects onto the occlusal rendering where a pixel sees one of its faces
    (the face <-> pixel map SAM's mask returns through), also on an upper jaw, whose frame is a mirror."""
    graph, _ = scan
    view = prompter.view(graph)
    faces = np.asarray(graph.mesh.faces)
    tops = np.argsort(graph.canonical_points()[:, 2])[-50:]  # cusp tips: nothing above them
    hits = 0
    for vertex in tops:
        row, col = np.rint(view.project(graph.canonical_points()[[vertex]])[0]).astype(int)
        seen = view.pixel_face[row - 1:row + 2, col - 1:col + 2].ravel()
        hits += bool(np.isin(seen, np.flatnonzero((faces == vertex).any(axis=1))).any())
    assert hits >= 45
    assert view.image.mean() > 20  # the shading faces the camera: the winding was kept outward


def test_sam_adds_a_region_at_the_click_only_on_unlabelled_surface_and_records_the_prompt(scan, prompter):
    """A tooth erased from the labels: the SAM prompt at its crown labels a region connected to the
    click among gingiva vertices with a free number of the jaw; teeth keep their labels; the
    interaction says it was SAM and with which score."""
    from ToothMCLCore.interactive.sam_tools import sam_add_tooth

    graph, truth = scan
    labels = np.where(truth == 16, 0, truth)
    crown = np.flatnonzero(truth == 16)
    click = graph.vertices[crown[np.argmax(graph.canonical_points()[crown, 2])]]
    out, interaction = sam_add_tooth(graph, labels, click, prompter)
    changed = out != labels
    assert changed.any() and np.all(labels[changed] == 0)
    assert out[graph.vertex_at(click)] == interaction.label and interaction.label in fdi.teeth_of_jaw("upper")
    assert interaction.label not in set(np.unique(labels))
    assert interaction.tool == "sam" and interaction.params["sam_model"] == "tiny"
    assert np.isfinite(interaction.params["sam_score"])
    assert interaction.changed == int(changed.sum())


def test_without_sam_or_on_a_tooth_the_prompt_is_refused(scan, prompter):
    from ToothMCLCore.interactive.sam_tools import sam_add_tooth

    graph, truth = scan
    on_tooth = graph.vertices[np.flatnonzero(truth == 11)[0]]
    with pytest.raises(InvalidInputError, match="SAM checkpoint"):
        sam_add_tooth(graph, truth, on_tooth, None)
    with pytest.raises(InvalidInputError, match="not on gingiva"):
        sam_add_tooth(graph, truth, on_tooth, prompter)
