"""A tiny GGUF transformer checkpoint, written offline with the `gguf` package (the quantization extra).

Community GGUF files (city96's Flux and Qwen-Image) hold a transformer's weights, 2-D ones quantized (Q8_0, Q4_K,
...) and the rest in float; diffusers loads them with `from_single_file` and `GGUFQuantizationConfig`. A tiny one is
a tiny transformer's state dict in diffusers' own key names (which `from_single_file` loads without conversion),
each tensor whose rows fit whole quantization blocks in `quant_type`, the others as F32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_transformer_gguf(model: Any, path: Path, quant_type: str = "Q8_0", architecture: str = "flux") -> Path:
    """Write `model`'s weights to `path` as GGUF; returns the path."""
    import gguf
    import numpy as np

    kind = gguf.GGMLQuantizationType[quant_type]
    block, _ = gguf.GGML_QUANT_SIZES[kind]
    writer = gguf.GGUFWriter(str(path), architecture)
    for name, tensor in model.state_dict().items():
        data = tensor.detach().float().cpu().numpy()
        if data.ndim == 2 and data.shape[-1] % block == 0:
            writer.add_tensor(name, gguf.quants.quantize(data, kind), raw_dtype=kind)
        else:
            writer.add_tensor(name, data.astype(np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
