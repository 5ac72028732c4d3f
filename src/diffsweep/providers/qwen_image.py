"""Qwen-Image (Qwen): text-to-image, image-to-image and instruction editing of one image or several.

| pipeline | inputs | generation params (besides prompt, seed) | defaults |
| --- | --- | --- | --- |
| QwenImagePipeline | - | negative_prompt, true_cfg_scale, guidance_scale, num_inference_steps, height, width, max_sequence_length | 1024x1024, 20 steps, true_cfg 1.0 |
| QwenImageImg2ImgPipeline | image | as QwenImagePipeline + strength | as QwenImagePipeline + strength 0.6 |
| QwenImageEditPipeline | image | as QwenImagePipeline | as QwenImagePipeline but true_cfg 4.0 |
| QwenImageEditPlusPipeline | image: one file or a list (Qwen-Image-Edit-2509/2511) | as QwenImagePipeline | as QwenImageEditPipeline |

Defaults are those of Griptape Nodes' Diffusion Pipeline nodes where it has one, else diffusers'; the model-card values
(50 steps, true_cfg 4.0 with negative_prompt " ") live in the conf/provider presets.

Load notes: plain `from_pretrained` (a 20B transformer and a Qwen2.5-VL-7B text encoder; bf16 needs ~60 GB, so large
runs want an offload preset). The Edit pipelines also load the Qwen2-VL `processor`, which feeds the input images to
the text encoder's vision tower; transformers cannot build that processor without torchvision, so they fail to load,
with a message saying so, where torchvision is not installed. For the same reason there is no tiny Edit stand-in:
transformers refuses to construct a Qwen2VLProcessor at all without torchvision (its video processor needs it), and
the PyPI torchvision wheels need a CUDA build of torch, which diffsweep's CPU test setup does not install. The list of
input images Edit Plus takes is tested end to end on Flux.2's reference images, which share its code path.

Rules (checked at plan time, before anything loads):
- height and width are multiples of 16 (VAE factor 8 x 2x2 latent packing); diffusers would silently round down.
  They default to 1024x1024 (the reference's default for every image pipeline) so that every record names its size;
  for Edit pick them at the input's aspect ratio (diffusers resizes the input itself to about 1 MP at its own ratio).
- max_sequence_length <= 1024.

Call notes: CFG is "true CFG": negative_prompt and true_cfg_scale > 1 take effect only together (pass negative_prompt
" " for plain CFG). guidance_scale matters only for guidance-distilled checkpoints; Qwen-Image itself ignores it.
Edit gets its input image once per prompt of a batched call: diffusers 0.42.1 hands `image` to the Qwen2-VL processor
as given, and transformers rejects a batch of prompts with a single image. Edit Plus numbers its input images in the
prompt ("Picture 1: ... Picture 2: ...") and hands them to the processor once for the whole call, so it takes one prompt
per call; the model card finds 1 to 3 input images work best, and more are not refused.

Output: image (`.images`, np (B,H,W,3) in [0,1]); step previews use the "qwen_image" latent space. Batching: a list
of prompts with one CPU generator per item (`num_images_per_prompt`=1); items that differ in any other parameter run
in separate calls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from diffsweep.conditioning import ControlNetSupport, TinyPart
from diffsweep.errors import ModelUnavailableError
from diffsweep.providers.base import PipelineSpec, Provider, TinyModel, pipeline_unpacker
from diffsweep.tiny import qwen_image as tiny

SIZE_MULTIPLE = 16
MAX_SEQUENCE_LENGTH = 1024

_TEXT = frozenset({"negative_prompt", "true_cfg_scale", "guidance_scale", "num_inference_steps", "height", "width",
                   "max_sequence_length"})
_DEFAULTS = {"height": 1024, "width": 1024, "num_inference_steps": 20, "true_cfg_scale": 1.0}
# the Union ControlNet (InstantX) infers its control type from the image: no control_mode
_CONTROL = frozenset({"control_image", "controlnet_conditioning_scale", "control_guidance_start", "control_guidance_end",
                      "control_preprocess", "control_low_threshold", "control_high_threshold"})
_NET = ControlNetSupport("QwenImageControlNetModel", "QwenImageMultiControlNetModel", "transformer",
                         ("attention_head_dim", "num_attention_heads", "joint_attention_dim"))


def _spec(name: str, params: frozenset[str], defaults: Mapping[str, Any], **options: Any) -> PipelineSpec:
    return PipelineSpec(name, "image", params, defaults, size_multiple=SIZE_MULTIPLE, max_batch=2,
                        latent_space="qwen_image", max_sequence_length=MAX_SEQUENCE_LENGTH, **options)


class QwenImage(Provider):
    name = "qwen_image"
    pipelines = {spec.name: spec for spec in (
        _spec("QwenImagePipeline", _TEXT, _DEFAULTS),
        _spec("QwenImageControlNetPipeline", _TEXT | _CONTROL, {**_DEFAULTS, "controlnet_conditioning_scale": 1.0,
                                                                  "control_guidance_start": 0.0,
                                                                  "control_guidance_end": 1.0}, controlnet=_NET),
        _spec("QwenImageImg2ImgPipeline", _TEXT | {"image", "strength"}, {**_DEFAULTS, "strength": 0.6}),
        _spec("QwenImageEditPipeline", _TEXT | {"image"}, {**_DEFAULTS, "true_cfg_scale": 4.0}),
        _spec("QwenImageEditPlusPipeline", _TEXT | {"image"}, {**_DEFAULTS, "true_cfg_scale": 4.0},
              batchable=False, max_images=None),
    )}
    tiny_models = {"qwen_image": TinyModel("QwenImagePipeline", tiny.qwen_image,
                                           {"height": 32, "width": 32, "max_sequence_length": 64,
                                            "true_cfg_scale": 1.0}, (32, 32, 3))}
    tiny_parts = {"qwen_image_controlnet": TinyPart("controlnet", "qwen_image", tiny.qwen_image_controlnet)}

    def call_kwargs(self, spec: PipelineSpec, items: Sequence[Mapping[str, Any]],
                    generators: list[Any]) -> dict[str, Any]:
        kwargs = super().call_kwargs(spec, items, generators)
        if spec.name == "QwenImageEditPipeline":
            # diffusers hands `image` to the Qwen2-VL processor as given, and transformers wants one image per prompt
            kwargs["image"] = [kwargs["image"]] * len(items)
        return kwargs

    def before_load(self, spec: PipelineSpec) -> None:
        from transformers.utils import is_torchvision_available  # noqa: PLC0415 - start-up time: torch and diffusers load only with a pipeline

        if spec.name.startswith("QwenImageEdit") and not is_torchvision_available():
            raise ModelUnavailableError(f"{spec.name} needs torchvision: transformers cannot build its Qwen2-VL "
                                        f"processor without it; install the torchvision build matching your torch")

    def preview_unpacker(self, pipe: Any, spec: PipelineSpec, params: Mapping[str, Any]) -> Any:
        """Latents are held as (B, patches, 4C) sequences of 2x2 patches while denoising."""
        return pipeline_unpacker(pipe, params)


PROVIDER = QwenImage()
