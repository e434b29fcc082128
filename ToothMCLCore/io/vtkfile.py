"""VTK polydata files without the vtk package: XML PolyData (``.vtp``) and legacy ``.vtk``.

ToothMCLCore may not import vtk (it is Slicer's, and heavy), yet VTP/VTK are what 3D Slicer and
many dental tools exchange. This reader handles points and polygons (triangulating polygons and
strips) in ascii, binary (base64, optionally zlib-compressed) and appended raw encodings, plus
point-data arrays; the writer emits base64 XML PolyData with point-data arrays.
"""

from __future__ import annotations

import base64
import re
import zlib

import numpy as np

from ..errors import InvalidInputError

_XML_TYPES = {"Int8": "i1", "UInt8": "u1", "Int16": "i2", "UInt16": "u2", "Int32": "i4", "UInt32": "u4",
              "Int64": "i8", "UInt64": "u8", "Float32": "f4", "Float64": "f8"}
_LEGACY_TYPES = {"unsigned_char": "u1", "char": "i1", "unsigned_short": "u2", "short": "i2",
                 "unsigned_int": "u4", "int": "i4", "unsigned_long": "u8", "long": "i8", "float": "f4",
                 "double": "f8", "vtktypeint64": "i8", "vtktypeuint64": "u8",
                 "vtkidtype": "i4"}  # vtkDataWriter writes vtkIdType as 32-bit int


