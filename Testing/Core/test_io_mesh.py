"""Intraoral-scan meshes: formats, file order after cleaning, units, jaw, size limits, bad files."""

from __future__ import annotations

import numpy as np
import pytest

from ToothMCLCore import fdi
from ToothMCLCore.errors import InvalidInputError, OutputError, ResourceLimitError
from ToothMCLCore.io import mesh as mesh_io
from ToothMCLCore.io import vtkfile
from ToothMCLCore.io.mesh import (
    decimate,
    detect_jaw,
    jaw_from_file_name,
    looks_like_both_jaws,
    read_mesh,
    write_mesh,
    write_teeth_stls,
)
from ToothMCLCore.synthetic import make_ios_phantom
from ToothMCLCore.types import SurfaceMesh


@pytest.fixture(scope="module")
def upper() -> SurfaceMesh:
    """Synthetic upper jaw (about 20 k vertices), crowns pointing to -z, FDI labels."""
    return make_ios_phantom(0, "upper", resolution_mm=0.8)


@pytest.fixture(scope="module")
def lower() -> SurfaceMesh:
    """Synthetic lower jaw of the same patient, crowns pointing to +z."""
    return make_ios_phantom(0, "lower", resolution_mm=0.8)


def _sphere(radius=30.0) -> SurfaceMesh:
    import trimesh

    s = trimesh.creation.icosphere(subdivisions=2, radius=radius)
    return SurfaceMesh(np.asarray(s.vertices, float), np.asarray(s.faces, np.int64))


def _to_vtk(mesh: SurfaceMesh, labels=None):
    """vtkPolyData of a mesh (vtk is imported here, in the test only)."""
    import vtk
    from vtk.util.numpy_support import numpy_to_vtk, numpy_to_vtkIdTypeArray

    pd = vtk.vtkPolyData()
    pts = vtk.vtkPoints()
    pts.SetData(numpy_to_vtk(np.ascontiguousarray(mesh.vertices_ras), deep=True))
    pd.SetPoints(pts)
    cells = vtk.vtkCellArray()
    offsets = numpy_to_vtkIdTypeArray(np.arange(0, 3 * len(mesh.faces) + 1, 3, dtype=np.int64), deep=True)
    conn = numpy_to_vtkIdTypeArray(np.ascontiguousarray(mesh.faces.ravel(), dtype=np.int64), deep=True)
    cells.SetData(offsets, conn)
    pd.SetPolys(cells)
    if labels is not None:
        arr = numpy_to_vtk(np.asarray(labels, np.int32), deep=True)
        arr.SetName("FDI")
        pd.GetPointData().AddArray(arr)
    return pd


# ------------------------------------------------------------------------------------------------
# Formats
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".ply", ".vtp", ".obj", ".stl"])
def test_every_format_round_trips_geometry(tmp_path, upper, suffix):
    """A written scan reads back with the same triangles, vertices in the order written."""
    path = tmp_path / f"scan{suffix}"
    write_mesh(path, upper)
    result = read_mesh(path)
    assert result.mesh.n_vertices == upper.n_vertices
    assert np.allclose(result.mesh.vertices_ras[result.mesh.faces], upper.vertices_ras[upper.faces], atol=1e-4)
    if suffix != ".stl":  # STL stores corners, not shared vertices
        assert np.allclose(result.mesh.vertices_ras, upper.vertices_ras, atol=1e-4)
    assert np.allclose(np.linalg.norm(result.normals, axis=1), 1.0)


@pytest.mark.parametrize("suffix", [".ply", ".vtp"])
def test_fdi_labels_round_trip(tmp_path, upper, suffix):
    """PLY and VTP keep the per-vertex FDI array, vertex by vertex."""
    path = tmp_path / f"labelled{suffix}"
    write_mesh(path, upper, vertex_labels=upper.labels)
    assert np.array_equal(read_mesh(path).mesh.labels, upper.labels)


