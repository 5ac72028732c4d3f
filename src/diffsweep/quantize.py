"""Quantized builders (`builder.quantization`, presets in conf/quantization/): diffusers' own quantizers applied to
the components a setting names, checked before anything is written, measured once loaded.

A setting is a mapping (`backend`, `weights`, `components`, `file`) or a preset's name; a name in a grid axis
(`builder.quantization: [none, quanto_int8, gguf_q8]`) is read from conf/quantization/<name>.yaml, so one sweep
compares builders that differ only in how their weights are stored. Quantization is lossy: the setting is part of
the builder hash (`none` leaves it out, so unquantized builders keep their hash).

- `bitsandbytes` (nf4, fp4, int8), `torchao` (int8 and float8 weight-only, float8 dynamic) and `quanto` (int8,
  float8, int4, int2) quantize while loading, through `PipelineQuantizationConfig(quant_mapping=...)`: diffusers'
  config class for diffusers models, transformers' for text encoders (basic mode needs both libraries to take the
  same arguments, which quanto's do not).
- `gguf` loads a single-file `.gguf` transformer (as the community ships Flux and Qwen-Image) with
  `from_single_file(..., quantization_config=GGUFQuantizationConfig(compute_dtype=<the builder's dtype>))`, the
  other components from the base model.
"""

from __future__ import annotations

import functools
import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from diffsweep.hub import model_json
from diffsweep.inputs import file_digest
from diffsweep.paths import conf_dir

NONE = {"name": "none", "backend": "none"}
WEIGHTS = {"bitsandbytes": ("nf4", "fp4", "int8"), "torchao": ("int8", "float8", "float8_dynamic"),
           "quanto": ("int8", "float8", "int4", "int2"), "gguf": (), "none": ()}
"""What each backend's `weights` may be; GGUF files carry their own type (Q8_0, Q4_K, ...)."""
MODULES = {"bitsandbytes": "bitsandbytes", "torchao": "torchao", "quanto": "optimum.quanto", "gguf": "gguf"}
EXTRAS = {"bitsandbytes": "bnb", "torchao": "quant", "quanto": "quant", "gguf": "quant"}
"""The package each backend imports and the diffsweep extra that installs it."""
TORCHAO_CONFIGS = {"int8": "Int8WeightOnlyConfig", "float8": "Float8WeightOnlyConfig",
                   "float8_dynamic": "Float8DynamicActivationFloat8WeightConfig"}
DENOISER_PREFIXES = ("unet", "transformer", "prior", "decoder")
NOT_MODELS = ("scheduler", "tokenizer", "feature_extractor", "image_processor", "processor")


def preset(name: str) -> dict[str, Any]:
    """conf/quantization/<name>.yaml as a mapping."""
    path = conf_dir() / "quantization" / f"{name}.yaml"
    if not path.is_file():
        raise KeyError(name)
    loaded = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    assert isinstance(loaded, dict)
    return {str(key): value for key, value in loaded.items()}


def presets() -> list[str]:
    return sorted(path.stem for path in (conf_dir() / "quantization").glob("*.yaml"))


def resolve(setting: Any) -> dict[str, Any]:
    """A setting as a mapping: a preset name read from conf/quantization, None as `none`."""
    if setting is None:
        return dict(NONE)
    if isinstance(setting, str):
        return preset(setting)
    return dict(setting)


def active(builder: Mapping[str, Any]) -> dict[str, Any] | None:
    """The builder's quantization when it quantizes anything (its `quantization` key is already resolved)."""
    setting = builder.get("quantization")
    return dict(setting) if isinstance(setting, Mapping) and setting.get("backend", "none") != "none" else None


def identity(setting: Mapping[str, Any]) -> dict[str, Any]:
    """The hash input: what changes the weights (not the preset's name); a local GGUF file by content."""

    entry = {key: setting[key] for key in ("backend", "weights", "components") if setting.get(key) is not None}
    if setting.get("file"):
        path = Path(setting["file"]).expanduser()
        entry["file"] = {"name": path.name, "sha256": file_digest(path)} if path.is_file() else setting["file"]
    return entry