def _b64_chars(n_bytes: int) -> int:
    return -(-int(n_bytes) // 3) * 4


def _triangulate(conn: np.ndarray, ends: np.ndarray, strips: bool = False):
    """(K, 3) triangles of polygons (fans) or triangle strips given by connectivity and end offsets,
    and the (K,) int64 index of the polygon or strip each triangle comes from (cell data follows it)."""
    conn, ends = np.asarray(conn, np.int64), np.asarray(ends, np.int64)
    starts = np.r_[0, ends[:-1]]
    sizes = ends - starts
    out, cells = [np.zeros((0, 3), np.int64)], [np.zeros(0, np.int64)]
    for k in np.unique(sizes[sizes >= 3]):
        which = np.nonzero(sizes == k)[0]
        s = starts[which]
        for j in range(k - 2):
            a, b, c = (s + j, s + j + 1, s + j + 2) if strips else (s, s + j + 1, s + j + 2)
            if strips and j % 2:
                a, b = b, a
            out.append(np.stack([conn[a], conn[b], conn[c]], axis=1))
            cells.append(which)
    return np.concatenate(out), np.concatenate(cells)


def _face_arrays(cell_arrays: dict, cell_of_face: np.ndarray, n_cells: int) -> dict:
    """Cell-data arrays carried to the triangles (one row per triangle, a 1-component array flat).

    Arrays whose size is not a whole number of values per cell are left out."""
    out = {}
    for name, values in cell_arrays.items():
        values = np.asarray(values)
        if n_cells == 0 or values.size == 0 or values.size % n_cells:
            continue
        values = values.reshape(n_cells, -1)
        out[name] = (values[:, 0] if values.shape[1] == 1 else values)[cell_of_face]
    return out


def read_vtp(data: bytes):
    """Points, triangles, normals, ``FDI`` and the cell data of VTK XML PolyData: ascii, binary
    (base64) or appended (raw or base64) arrays, uncompressed or zlib-compressed, UInt32/UInt64
    headers.

    Returns:
        ``(vertices, faces, normals or None, FDI or None, face_data)``; ``face_data`` maps each
        cell-data array's name to one value (or row) per triangle, so a polygon's value is on
        every triangle cut from it.
    """
    import xml.etree.ElementTree as ET

    payload, raw = b"", True
    start = data.find(b"<AppendedData")
    if start >= 0:
        tag_end = data.index(b">", start)
        raw = b'encoding="base64"' not in data[start:tag_end]
        body = data[tag_end + 1:data.rindex(b"</AppendedData>")]
        payload = body[body.index(b"_") + 1:]
        data = data[:start] + b"</VTKFile>"
    root = ET.fromstring(data)
    if root.get("type") != "PolyData":
        raise InvalidInputError(f"the VTK XML file holds {root.get('type')}, not PolyData; save the "
                                "scan as a surface (.vtp PolyData)")
    endian = ">" if root.get("byte_order") == "BigEndian" else "<"
    hdr = np.dtype(endian + ("u8" if root.get("header_type") == "UInt64" else "u4"))
    compressor = root.get("compressor", "")
    if compressor not in ("", "vtkZLibDataCompressor"):
        raise InvalidInputError(f"VTP compressed with {compressor} is not supported; re-save it with "
                                "zlib compression or none")
    hs = hdr.itemsize

    def take(buf, b64, start, n):  # n decoded bytes from ``start``; returns (bytes, next start)
        out, stop = (base64.b64decode(buf[start:start + _b64_chars(n)]), start + _b64_chars(n)) if b64 \
            else (buf[start:start + n], start + n)
        if len(out) < n:
            raise ValueError("array data ends early (truncated file?)")
        return out[:n], stop

    def decode(el):
        dtype = np.dtype(endian + _XML_TYPES[el.get("type")])
        fmt = el.get("format", "ascii")
        if fmt == "ascii":
            return np.array((el.text or "").split(), dtype=np.float64).astype(dtype)
        b64 = fmt == "binary" or not raw
        buf = (el.text or "").strip().encode() if fmt == "binary" else payload[int(el.get("offset", 0)):]
        count = int(np.frombuffer(take(buf, b64, 0, hs)[0], hdr)[0])
        if not compressor and b64 and not buf[:_b64_chars(hs)].endswith(b"="):
            body = base64.b64decode(buf)[hs:hs + count]  # header and data encoded as one stream
        elif not compressor:
            body = take(buf, b64, take(buf, b64, 0, hs)[1], count)[0]
        else:  # header: [n_blocks, block size, last block size, compressed sizes...], then blocks
            head, at = take(buf, b64, 0, hs * (3 + count))
            sizes = np.frombuffer(head, hdr)[3:].astype(np.int64)
            comp, ends = take(buf, b64, at, int(sizes.sum()))[0], np.cumsum(sizes)
            body = b"".join(zlib.decompress(comp[i:j]) for i, j in zip(np.r_[0, ends[:-1]], ends))
        if len(body) % dtype.itemsize:
            raise ValueError(f"array {el.get('Name')!r} is truncated")
        return np.frombuffer(body, dtype).astype(dtype.newbyteorder("="))

    verts, tris, normals, labels, face_arrays, offset = [], [], [], [], [], 0
    for piece in root.iter("Piece"):
        n = int(piece.get("NumberOfPoints", 0))
        pts = piece.find("Points/DataArray")
        pts = decode(pts).astype(np.float64).reshape(-1, 3) if pts is not None else np.zeros((0, 3))
        if len(pts) != n:
            raise ValueError(f"piece declares {n} points but holds {len(pts)}")
        # cell data runs over verts, lines, polys, strips, in that order
        first_cell = int(piece.get("NumberOfVerts", 0)) + int(piece.get("NumberOfLines", 0))
        piece_cells = []
        for section, strips in (("Polys", False), ("Strips", True)):
            arrays = {el.get("Name"): el for el in piece.findall(f"{section}/DataArray")}
            if "connectivity" in arrays:
                t, cells = _triangulate(decode(arrays["connectivity"]), decode(arrays["offsets"]), strips)
                tris.append(t + offset)
                piece_cells.append(cells + first_cell)
            first_cell += int(piece.get(f"NumberOf{section}", 0))
        cd = piece.find("CellData")
        cell_arrays = {el.get("Name"): decode(el) for el in (cd.findall("DataArray") if cd is not None else [])}
        face_arrays.append(_face_arrays(cell_arrays, np.concatenate(piece_cells or [np.zeros(0, np.int64)]),
                                        first_cell))
        pd = piece.find("PointData")
        arrays = {el.get("Name"): el for el in (pd.findall("DataArray") if pd is not None else [])}
        nname = pd.get("Normals", "Normals") if pd is not None else "Normals"
        normals.append(decode(arrays[nname]).reshape(-1, 3) if nname in arrays else None)
        labels.append(decode(arrays["FDI"]).astype(np.int32) if "FDI" in arrays else None)
        verts.append(pts)
        offset += n
    vertices = np.concatenate(verts) if verts else np.zeros((0, 3))
    faces = np.concatenate(tris) if tris else np.zeros((0, 3), np.int64)
    normals = np.concatenate(normals).astype(np.float64) if normals and all(x is not None for x in normals) else None
    labels = np.concatenate(labels) if labels and all(x is not None for x in labels) else None
    shared = set.intersection(*(set(f) for f in face_arrays)) if face_arrays else set()
    faces_data = {name: np.concatenate([f[name] for f in face_arrays]) for name in sorted(shared)}
    return vertices, faces, normals, labels, faces_data


def read_legacy_vtk(data: bytes):
    """Points, triangles, normals, ``FDI`` and cell data of a legacy VTK POLYDATA file (versions
    2-5.1, ASCII or big-endian BINARY); returns what :func:`read_vtp` returns."""
    lines = data.split(b"\n", 3)
    if len(lines) < 4 or not lines[0].startswith(b"# vtk DataFile"):
        raise ValueError("missing '# vtk DataFile' header")
    binary = lines[2].strip().upper() == b"BINARY"
    pos = len(data) - len(lines[3])
    word_re = re.compile(rb"\s*(\S+)")

    def word():
        nonlocal pos
        m = word_re.match(data, pos)
        if not m:
            return ""
        pos = m.end()
        return m.group(1).decode("ascii", "replace")

    def array(count, vtk_type):
        nonlocal pos
        count = int(count)
        if binary:
            dtype = np.dtype(">" + ("u1" if vtk_type == "color" else _LEGACY_TYPES[vtk_type.lower()]))
            pos = data.index(b"\n", pos) + 1
            if pos + count * dtype.itemsize > len(data):
                raise ValueError("binary data ends early (truncated file?)")
            out = np.frombuffer(data, dtype, count, pos).astype(dtype.newbyteorder("="))
            pos += count * dtype.itemsize
            return out
        parts = data[pos:].split(maxsplit=count)
        if len(parts) < count:
            raise ValueError("ASCII data ends early (truncated file?)")
        pos = len(data) - (len(parts[count]) if len(parts) > count else 0)
        return np.array(parts[:count]).astype(np.float64)

    def peek():
        nonlocal pos
        saved, w = pos, word()
        pos = saved
        return w

    def skip_metadata():  # after the word "METADATA": lines up to an empty one (VTK 5.1 array info)
        nonlocal pos
        pos = data.index(b"\n", pos) + 1
        while pos < len(data):
            end = data.find(b"\n", pos)
            end = len(data) if end < 0 else end
            line, pos = data[pos:end], end + 1
            if not line.strip():
                break

    if word() != "DATASET" or word().upper() != "POLYDATA":
        raise InvalidInputError("the legacy VTK file is not POLYDATA; save the scan as a surface (polydata)")
    points, tris, fields, cell_fields = np.zeros((0, 3)), {}, {}, {}
    section_cells = dict.fromkeys(("VERTICES", "LINES", "POLYGONS", "TRIANGLE_STRIPS"), 0)
    count, target = 0, None
    while True:
        key = word().upper()
        if not key:
            break
        if key == "POINTS":
            n, t = word(), word()
            points = array(3 * int(n), t).reshape(-1, 3)
        elif key in ("VERTICES", "LINES", "POLYGONS", "TRIANGLE_STRIPS"):
            n, size = int(word()), int(word())
            if peek().upper() == "OFFSETS":
                word()
                offsets = array(n, word()).astype(np.int64)
                word()  # CONNECTIVITY
                conn, ends = array(size, word()).astype(np.int64), offsets[1:]
            else:
                cells = array(size, "int").astype(np.int64)
                if size == 4 * n and (cells[::4] == 3).all():
                    conn, ends = cells.reshape(-1, 4)[:, 1:].ravel(), np.arange(1, n + 1) * 3
                else:
                    heads, at = [], 0
                    for _ in range(n):
                        heads.append(at)
                        at += int(cells[at]) + 1
                    heads = np.asarray(heads, np.int64)
                    keep = np.ones(size, bool)
                    keep[heads] = False
                    conn, ends = cells[keep], np.cumsum(cells[heads])
            section_cells[key] = len(ends)  # 5.1 files count offsets (cells + 1), older ones cells
            if key in ("POLYGONS", "TRIANGLE_STRIPS"):
                tris[key] = _triangulate(conn, ends, key == "TRIANGLE_STRIPS")
        elif key in ("POINT_DATA", "CELL_DATA"):
            count = int(word())
            target = fields if key == "POINT_DATA" else cell_fields
        elif key == "FIELD":
            word()
            for _ in range(int(word())):
                while peek().upper() == "METADATA":
                    word()
                    skip_metadata()
                name = word()
                if name == "NULL_ARRAY":
                    continue
                ncomp, ntup, t = int(word()), int(word()), word()
                (target if target is not None else {})[name] = array(ncomp * ntup, t)
        elif key in ("SCALARS", "VECTORS", "NORMALS", "TENSORS", "TENSORS6", "GLOBAL_IDS", "PEDIGREE_IDS",
                     "COLOR_SCALARS", "TEXTURE_COORDINATES"):
            name, ncomp, t = word(), 1, "color"
            if key == "SCALARS":
                t = word()
                ncomp = int(word()) if peek().isdigit() else 1
                word()
                word()  # LOOKUP_TABLE <name>
            elif key in ("COLOR_SCALARS", "TEXTURE_COORDINATES"):
                ncomp = int(word())
                t = word() if key == "TEXTURE_COORDINATES" else ("color" if binary else "float")
            else:
                t = word()
                ncomp = {"VECTORS": 3, "NORMALS": 3, "TENSORS": 9, "TENSORS6": 6}.get(key, 1)
            values = array(ncomp * count, t)
            if target is not None:
                target["__normals__" if key == "NORMALS" else name] = values
        elif key == "LOOKUP_TABLE":
            word()
            array(4 * int(word()), "color" if binary else "float")
        elif key == "METADATA":
            skip_metadata()
        else:
            raise ValueError(f"unexpected keyword {key!r}")
    # cell data runs over vertices, lines, polygons, strips, in that order, whatever the file's order
    first = {"POLYGONS": section_cells["VERTICES"] + section_cells["LINES"]}
    first["TRIANGLE_STRIPS"] = first["POLYGONS"] + section_cells["POLYGONS"]
    kinds = [k for k in ("POLYGONS", "TRIANGLE_STRIPS") if k in tris]
    faces = np.concatenate([tris[k][0] for k in kinds]) if kinds else np.zeros((0, 3), np.int64)
    cell_of_face = np.concatenate([tris[k][1] + first[k] for k in kinds]) if kinds else np.zeros(0, np.int64)
    cell_fields.pop("__normals__", None)
    face_data = _face_arrays(cell_fields, cell_of_face, sum(section_cells.values()))
    normals = fields.get("__normals__")
    labels = fields.get("FDI")
    return (points.astype(np.float64), faces, None if normals is None else normals.reshape(-1, 3),
            None if labels is None else labels.astype(np.int32), face_data)


def vtp_bytes(vertices: np.ndarray, faces: np.ndarray, point_data: dict, active: str | None = None) -> bytes:
    """VTK XML PolyData, inline base64 arrays with UInt64 headers, as vtkXMLPolyDataWriter's binary mode."""
    def array(name, values, ncomp=1):
        values = np.ascontiguousarray(values)
        kind = {np.dtype(f"<{c}"): t for t, c in _XML_TYPES.items()}[values.dtype.newbyteorder("<")]
        body = values.astype(values.dtype.newbyteorder("<")).tobytes()
        text = base64.b64encode(np.uint64(len(body)).tobytes()) + base64.b64encode(body)
        return (f'<DataArray type="{kind}" Name="{name}" NumberOfComponents="{ncomp}" format="binary">'
                f"{text.decode()}</DataArray>")

    faces = np.asarray(faces, np.int64).reshape(-1, 3)
    pd = "".join(array(k, a, 1 if a.ndim == 1 else a.shape[1]) for k, a in point_data.items())
    scalars = f' Scalars="{active}"' if active else ""
    xml = ('<?xml version="1.0"?>\n<VTKFile type="PolyData" version="1.0" byte_order="LittleEndian" '
           f'header_type="UInt64">\n<PolyData>\n<Piece NumberOfPoints="{len(vertices)}" NumberOfVerts="0" '
           f'NumberOfLines="0" NumberOfStrips="0" NumberOfPolys="{len(faces)}">\n'
           f"<PointData{scalars}>{pd}</PointData>\n"
           f"<Points>{array('Points', np.asarray(vertices, np.float64), 3)}</Points>\n"
           f"<Polys>{array('connectivity', faces.ravel())}"
           f"{array('offsets', np.arange(1, len(faces) + 1, dtype=np.int64) * 3)}</Polys>\n"
           "</Piece>\n</PolyData>\n</VTKFile>\n")
    return xml.encode()

