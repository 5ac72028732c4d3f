"""A provider shipped by another package: what a lab installs to sweep its own family without changing diffsweep.

It is found through its distribution's entry point (`[diffsweep.providers] lab_sd = lab_diffusion:PROVIDER`), adds a
generation parameter of its own (`eta`, DDIM's noise weight) and declares a tiny stand-in built from diffsweep's own
tiny Stable Diffusion recipe.
"""

from __future__ import annotations

from diffsweep.providers.base import PipelineSpec, Provider, TinyModel
from diffsweep.tiny import stable_diffusion as tiny


class LabStableDiffusion(Provider):
    name = "lab_sd"
    parameters = {"eta": {"type": ["number", "null"], "minimum": 0, "maximum": 1}}
    pipelines = {spec.name: spec for spec in (
        PipelineSpec("StableDiffusionPipeline", "image",
                     frozenset({"negative_prompt", "num_inference_steps", "guidance_scale", "height", "width", "eta"}),
                     {"num_inference_steps": 30, "guidance_scale": 7.5, "eta": 0.0}, latent_space="sd"),
    )}
    tiny_models = {"lab_sd": TinyModel("StableDiffusionPipeline", tiny.sd, {"height": 64, "width": 64}, (64, 64, 3))}


PROVIDER = LabStableDiffusion()