def test_ascii_ply_reads_with_its_normals(tmp_path, upper):
    """An ASCII PLY (as many scanners and MeshLab save) reads like a binary one, normals included."""
    import trimesh

    tm = trimesh.Trimesh(upper.vertices_ras, upper.faces, process=False)
    path = tmp_path / "ascii.ply"
    path.write_bytes(trimesh.exchange.ply.export_ply(tm, encoding="ascii", vertex_normal=True))
    assert path.read_bytes().startswith(b"ply\nformat ascii")
    result = read_mesh(path)
    assert result.mesh.n_vertices == upper.n_vertices
    assert np.allclose(result.mesh.vertices_ras, upper.vertices_ras, atol=1e-4)
    assert np.allclose(result.normals, tm.vertex_normals, atol=1e-3)


def test_ply_colours_follow_the_fdi_table(tmp_path, upper):
    """A viewer shows each tooth in its FDI colour and the gingiva pink."""
    import trimesh

    path = tmp_path / "coloured.ply"
    write_mesh(path, upper, vertex_labels=upper.labels)
    rgb = np.asarray(trimesh.load(path, process=False).visual.vertex_colors)[:, :3]
    tooth = int(np.nonzero(upper.labels == 16)[0][0])
    assert tuple(rgb[tooth]) == tuple(np.round(np.array(fdi.tooth(16).color) * 255).astype(int))
    assert tuple(rgb[upper.labels == 0][0]) == tuple(np.round(np.array(mesh_io.GINGIVA_COLOR) * 255).astype(int))


def test_vtk_reads_our_vtp_with_fdi_and_rgb(tmp_path, upper):
    """Slicer's reader (vtkXMLPolyDataReader) sees our points, triangles, FDI and RGB arrays."""
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    path = tmp_path / "for_slicer.vtp"
    write_mesh(path, upper, vertex_labels=upper.labels)
    reader = vtk.vtkXMLPolyDataReader()
    reader.SetFileName(str(path))
    reader.Update()
    pd = reader.GetOutput()
    assert pd.GetNumberOfPoints() == upper.n_vertices and pd.GetNumberOfPolys() == len(upper.faces)
    assert np.array_equal(vtk_to_numpy(pd.GetPointData().GetArray("FDI")), upper.labels)
    assert np.array_equal(vtk_to_numpy(pd.GetPointData().GetArray("RGB")), mesh_io.label_colors(upper.labels))
    assert np.allclose(vtk_to_numpy(pd.GetPoints().GetData()), upper.vertices_ras)


VTP_MODES = [("Ascii", False, False), ("Binary", False, False), ("Binary", True, False),
             ("Appended", False, False), ("Appended", True, False), ("Appended", False, True),
             ("Appended", True, True)]



def _write_vtp(polydata, path, mode: str, zlib: bool, base64: bool):
    """Write ``polydata`` with vtk's own XML writer in data mode ``mode`` (Ascii, Binary, Appended)."""
    import vtk

    writer = vtk.vtkXMLPolyDataWriter()
    writer.SetInputData(polydata)
    writer.SetFileName(str(path))
    getattr(writer, f"SetDataModeTo{mode}")()
    writer.SetCompressorTypeToZLib() if zlib else writer.SetCompressorTypeToNone()
    writer.SetEncodeAppendedData(base64)
    assert writer.Write() == 1
    return path


@pytest.mark.parametrize("mode,zlib,base64", VTP_MODES)
def test_reads_vtp_written_by_vtk(tmp_path, upper, mode, zlib, base64):
    """VTP files of every vtk encoding (ascii, base64, appended raw/base64, zlib) read identically."""
    result = read_mesh(_write_vtp(_to_vtk(upper, upper.labels), tmp_path / "vtk.vtp", mode, zlib, base64))
    assert np.allclose(result.mesh.vertices_ras, upper.vertices_ras)
    assert np.array_equal(result.mesh.faces, upper.faces)
    assert np.array_equal(result.mesh.labels, upper.labels)