# ----- checks before anything is written ------------------------------------------------------------------------------
def denoisers(slots: Mapping[str, Any]) -> list[str]:
    """The denoising models among a pipeline's components: what a setting without `components` quantizes."""
    return [name for name, kind in slots.items() if not name.startswith("_") and isinstance(kind, list)
            and kind[0] is not None and name.split("_")[0] in DENOISER_PREFIXES]


def problems(setting: Mapping[str, Any], slots: Mapping[str, Any] | None, device: Any, dtype: str,
             transformer: Mapping[str, Any] | None = None) -> list[tuple[str, str]]:
    """(sub-key, message) for a setting this builder cannot have on this device; `slots` is the base model's
    model_index.json (component -> [library, class]) and `transformer` its transformer's config, each where it could
    be read without loading, and `dtype` the builder's."""
    backend = setting.get("backend", "none")
    if backend == "none":
        return []
    found: list[tuple[str, str]] = []
    weights = setting.get("weights")
    if backend != "gguf" and weights not in WEIGHTS[backend]:
        return [("weights", f"{backend} quantizes weights to {', '.join(WEIGHTS[backend])}; got {weights!r}")]
    if backend == "torchao" and dtype != "bfloat16":
        found.append(("backend", f"torchao's {weights} weight-only layers compute in bfloat16 in diffusers; set "
                                 f"builder.dtype=bfloat16 (this builder's dtype is {dtype})"))
    if backend == "gguf":
        found += _gguf_problems(setting, slots, transformer)
    elif slots is not None:
        found += _component_problems(setting, slots, backend)
    return found


def environment_problems(setting: Mapping[str, Any], device: Any) -> list[tuple[str, str]]:
    """(sub-key, message) for a setting this machine cannot run: a backend not installed (the message names the
    extra), or one the device cannot run (bitsandbytes without CUDA, float8 matmuls before compute capability 8.9)."""
    backend, weights = setting.get("backend", "none"), setting.get("weights")
    if backend == "none":
        return []
    found = _device_problems(backend, weights, device)
    if importlib.util.find_spec(MODULES[backend].split(".")[0]) is None:
        found.append(("backend", f"{backend} needs the {MODULES[backend]} package, which is not installed: "
                                 f"pip install 'diffsweep[{EXTRAS[backend]}]'"))
    return found


def _device_problems(backend: str, weights: str | None, device: Any) -> list[tuple[str, str]]:
    import torch  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

    if backend == "bitsandbytes" and device.type != "cuda":
        return [("backend", f"bitsandbytes {weights} needs a CUDA GPU (diffusers' bitsandbytes quantizer refuses "
                            f"to load without one); this run's device is {device.type}: use quanto or torchao here")]
    if backend == "torchao" and weights == "float8_dynamic":
        capable = device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 9)
        if not capable:
            return [("weights", f"torchao float8_dynamic multiplies in float8, which needs a CUDA GPU of compute "
                                f"capability 8.9 or more (Ada, Hopper); this run's device is {device.type}: use "
                                f"weights: float8 (weight-only) here")]
    return []


def _component_problems(setting: Mapping[str, Any], slots: Mapping[str, Any],
                        backend: str) -> list[tuple[str, str]]:
    named = setting.get("components")
    if named is None:
        return [] if denoisers(slots) else [("components", "the base model has no unet or transformer to quantize; "
                                                           "name the components")]
    found = []
    models = {n: kind for n, kind in slots.items() if not n.startswith("_") and isinstance(kind, list)
              and kind[0] in ("diffusers", "transformers")}
    for position, name in enumerate(named):
        if name not in slots or name.startswith("_"):
            found.append((f"components[{position}]", f"the base model has no component '{name}' (it has: "
                                                     f"{', '.join(n for n in slots if not n.startswith('_'))})"))
        elif name not in models or name.startswith(NOT_MODELS):
            found.append((f"components[{position}]", f"{backend} quantizes the weights of diffusers and transformers "
                                                     f"models; '{name}' ({slots[name][1]}) has none to quantize"))
    return found


