"""Exported-graph backends for the CBCT network's sliding windows on CPU: ``--backend openvino``
(what ``auto`` picks on a CPU when it is installed) and ``--backend onnxruntime``.

Why (``benchmarks/cbct_paper_size.py``, one 96^3 window of the paper-size SwinUNETR, feature size
48, v2 blocks, 2 CPU cores of a CPU with AVX-512 bf16, same input, same run): OpenVINO 2026.4
1.9 s in bf16 and 4.0 s in fp32; ONNX Runtime 1.23 6.5 s (fp32 only); PyTorch 7.4 s with bfloat16
autocast (8.6 s fp32 in another run). OpenVINO's bf16 kernels (oneDNN, with its own graph fusions)
are what makes the difference: 3.8x PyTorch's bf16 at 98.8 % equal argmax on a *random* network
(near-tied logits: the worst case; the demo model's labels agree on >= 99.9 %, tested), fp32 to
3e-4 of PyTorch's logits. ONNX Runtime pays where the CPU has no bf16 and exact fp32 is wanted
but OpenVINO is not installed. Both are optional dependencies (``pip install -e ".[openvino]"``,
``".[onnx]"``); without them ``auto`` means PyTorch.

How: the network, built from a verified checkpoint, is exported once per model and window size
(``torch.onnx.export``, opset 17, the TorchScript exporter: the dynamo exporter does not trace
MONAI's SwinUNETR window logic) into ``$TOOTHMCL_CACHE/onnx/<model sha256>_<K>x<J>x<I>.onnx``,
written atomically. ONNX Runtime loads it into an ``InferenceSession``; OpenVINO reads it and
compiles it for the CPU with the precision the run asked for (``INFERENCE_PRECISION_HINT`` bf16 or
f32: :func:`~.device.resolve_precision`), keeping the compiled blob in
``$TOOTHMCL_CACHE/openvino`` (OpenVINO's ``CACHE_DIR``) so a later run skips compiling. Both use
as many threads as torch. SwinUNETR's shape logic is Python, so the graph is specialised to the
window size: every window of a sliding window has it; a crop segmented as one window of its own
size (the card's ``whole_crop_max_voxels``) runs in PyTorch rather than exporting a graph per
scan. An ONNX file holds a graph and tensors, no code to unpickle; the cache folder is trusted as
the weights cache is. CPU only: on CUDA PyTorch's fp16 AMP is the faster path.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
from pathlib import Path

import numpy as np

from ..errors import ConfigError, WeightsError

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
OPSET = 17
_RUNTIMES = {"onnxruntime": ("onnxruntime", "onnx", "ONNX Runtime"), "openvino": ("openvino", "openvino", "OpenVINO")}


def _installed(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules (tests) or a broken install
        return False


def check_backend(backend: str, device) -> str:
    """The backend that will run the windows on ``device`` (a torch device or its name):
    ``backend`` itself, or for ``"auto"`` OpenVINO on a CPU where it is installed, else PyTorch.
    ConfigError (with what to use) for an unknown name or an exported-graph backend on a GPU;
    WeightsError when the backend's package is not installed."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS} (got {backend!r})")
    cuda = str(getattr(device, "type", device)) == "cuda"
    if backend == "auto":
        return "openvino" if not cuda and _installed("openvino") and _installed("onnx") else "torch"
    if backend in _RUNTIMES:
        module, extra, name = _RUNTIMES[backend]
        if cuda:
            raise ConfigError(f"the {backend} backend runs on CPU; on a GPU use --backend torch (fp16 AMP)")
        if not (_installed(module) and _installed("onnx")):
            raise WeightsError(f"the {backend} backend needs {name}: pip install -e \".[{extra}]\" (or "
                               "use --backend torch)")
    return backend


def window_runner(backend: str, net, model_sha256: str, window, in_channels: int = 1, precision: str = "fp32",
                  cache: Path | None = None):
    """The runner of ``backend`` ("onnxruntime" or "openvino") for ``window``-sized windows; its
    ``precision`` is what it runs in (OpenVINO: ``precision``; ONNX Runtime: always fp32)."""
    if backend == "openvino":
        return OpenVINOWindows(net, model_sha256, window, in_channels, precision=precision, cache=cache)
    return ONNXWindows(net, model_sha256, window, in_channels, cache=cache)