@pytest.mark.parametrize("version,file_type", [(42, "ASCII"), (42, "Binary"), (51, "ASCII"), (51, "Binary")])
def test_reads_legacy_vtk_written_by_vtk(tmp_path, upper, version, file_type):
    """Legacy .vtk POLYDATA (old and 5.1 layouts, ASCII and binary, with cell data and array
    metadata next to it) reads with its FDI array."""
    import vtk
    from vtk.util.numpy_support import numpy_to_vtk

    pd = _to_vtk(upper)
    extra = numpy_to_vtk(np.ones((upper.n_vertices, 2)), deep=True)
    extra.SetName("Curvature")
    extra.SetComponentName(0, "k1")  # written as a METADATA block before the FDI array
    pd.GetPointData().AddArray(extra)
    fdi_array = numpy_to_vtk(upper.labels, deep=True)
    fdi_array.SetName("FDI")
    pd.GetPointData().AddArray(fdi_array)
    cell = numpy_to_vtk(np.arange(len(upper.faces), dtype=np.int32), deep=True)
    cell.SetName("face_id")
    pd.GetCellData().SetScalars(cell)
    writer = vtk.vtkPolyDataWriter()
    writer.SetInputData(pd)
    writer.SetFileName(str(tmp_path / "legacy.vtk"))
    writer.SetFileVersion(version)
    getattr(writer, f"SetFileTypeTo{file_type}")()
    assert writer.Write() == 1
    result = read_mesh(tmp_path / "legacy.vtk")
    assert np.allclose(result.mesh.vertices_ras, upper.vertices_ras, atol=1e-4)
    assert np.array_equal(result.mesh.faces, upper.faces)
    assert np.array_equal(result.mesh.labels, upper.labels)
    assert np.array_equal(result.face_data["face_id"], np.arange(len(upper.faces)))


def _mixed_cells_polydata():
    """A vtkPolyData with a vertex cell, a line, two triangles, a quad and a 5-point strip, whose
    float cell array ``Label`` numbers the cells 10, 11, ... in VTK's cell order (verts, lines,
    polys, strips)."""
    import vtk
    from vtk.util.numpy_support import numpy_to_vtk

    pd = vtk.vtkPolyData()
    pts = vtk.vtkPoints()
    for p in [(0, 0, 0), (10, 0, 0), (10, 10, 0), (0, 10, 0), (20, 0, 1), (20, 10, 1), (30, 0, 2), (30, 10, 2),
              (40, 0, 3)]:
        pts.InsertNextPoint(*p)
    pd.SetPoints(pts)
    verts, lines, polys, strips = vtk.vtkCellArray(), vtk.vtkCellArray(), vtk.vtkCellArray(), vtk.vtkCellArray()
    verts.InsertNextCell(1, [8])
    lines.InsertNextCell(2, [0, 8])
    polys.InsertNextCell(3, [0, 1, 2])
    polys.InsertNextCell(4, [1, 4, 5, 2])
    polys.InsertNextCell(3, [0, 2, 3])
    strips.InsertNextCell(5, [4, 6, 5, 7, 8])
    pd.SetVerts(verts)
    pd.SetLines(lines)
    pd.SetPolys(polys)
    pd.SetStrips(strips)
    label = numpy_to_vtk(np.arange(10, 16, dtype=np.float32), deep=True)
    label.SetName("Label")
    pd.GetCellData().AddArray(label)
    return pd


#: the Label of each triangle the reader cuts from _mixed_cells_polydata: the two triangles (12, 14),
#: the quad's two halves (13), the strip's three (15); as a multiset, so the triangle order is free
MIXED_TRIANGLE_LABELS = [12, 13, 13, 14, 15, 15, 15]


@pytest.mark.parametrize("mode,zlib,base64", VTP_MODES)
def test_vtp_cell_data_follows_the_triangles_cut_from_each_cell(tmp_path, mode, zlib, base64):
    """A per-cell Label (MeshSegNet's labels) reaches every triangle cut from its polygon or strip,
    past vertex and line cells, in every encoding vtk writes."""
    result = read_mesh(_write_vtp(_mixed_cells_polydata(), tmp_path / "cells.vtp", mode, zlib, base64))
    labels = result.face_data["Label"]
    assert sorted(labels.astype(int).tolist()) == MIXED_TRIANGLE_LABELS
    quad = result.mesh.faces[labels == 13]
    assert sorted(np.unique(quad).tolist()) == [1, 2, 4, 5]