def _gguf_problems(setting: Mapping[str, Any], slots: Mapping[str, Any] | None,
                   transformer: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    found = []
    named = setting.get("components")
    if named is not None and list(named) != ["transformer"]:
        found.append(("components", "gguf loads one single-file transformer; the other components come from the "
                                    "base model unquantized (leave components out, or [transformer])"))
    file = setting.get("file")
    if not file:
        return [*found, ("file", "gguf needs file: a .gguf transformer checkpoint (a local file or a hub URL)")]
    if slots is not None and "transformer" not in slots:
        found.append(("backend", "gguf replaces a transformer, and the base model has none"))
        return found
    path = Path(file).expanduser()
    if file.startswith("https://"):
        return found
    if not path.is_file():
        return [*found, ("file", f"{file} does not exist (a local .gguf file, from {Path.cwd()})")]
    if slots is not None and transformer is not None:
        problem = gguf_family_problem(path, slots["transformer"][1], transformer)
        if problem:
            found.append(("file", problem))
    return found


def gguf_family_problem(path: Path, transformer_class: str, config: Mapping[str, Any]) -> str | None:
    """Why a .gguf file is not the transformer of the base model (class and `config`): its tensor names are neither
    the ones that model has nor the original checkpoint's that diffusers converts; None when it is."""
    try:
        names = _gguf_tensor_names(str(path), path.stat().st_mtime_ns)
    except Exception as error:  # noqa: BLE001 - any read failure means it is not a usable GGUF file
        return f"{path} is not a readable GGUF file ({type(error).__name__}: {error})"
    expected = _expected_names(transformer_class, json.dumps(dict(config), sort_keys=True, default=str))
    if expected is None:
        return None
    own, original = expected
    if names <= own or names & original:  # every tensor is one of the class's (at any depth), or an original's
        return None
    foreign = ", ".join(sorted(names - own)[:3])
    return (f"{path} is not a {transformer_class} checkpoint: {len(names - own)} of its {len(names)} tensors "
            f"({foreign}, ...) are no {transformer_class} weights (a transformer of another model family?)")


@functools.lru_cache(maxsize=16)
def _gguf_tensor_names(path: str, mtime_ns: int) -> frozenset[str]:
    from gguf import GGUFReader  # noqa: PLC0415 - optional extra (quant): loaded only for GGUF files

    return frozenset(tensor.name for tensor in GGUFReader(path).tensors)


# Tensor names that mark each family's original (pre-diffusers) checkpoint layout, which from_single_file converts.
ORIGINAL_MARKERS = {"FluxTransformer2DModel": {"double_blocks.0.img_attn.qkv.weight"},
                    "QwenImageTransformer2DModel": {"transformer_blocks.0.img_mod.1.weight"},
                    "SD3Transformer2DModel": {"joint_blocks.0.x_block.attn.qkv.weight"}}


@functools.lru_cache(maxsize=8)
def _expected_names(transformer_class: str, config: str) -> tuple[frozenset[str], frozenset[str]] | None:
    """The state-dict names of the base model's transformer (built from its JSON `config` on the meta device: no
    weights, no memory) and its family's original-layout marker names; None for a class diffusers lacks."""
    import diffusers  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline
    import torch  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

    model_class = getattr(diffusers, transformer_class, None)
    if model_class is None:
        return None
    with torch.device("meta"):
        model = model_class.from_config(json.loads(config))
    return frozenset(model.state_dict()), frozenset(ORIGINAL_MARKERS.get(transformer_class, ()))


# ----- loading --------------------------------------------------------------------------------------------------------
def load_kwargs(builder: Mapping[str, Any], source: Path | str, torch_dtype: Any) -> dict[str, Any]:
    """`from_pretrained` arguments for a quantized builder: `quantization_config`, or for GGUF the transformer."""
    setting = active(builder)
    if setting is None:
        return {}
    slots = model_json(source, "model_index.json", builder.get("revision")) or {}
    if setting["backend"] == "gguf":
        return {"transformer": _gguf_transformer(setting, slots, source, torch_dtype)}
    from diffusers import PipelineQuantizationConfig  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

    names = setting.get("components") or denoisers(slots)
    return {"quantization_config": PipelineQuantizationConfig(
        quant_mapping={name: _config(setting, slots[name][0]) for name in names})}


def _config(setting: Mapping[str, Any], library: str) -> Any:
    """The backend's config class of `library` (diffusers or transformers) for the setting's weights."""
    import diffusers  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline
    import transformers  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

    module = diffusers if library == "diffusers" else transformers
    backend, weights = setting["backend"], setting["weights"]
    if backend == "bitsandbytes":
        if weights == "int8":
            return module.BitsAndBytesConfig(load_in_8bit=True)
        import torch  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

        return module.BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=weights,
                                         bnb_4bit_compute_dtype=torch.bfloat16)
    if backend == "torchao":
        import torchao.quantization  # noqa: PLC0415 - optional extra (quant): loaded only when torchao quantizes

        return module.TorchAoConfig(getattr(torchao.quantization, TORCHAO_CONFIGS[weights])())
    if library == "diffusers":
        return module.QuantoConfig(weights_dtype=weights)
    return module.QuantoConfig(weights=weights)


