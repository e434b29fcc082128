"""ONNX Runtime for the CBCT network's sliding windows on CPU (``--backend onnxruntime``).

Why: fp32 arithmetic at the speed of PyTorch's bfloat16. On 2 CPU cores one 96^3 window of the
paper-size SwinUNETR (feature size 48, v2 blocks) took 5.9 s in ONNX Runtime 1.32 (fp32, all
graph optimisations) against 8.8 s in PyTorch fp32 (1.49x) and 6.1 s with PyTorch's bfloat16
autocast (1.03x; 4.9 s against 6.4 s in another run), with the same logits to 4e-5
(``benchmarks/cbct_paper_size.py``). So it pays most on CPUs without native bf16 instructions,
where ``--precision auto`` runs PyTorch in fp32, and wherever exact fp32 labels are wanted.
ONNX Runtime is an optional dependency (``pip install -e ".[onnx]"``); PyTorch stays the default.

How: the network, built from a verified checkpoint, is exported once per model and window size
(``torch.onnx.export``, opset 17, the TorchScript exporter: the dynamo exporter does not trace
MONAI's SwinUNETR window logic) into ``$TOOTHMCL_CACHE/onnx/<model sha256>_<K>x<J>x<I>.onnx``,
written atomically, then loaded by an ``InferenceSession`` with as many threads as torch uses.
SwinUNETR's shape logic is Python, so the graph is specialised to the window size: every window
of a sliding window has it; a crop segmented as one window of its own size (the card's
``whole_crop_max_voxels``) runs in PyTorch rather than exporting a graph per scan. An ONNX file
holds a graph and tensors, no code to unpickle; the cache folder is trusted as the weights cache
is. CPU only: on CUDA PyTorch's fp16 AMP is the faster path and ``onnxruntime-gpu`` is not a
dependency.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import ConfigError, WeightsError

logger = logging.getLogger(__name__)

BACKENDS = ("torch", "onnxruntime")
OPSET = 17


def check_backend(backend: str, device) -> str:
    """``backend`` if it can run on ``device`` (a torch device or its name), else ConfigError
    saying what to use; WeightsError when ONNX Runtime is not installed."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {BACKENDS} (got {backend!r})")
    if backend == "onnxruntime":
        if str(getattr(device, "type", device)) == "cuda":
            raise ConfigError("the onnxruntime backend runs on CPU; on a GPU use --backend torch (fp16 AMP)")
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise WeightsError("the onnxruntime backend needs ONNX Runtime: pip install -e \".[onnx]\" (or "
                               "use --backend torch)") from None
    return backend


class ONNXWindows:
    """Runs one network on fixed-size windows with ONNX Runtime (module docstring).

    Args:
        net: the torch network (eval mode, on CPU).
        model_sha256: the checkpoint's SHA-256 (names the cached graph).
        window: (K, J, I) window size.
        in_channels: input channels of the network.
        cache: folder of the exported graphs (default ``$TOOTHMCL_CACHE/onnx``).
    """

    def __init__(self, net, model_sha256: str, window, in_channels: int = 1, cache: Path | None = None):
        import onnxruntime as ort
        import torch

        from ..models.registry import cache_dir

        self.window = tuple(int(s) for s in window)
        folder = Path(cache) if cache is not None else cache_dir() / "onnx"
        self.path = folder / f"{model_sha256}_{'x'.join(map(str, self.window))}.onnx"
        #: whether this instance exported the graph (False: read from the cache)
        self.exported = False
        if not self.path.is_file():
            self._export(net, in_channels)
            self.exported = True
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, torch.get_num_threads())
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 -- ONNX Runtime's errors (InvalidProtobuf, Fail) derive from Exception only
            raise WeightsError(f"{self.path} could not be loaded by ONNX Runtime ({str(exc).splitlines()[0]}); "
                               "delete it to export it again") from None
        self.input_name = self.session.get_inputs()[0].name

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

    def __call__(self, batch):
        """Logits (a float32 torch tensor) of a (B, C, K, J, I) torch batch of windows."""
        import torch

        x = np.ascontiguousarray(batch.detach().cpu().numpy(), dtype=np.float32)
        outputs = [self.session.run(None, {self.input_name: x[i:i + 1]})[0] for i in range(len(x))]
        return torch.from_numpy(np.concatenate(outputs, axis=0))