@pytest.mark.parametrize("file_type", ["ASCII", "Binary"])
def test_legacy_vtk_cell_data_follows_the_triangles_cut_from_each_cell(tmp_path, file_type):
    """The legacy reader carries cell data to the triangles as the XML reader does."""
    import vtk

    writer = vtk.vtkPolyDataWriter()
    writer.SetInputData(_mixed_cells_polydata())
    writer.SetFileName(str(tmp_path / "cells.vtk"))
    getattr(writer, f"SetFileTypeTo{file_type}")()
    assert writer.Write() == 1
    labels = read_mesh(tmp_path / "cells.vtk").face_data["Label"]
    assert sorted(labels.astype(int).tolist()) == MIXED_TRIANGLE_LABELS


def test_cleaning_drops_the_cell_data_of_the_faces_it_drops():
    """A degenerate face and its cell value go together; the others keep their values in order."""
    vertices = np.array([[0, 0, 0], [10, 0, 0], [0, 10, 0], [10, 10, 0], [20, 0, 0]], float)
    faces = np.array([[0, 1, 2], [1, 1, 3], [1, 3, 2], [0, 1, 4]])  # face 1 repeats a corner, face 3 is flat
    result = mesh_io.clean_mesh(vertices, faces, face_data={"Label": np.array([5, 6, 7, 8])})
    assert result.face_data["Label"].tolist() == [5, 7]


def test_vtk_polygons_and_strips_become_triangles():
    """A quad becomes 2 triangles and a 5-point strip 3 triangles, all on the original points, each
    triangle with the index of the cell it was cut from."""
    quad, cells = vtkfile._triangulate(np.array([0, 1, 2, 3]), np.array([4]))
    assert quad.tolist() == [[0, 1, 2], [0, 2, 3]] and cells.tolist() == [0, 0]
    strip, cells = vtkfile._triangulate(np.array([0, 1, 2, 3, 4]), np.array([5]), strips=True)
    assert strip.tolist() == [[0, 1, 2], [2, 1, 3], [2, 3, 4]] and cells.tolist() == [0, 0, 0]


def test_obj_with_materials_and_normals_keeps_file_order(tmp_path):
    """An OBJ with vt/vn indices, materials and quads keeps every vertex at its file index."""
    rng = np.random.default_rng(0)
    verts = rng.uniform(0, 50, size=(1200, 3))
    lines = ["# scan", "mtllib a.mtl"] + [f"v {x} {y} {z}" for x, y, z in verts] + ["vt 0 0", "vn 0 0 1"]
    quads = rng.permutation(1200).reshape(300, 4) + 1  # every vertex used, in shuffled order
    lines += ["usemtl a"] + [f"f {a}/1/1 {b}/1/1 {c}/1/1 {d}/1/1" for a, b, c, d in quads]
    (tmp_path / "q.obj").write_text("\n".join(lines) + "\n")
    result = read_mesh(tmp_path / "q.obj")
    assert result.n_file_vertices == 1200
    assert np.allclose(result.to_file_order(result.mesh.vertices_ras), verts)


# ------------------------------------------------------------------------------------------------
# Cleaning keeps file order
# ------------------------------------------------------------------------------------------------

