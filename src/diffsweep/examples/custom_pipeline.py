"""An example user pipeline for the `custom` provider: a minimal text-to-image loop, readable end to end.

diffsweep drives it like any diffusers pipeline. The keyword names of `__call__` decide what a sweep may set
(prompt, negative_prompt, height, width, num_inference_steps, guidance_scale), and `num_images_per_prompt` plus a
`generator` that may be a list make it batchable with one seed per image. The file imports only torch, diffusers
and transformers, so the same file also works copied into a saved model folder as `pipeline.py` (loaded with
`builder.trust_remote_code: true`).
"""

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, UNet2DConditionModel
from diffusers.pipelines.pipeline_utils import ImagePipelineOutput
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer


class TinyCustomPipeline(DiffusionPipeline):
    """Text to image with Stable Diffusion 1.x components: CLIP text encoder, UNet + scheduler loop with
    classifier-free guidance, VAE decode."""

    model_cpu_offload_seq = "text_encoder->unet->vae"

    def __init__(
        self,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModel,
        tokenizer: CLIPTokenizer,
        unet: UNet2DConditionModel,
        scheduler: SchedulerMixin,
        safety_checker: None = None,
        feature_extractor: None = None,
        image_encoder: None = None,
        requires_safety_checker: bool = False,
    ) -> None:
        """The last four arguments are Stable Diffusion extras, accepted so SD component sets fit, and unused."""
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler)
        self.vae_scale_factor = 2 ** (len(vae.config.block_out_channels) - 1)

    def encode(self, texts: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        return self.text_encoder(tokens.input_ids.to(self._execution_device))[0]

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        height: int = 64,
        width: int = 64,
        num_inference_steps: int = 20,
        guidance_scale: float = 7.5,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
    ) -> ImagePipelineOutput:
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        negatives = negative_prompt or ""
        negatives = [negatives] * len(prompts) if isinstance(negatives, str) else list(negatives)
        # One UNet pass per step over [unconditional, conditional]; each prompt's rows repeated per image.
        embeds = self.encode(negatives + prompts).repeat_interleave(num_images_per_prompt, dim=0)
        shape = (len(prompts) * num_images_per_prompt, self.unet.config.in_channels,
                 height // self.vae_scale_factor, width // self.vae_scale_factor)
        # A generator list gives each image its own noise, so an image does not depend on its batch.
        latents = randn_tensor(shape, generator=generator, device=self._execution_device, dtype=embeds.dtype)
        self.scheduler.set_timesteps(num_inference_steps, device=self._execution_device)
        latents = latents * self.scheduler.init_noise_sigma
        for t in self.progress_bar(self.scheduler.timesteps):
            model_input = self.scheduler.scale_model_input(torch.cat([latents] * 2), t)
            uncond, cond = self.unet(model_input, t, encoder_hidden_states=embeds).sample.chunk(2)
            latents = self.scheduler.step(uncond + guidance_scale * (cond - uncond), t, latents).prev_sample
        image = self.vae.decode(latents / self.vae.config.scaling_factor).sample
        array: np.ndarray = (image / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()
        return ImagePipelineOutput(images=array if output_type == "np" else self.numpy_to_pil(array))