def _gguf_transformer(setting: Mapping[str, Any], slots: Mapping[str, Any], source: Path | str,
                      torch_dtype: Any) -> Any:
    import diffusers  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

    library, class_name = slots.get("transformer", ("diffusers", None))
    model_class = getattr(diffusers, class_name)
    file = setting["file"]
    local = Path(file).expanduser()
    return model_class.from_single_file(
        str(local) if local.is_file() else file, config=str(source), subfolder="transformer", torch_dtype=torch_dtype,
        quantization_config=diffusers.GGUFQuantizationConfig(compute_dtype=torch_dtype))


# ----- measuring ------------------------------------------------------------------------------------------------------
def _storage_bytes(tensor: Any) -> int:
    """Bytes a tensor really holds: a quantized tensor subclass (torchao, quanto) by its inner tensors."""
    import torch  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

    if type(tensor) not in (torch.Tensor, torch.nn.Parameter) and hasattr(tensor, "__tensor_flatten__"):
        names, _ = tensor.__tensor_flatten__()
        return sum(_storage_bytes(getattr(tensor, name)) for name in names)
    return tensor.numel() * tensor.element_size()


def _logical_numel(tensor: Any) -> int:
    """Elements a tensor stands for: a GGUF parameter's are packed into bytes of its quantized blocks."""
    quant_type = getattr(tensor, "quant_type", None)
    if quant_type is not None:
        from gguf import GGML_QUANT_SIZES  # noqa: PLC0415 - optional extra (quant): loaded only for GGUF files

        block_size, type_size = GGML_QUANT_SIZES[quant_type]
        return tensor.numel() // type_size * block_size
    return tensor.numel()


def measure(pipe: Any, builder: Mapping[str, Any], dtype: str) -> dict[str, Any] | None:
    """What run.json records of a quantized builder: backend, weights, components, the compute dtype and the bytes
    of the quantized components' weights before (their elements at the builder's dtype) and after."""
    import torch  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

    setting = active(builder)
    if setting is None:
        return None
    slots = dict(getattr(pipe, "components", {}))
    names = ["transformer"] if setting["backend"] == "gguf" else (
        setting.get("components") or denoisers({n: ["diffusers", type(m).__name__] for n, m in slots.items()
                                                 if m is not None}))
    element = torch.empty((), dtype=getattr(torch, dtype)).element_size()
    before = after = 0
    for name in names:  # parameters only: quantizers add buffers (activation scales) the original never had
        weights = list(slots[name].parameters())
        before += sum(_logical_numel(t) for t in weights) * element
        after += sum(_storage_bytes(t) for t in weights)
    return {"backend": setting["backend"], "weights": setting.get("weights"), "components": list(names),
            "dtype": dtype, "bytes_before": before, "bytes_after": after, "file": setting.get("file")}