def _messy_grid(tmp_path):
    """OBJ of a 40 x 30 mm grid (1 mm apart) plus: a duplicate of vertex 5, an unreferenced
    vertex near vertex 7, an unreferenced NaN vertex, and a degenerate face."""
    xs, ys = np.meshgrid(np.arange(41.0), np.arange(31.0), indexing="ij")
    verts = np.c_[xs.ravel(), ys.ravel(), np.zeros(xs.size)]
    idx = np.arange(xs.size).reshape(41, 31)
    faces = np.r_[np.c_[idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel()],
                  np.c_[idx[:-1, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()]]
    n = len(verts)
    dup, stray, nan = n, n + 1, n + 2
    verts = np.r_[verts, verts[5:6], verts[7:8] + [0.1, 0.1, 0.0], [[np.nan, 0.0, 0.0]]]
    faces = np.r_[faces, [[dup, 6, 37]], [[0, 0, 1]]]  # a face on the duplicate, a degenerate face
    text = [f"v {x} {y} {z}" for x, y, z in verts] + [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces]
    path = tmp_path / "messy_upper.obj"
    path.write_text("\n".join(text) + "\n")
    return path, verts, dup, stray, nan


def test_cleaning_maps_labels_back_to_every_file_vertex(tmp_path):
    """Labels computed on the cleaned mesh, expanded back, match what each file vertex should get."""
    path, verts, dup, stray, nan = _messy_grid(tmp_path)
    result = read_mesh(path)
    assert result.n_file_vertices == len(verts)
    assert result.mesh.n_vertices == len(verts) - 3  # duplicate merged, stray and NaN dropped
    assert len(result.mesh.faces) == 2 * 40 * 30 + 1  # degenerate face dropped
    clean_labels = np.where(result.mesh.vertices_ras[:, 0] < 20, 11, 0)  # "tooth" at x < 20
    file_labels = result.to_file_order(clean_labels)
    finite = np.isfinite(verts).all(axis=1)
    assert np.array_equal(file_labels[finite], np.where(verts[finite, 0] < 20, 11, 0))
    assert file_labels[nan] == 0  # non-finite: the fill value (gingiva)
    assert result.file_to_clean[dup] == result.file_to_clean[5]
    assert result.file_to_clean[stray] == result.file_to_clean[7]  # nearest kept vertex
    assert any("duplicate" in note for note in result.notes)


def test_nan_vertex_used_by_a_face_is_refused(tmp_path):
    """A face on a NaN vertex cannot be repaired: the error names the vertex."""
    path = tmp_path / "nan.obj"
    path.write_text("v 0 0 0\nv nan 0 0\nv 0 1 0\nf 1 2 3\n")
    with pytest.raises(InvalidInputError, match=r"NaN or infinite.*\[1\]"):
        read_mesh(path)


# ------------------------------------------------------------------------------------------------
# Units, jaw, both jaws, size
# ------------------------------------------------------------------------------------------------

def test_metres_are_refused_with_advice_and_rescaled_on_request(tmp_path, upper):
    """A scan saved in metres is refused with '--units m'; units='m' reads it in mm."""
    path = tmp_path / "metres.stl"
    write_mesh(path, SurfaceMesh(upper.vertices_ras / 1000.0, upper.faces))
    with pytest.raises(InvalidInputError, match="metres: pass --units m"):
        read_mesh(path)
    result = read_mesh(path, units="m")
    assert np.allclose(np.ptp(result.mesh.vertices_ras, axis=0), np.ptp(upper.vertices_ras, axis=0), atol=1e-3)


def test_microns_are_refused_with_advice(tmp_path, upper):
    """A scan in microns is refused with '--units um'."""
    path = tmp_path / "microns.ply"
    write_mesh(path, SurfaceMesh(upper.vertices_ras * 1000.0, upper.faces))
    with pytest.raises(InvalidInputError, match="microns: pass --units um"):
        read_mesh(path)


@pytest.mark.parametrize("name,jaw", [
    ("0EAKT1CU_upper.obj", "upper"), ("0EAKT1CU_lower.obj", "lower"), ("patient_U.stl", "upper"),
    ("patient-l.ply", "lower"), ("Maxilla scan.stl", "upper"), ("MandibularArch.vtp", "lower"),
    ("UpperJaw_2024.obj", "upper"), ("scan.obj", None), ("upper_and_lower.obj", None),
])
def test_jaw_from_file_name(name, jaw):
    """Teeth3DS-style and common names give the jaw; none or both give no answer."""
    assert jaw_from_file_name(name) == jaw


def test_jaw_from_geometry(upper, lower):
    """Crowns pointing down (-z) make an upper jaw, pointing up a lower jaw; the rule is reported."""
    assert detect_jaw(None, upper) == ("upper", "geometry")
    assert detect_jaw(None, lower) == ("lower", "geometry")
    flipped = SurfaceMesh(upper.vertices_ras * [1, 1, -1], upper.faces[:, ::-1])
    assert detect_jaw(None, flipped) == ("lower", "geometry")


def test_jaw_rules_in_order(tmp_path, upper):
    """The argument beats the file name, which beats geometry; an OBJ header line is used too."""
    assert detect_jaw("x_lower.obj", upper, jaw="upper") == ("upper", "argument")
    assert detect_jaw("x_lower.obj", upper) == ("lower", "file name")
    path = tmp_path / "case.obj"
    path.write_text("# lower\nv 0 0 0\n")
    assert detect_jaw(path, _sphere()) == ("lower", "file header")


def test_undecidable_jaw_asks_for_the_option():
    """A shape without an open base (a sphere) and no name hint asks for --jaw."""
    with pytest.raises(InvalidInputError, match="--jaw upper or --jaw lower"):
        detect_jaw("scan.stl", _sphere())
    with pytest.raises(InvalidInputError, match="jaw must be"):
        detect_jaw("scan.stl", _sphere(), jaw="both")


def test_both_jaws_are_detected(upper, lower):
    """One file holding both jaws is flagged (as two meshes, and as a separated point cloud)."""
    assert not looks_like_both_jaws(upper) and not looks_like_both_jaws(lower)
    both = SurfaceMesh(np.r_[upper.vertices_ras, lower.vertices_ras],
                       np.r_[upper.faces, lower.faces + upper.n_vertices])
    assert looks_like_both_jaws(both)
    apart = np.r_[upper.vertices_ras + [0, 0, 6], lower.vertices_ras - [0, 0, 6]]
    assert looks_like_both_jaws(SurfaceMesh(apart, np.zeros((0, 3), np.int64)))


def test_large_mesh_is_flagged_and_decimated(tmp_path, upper, monkeypatch):
    """Above the threshold the result asks for decimation; decimate keeps a map back to each vertex."""
    from ToothMCLCore.io import mesh_clean

    monkeypatch.setattr(mesh_clean, "DECIMATE_ABOVE_FACES", 10_000)  # where cleaning reads it
    path = tmp_path / "big.ply"
    write_mesh(path, upper)
    result = read_mesh(path)
    assert result.needs_decimation
    small, mapping = decimate(result.mesh, 4000)
    assert len(small.faces) <= 4100 and mapping.shape == (upper.n_vertices,)
    assert mapping.max() < small.n_vertices
    assert np.percentile(np.linalg.norm(small.vertices_ras[mapping] - upper.vertices_ras, axis=1), 90) < 3.0


def test_too_many_faces_is_a_resource_error(tmp_path, upper, monkeypatch):
    """A mesh over the hard face limit is refused before cleaning, with advice."""
    monkeypatch.setattr(mesh_io, "MAX_FACES", 1000)
    for suffix in (".stl", ".obj"):  # STL caught from the header, OBJ after parsing
        write_mesh(tmp_path / f"huge{suffix}", upper)
        with pytest.raises(ResourceLimitError, match="decimate"):
            read_mesh(tmp_path / f"huge{suffix}")


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------

def _truncated(tmp_path, upper, suffix):
    good = tmp_path / f"good{suffix}"
    write_mesh(good, upper, vertex_labels=upper.labels)
    bad = tmp_path / f"truncated{suffix}"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    return bad


@pytest.mark.parametrize("suffix", [".stl", ".ply", ".vtp"])
def test_truncated_files_are_refused(tmp_path, upper, suffix):
    """A file cut in half is reported as corrupt or truncated, never read as a smaller mesh."""
    with pytest.raises(InvalidInputError, match="corrupt or truncated"):
        read_mesh(_truncated(tmp_path, upper, suffix))


@pytest.mark.parametrize("name,content,message", [
    ("scan.xyz", b"1 2 3\n", "unknown mesh format"),
    ("empty.stl", b"", "empty"),
    ("garbage.ply", b"this is not a mesh\n", "corrupt or truncated"),
    ("garbage.stl", b"\x00\x01not an stl", "corrupt or truncated"),
    ("garbage.vtk", b"hello\n", "corrupt or truncated"),
    ("comments.obj", b"# nothing here\n", "no vertices"),
    ("outside.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n", "outside"),
    ("grid.vtk", b"# vtk DataFile Version 4.2\nx\nASCII\nDATASET STRUCTURED_POINTS\n", "not POLYDATA"),
])
def test_bad_files_are_refused_with_advice(tmp_path, name, content, message):
    """Unknown, empty, unreadable or inconsistent files raise InvalidInputError saying what to do."""
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InvalidInputError, match=message):
        read_mesh(path)