class _ExportedWindows:
    """Runs one network on fixed-size windows from its exported ONNX graph (module docstring).

    Args:
        net: the torch network (eval mode, on CPU).
        model_sha256: the checkpoint's SHA-256 (names the cached graph).
        window: (K, J, I) window size.
        in_channels: input channels of the network.
        cache: folder of the exported graphs (default ``$TOOTHMCL_CACHE/onnx``).
    """

    #: what the windows' arithmetic is (set by the subclasses)
    precision = "fp32"

    def __init__(self, net, model_sha256: str, window, in_channels: int = 1, cache: Path | None = None):
        from ..models.registry import cache_dir

        self.window = tuple(int(s) for s in window)
        # one window at a time: an OpenVINO infer request is not thread-safe, and the module's
        # segmentation worker and a click tool may share a predictor
        self._lock = threading.Lock()
        folder = Path(cache) if cache is not None else cache_dir() / "onnx"
        self.path = folder / f"{model_sha256}_{'x'.join(map(str, self.window))}.onnx"
        #: whether this instance exported the graph (False: read from the cache)
        self.exported = False
        if not self.path.is_file():
            self._export(net, in_channels)
            self.exported = True

    def _export(self, net, in_channels: int) -> None:
        import warnings

        import torch

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".onnx", dir=self.path.parent)
        os.close(fd)
        logger.info("exporting the network to ONNX for %s windows (once per model and window size)", self.window)
        try:
            example = torch.zeros((1, int(in_channels)) + self.window)
            with warnings.catch_warnings():  # the tracer warns about SwinUNETR's Python shape checks
                warnings.simplefilter("ignore")
                torch.onnx.export(net, (example,), tmp, opset_version=OPSET, input_names=["image"],
                                  output_names=["logits"], dynamo=False)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _unreadable(self, runtime: str, exc: Exception) -> WeightsError:
        return WeightsError(f"{self.path} could not be loaded by {runtime} ({str(exc).splitlines()[0]}); "
                            "delete it to export it again")

    def _run_one(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, batch):
        """Logits (a float32 torch tensor) of a (B, C, K, J, I) torch batch of windows."""
        import torch

        x = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        with self._lock:
            outputs = [self._run_one(x[i:i + 1]) for i in range(len(x))]
        return torch.from_numpy(np.concatenate(outputs, axis=0))


class ONNXWindows(_ExportedWindows):
    """:class:`_ExportedWindows` in ONNX Runtime (fp32, all graph optimisations)."""

    def __init__(self, net, model_sha256: str, window, in_channels: int = 1, cache: Path | None = None):
        import onnxruntime as ort
        import torch

        super().__init__(net, model_sha256, window, in_channels, cache)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 -- ONNX Runtime's errors (InvalidProtobuf, Fail) derive from Exception only
            raise self._unreadable("ONNX Runtime", exc) from None
        self.input_name = self.session.get_inputs()[0].name

    def _run_one(self, x):
        return self.session.run(None, {self.input_name: x})[0]


class OpenVINOWindows(_ExportedWindows):
    """:class:`_ExportedWindows` compiled by OpenVINO for the CPU.

    Args:
        precision: "bf16" or "fp32" (from :func:`~.device.resolve_precision`), passed as
            OpenVINO's ``INFERENCE_PRECISION_HINT``. Other arguments as :class:`_ExportedWindows`.
    """

    def __init__(self, net, model_sha256: str, window, in_channels: int = 1, precision: str = "fp32",
                 cache: Path | None = None):
        import openvino as ov
        import torch

        super().__init__(net, model_sha256, window, in_channels, cache)
        if precision not in ("fp32", "bf16"):
            raise ConfigError(f"OpenVINO runs windows in fp32 or bf16 (got {precision!r})")
        self.precision = precision
        core = ov.Core()
        core.set_property({"CACHE_DIR": str(self.path.parent.parent / "openvino")})  # compiled once, then read
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                  "INFERENCE_NUM_THREADS": max(1, torch.get_num_threads()), "PERFORMANCE_HINT": "LATENCY"}
        try:
            self.compiled = core.compile_model(str(self.path), "CPU", config)
        except RuntimeError as exc:  # OpenVINO reports unreadable or unsupported graphs as RuntimeError
            raise self._unreadable("OpenVINO", exc) from None
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(0)

    def _run_one(self, x):
        return np.array(self.request.infer({0: x})[self.output], dtype=np.float32)  # a copy: the request reuses its buffer