def test_missing_file_and_bad_units_are_refused(tmp_path):
    """A path that does not exist and an unknown unit are refused before reading."""
    with pytest.raises(InvalidInputError, match="does not exist"):
        read_mesh(tmp_path / "nope.obj")
    (tmp_path / "a.obj").write_text("v 0 0 0\n")
    with pytest.raises(InvalidInputError, match="units must be"):
        read_mesh(tmp_path / "a.obj", units="inch")


def test_point_cloud_needs_enough_points(tmp_path):
    """Without faces, 1000+ points are accepted as a point cloud; fewer are refused."""
    rng = np.random.default_rng(1)
    for n, ok in ((1500, True), (200, False)):
        path = tmp_path / f"cloud{n}.obj"
        path.write_text("".join(f"v {x} {y} {z}\n" for x, y, z in rng.uniform(0, 60, (n, 3))))
        if ok:
            result = read_mesh(path)
            assert result.mesh.n_vertices == n and len(result.mesh.faces) == 0
        else:
            with pytest.raises(InvalidInputError, match="no faces and only 200 points"):
                read_mesh(path)


# ------------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------------

def test_write_teeth_stls_one_file_per_tooth(tmp_path, upper):
    """Each FDI tooth gets tooth_<FDI>.stl near its labelled vertices; gingiva gets none."""
    paths = write_teeth_stls(tmp_path / "teeth", upper, upper.labels)
    teeth = fdi.present_teeth(np.unique(upper.labels))
    assert [p.name for p in paths] == [f"tooth_{t}.stl" for t in teeth]
    for p, t in zip(paths, teeth):
        centre = read_mesh(p).mesh.vertices_ras.mean(axis=0)
        assert np.linalg.norm(centre - upper.vertices_ras[upper.labels == t].mean(axis=0)) < 1.5


def test_write_refusals_leave_no_file(tmp_path, upper):
    """Bad extension, wrong label count, STL of a point cloud or a missing folder write nothing."""
    with pytest.raises(OutputError, match="use one of"):
        write_mesh(tmp_path / "scan.xyz", upper)
    with pytest.raises(InvalidInputError, match="labels for a mesh of"):
        write_mesh(tmp_path / "scan.ply", upper, vertex_labels=np.zeros(3))
    with pytest.raises(InvalidInputError, match="not an FDI tooth number"):
        write_mesh(tmp_path / "scan.ply", upper, vertex_labels=np.full(upper.n_vertices, 19))
    with pytest.raises(OutputError, match="point cloud"):
        write_mesh(tmp_path / "cloud.stl", SurfaceMesh(upper.vertices_ras, np.zeros((0, 3), np.int64)))
    with pytest.raises(OutputError, match="does not exist"):
        write_mesh(tmp_path / "missing" / "scan.ply", upper)
    assert sorted(p.name for p in tmp_path.iterdir()) == []
